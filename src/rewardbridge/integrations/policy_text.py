"""The policy's own rendering of a prompt, turned back into what a reward model can re-render.

PPO, OpenRLHF and verl hand a reward the POLICY's tokens or text: the prompt already wrapped
in the policy's chat template. rewardbridge scores with the REWARD model's template, so the
prompt's messages are recovered by rendering probe conversations with the policy's template
and matching the text around the probes. Single-turn prompts (a user turn, optionally after
a system turn) come back as messages; anything else stays one plain-text prompt.
"""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]

# Stand-ins for message contents in the probe renderings; never in real text.
_USER, _SYSTEM = "\x00rewardbridge-user\x00", "\x00rewardbridge-system\x00"


class PolicyTemplate:
    """The policy tokenizer's chat template, read backwards.

    >>> from rewardbridge.testing import build_tokenizer
    >>> policy = PolicyTemplate(build_tokenizer())
    >>> policy.prompt_from_text("<s><|user|>Hi there</s><|assistant|>")
    [{'role': 'user', 'content': 'Hi there'}]
    >>> policy.prompt_from_text("no template here")
    'no template here'
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))
        self._probes: list[tuple[list[Message], str]] = []
        if self.has_chat_template:
            for probe in ([{"role": "user", "content": _USER}],
                          [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": _USER}]):
                try:
                    self._probes.append((probe, self._render(probe, add_generation_prompt=True)))
                except Exception:  # a template that refuses a system turn, say
                    continue

    def _render(self, messages: list[Message], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def prompt_from_text(self, text: str) -> str | list[Message]:
        """Messages when ``text`` is the policy template around one user turn (and a system turn), else ``text``."""
        for probe, rendered in self._probes:
            contents = _match(rendered, [m["content"] for m in probe], text)
            if contents is not None:
                return [{"role": m["role"], "content": c} for m, c in zip(probe, contents)]
        return text

    def generation_prompt(self) -> str:
        """The text that ends every prompt rendered with ``add_generation_prompt=True``, e.g. ``<|assistant|>``."""
        if not self.has_chat_template:
            return ""
        messages = [{"role": "user", "content": "Hello"}]
        with_prompt, without = self._render(messages, True), self._render(messages, False)
        common = 0
        while common < min(len(with_prompt), len(without)) and with_prompt[common] == without[common]:
            common += 1
        return with_prompt[common:]


def _match(rendered: str, placeholders: list[str], text: str) -> list[str] | None:
    """The strings that stand where ``placeholders`` stand in ``rendered``, if ``text`` has its shape."""
    pieces, rest = [], rendered
    for placeholder in placeholders:
        before, found, rest = rest.partition(placeholder)
        if not found:
            return None
        pieces.append(before)
    pieces.append(rest)  # len(placeholders) + 1 fixed pieces around the contents
    if not text.startswith(pieces[0]) or not text.endswith(pieces[-1]) or len(text) < len(pieces[0]) + len(pieces[-1]):
        return None
    middle = text[len(pieces[0]): len(text) - len(pieces[-1])]
    contents = []
    for separator in pieces[1:-1]:
        content, found, middle = middle.partition(separator)
        if not found:
            return None
        contents.append(content)
    contents.append(middle)
    return contents
