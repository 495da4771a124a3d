"""What a reward model reads: TRL's prompt/completion turned into the text its model card feeds it.

TRL hands a reward function either strings (standard datasets) or lists of
``{"role", "content"}`` messages (conversational datasets). A :class:`Conversation`
holds one prompt/completion pair in either form; a :class:`Renderer` turns it into the
exact text the reward model was trained on, using the REWARD model's tokenizer and chat
template (which may differ from the policy's).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .errors import ConfigError, InputError
from .messages import Namer, message_text, read_turns, sample_namer  # noqa: F401 (message_text: re-exported)
from .options import RENDER_MODES

Message = dict[str, Any]

# NeMo-Aligner's SteerLM template and default system prompt (REFERENCE.md §2).
STEERLM_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions."
)


@dataclass(frozen=True)
class Conversation:
    """One prompt and one completion, as TRL passed them.

    ``prompt`` is a string (standard data) or a tuple of messages (conversational data);
    ``completion`` likewise.

    >>> c = Conversation.from_trl("2+2=", " 4")
    >>> c.messages()
    [{'role': 'user', 'content': '2+2='}, {'role': 'assistant', 'content': ' 4'}]
    """

    prompt: str | tuple[Message, ...]
    completion: str | tuple[Message, ...]

    @classmethod
    def from_trl(
        cls, prompt: str | Sequence[Message], completion: str | Sequence[Message], index: int | None = None,
        names: tuple[Namer, Namer] | None = None,
    ) -> Conversation:
        """Read one sample (``messages.py``, the reading every route shares); errors name the sample
        ``index`` and the field, or with ``names`` the places a request body gives them."""
        if isinstance(prompt, str) and isinstance(completion, str) and (prompt or completion):
            return cls(prompt, completion)  # text with text: nothing to read or name (no names built per sample)
        where = "sample" if index is None else f"sample {index}"
        prompt_name, completion_name = names or (sample_namer(f"{where}: prompt"), sample_namer(f"{where}: completion"))
        conversation = cls(read_turns(prompt, prompt_name), read_turns(completion, completion_name, completion=True))
        if not conversation.has_text():  # "" + "" and [{user: ""}] + [{assistant: ""}] alike: one rule everywhere
            same = prompt_name(()) == completion_name(())  # one flat message list (a chat body)
            where = f"{prompt_name(())} holds" if same else f"{prompt_name(())} and {completion_name(())} are both empty:"
            raise InputError(f"{where}{' no text:' if same else ''} there is nothing to score")
        return conversation

    def has_text(self) -> bool:
        """Any text at all in the prompt or the completion (a message's content, or a tool call)."""
        for part in (self.prompt, self.completion):
            if isinstance(part, str) and part:
                return True
            if not isinstance(part, str) and any(m.get("content") or m.get("tool_calls") for m in part):
                return True
        return False

    @property
    def has_messages(self) -> bool:
        """Either side is a list of messages (a text prompt with a messages completion counts)."""
        return not (isinstance(self.prompt, str) and isinstance(self.completion, str))

    @property
    def is_chat(self) -> bool:
        return not isinstance(self.prompt, str)

    def prompt_messages(self) -> list[Message]:
        """The prompt as messages; a plain-text prompt becomes one user turn."""
        if isinstance(self.prompt, str):
            return [{"role": "user", "content": self.prompt}]
        return [dict(m) for m in self.prompt]

    def completion_messages(self) -> list[Message]:
        if isinstance(self.completion, str):
            return [{"role": "assistant", "content": self.completion}]
        return [dict(m) for m in self.completion]

    def messages(self) -> list[Message]:
        return self.prompt_messages() + self.completion_messages()

    def prompt_text(self) -> str:
        """The prompt as one string (the last user turn for chat data)."""
        if isinstance(self.prompt, str):
            return self.prompt
        users = [m["content"] for m in self.prompt if m.get("role") == "user"]
        return users[-1] if users else ""

    def completion_text(self) -> str:
        if isinstance(self.completion, str):
            return self.completion
        return "".join(str(m.get("content") or "") for m in self.completion)

    def prompt_key(self) -> str:
        """A stable identity of the prompt: responses with equal keys form one group."""
        blob = self.prompt if isinstance(self.prompt, str) else json.dumps(self.prompt, sort_keys=True)
        return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:16]


def parse_flattened_turns(prompt: str) -> list[Message]:
    r"""A HelpSteer2 prompt, multi-turn ones flattened with ``<extra_id_1>``, back into messages.

    HelpSteer2 stores ``{user1}\n<extra_id_1>Assistant\n{asst1}\n<extra_id_1>User\n{user2}``
    (REFERENCE.md §4); a single-turn prompt is just the user's text.

    >>> parse_flattened_turns("Hi\n<extra_id_1>Assistant\nHello!\n<extra_id_1>User\nA joke?")
    [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello!'}, {'role': 'user', 'content': 'A joke?'}]
    >>> parse_flattened_turns("What is 2+2?")
    [{'role': 'user', 'content': 'What is 2+2?'}]
    """
    first, *turns = prompt.split("\n<extra_id_1>")
    messages = [{"role": "user", "content": first}]
    for turn in turns:
        speaker, _, text = turn.partition("\n")
        role = {"User": "user", "Assistant": "assistant"}.get(speaker.strip())
        if role is None:
            # Not a turn marker we know: keep the text rather than guess a speaker.
            messages[-1]["content"] += "\n<extra_id_1>" + turn
            continue
        messages.append({"role": role, "content": text})
    return messages


def conversations_from_trl(prompts: Sequence, completions: Sequence) -> list[Conversation]:
    """Pair TRL's ``prompts`` and ``completions`` (equal lengths) into conversations."""
    for name, value in (("prompts", prompts), ("completions", completions)):
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
            kind = "a single string" if isinstance(value, str) else f"a {type(value).__name__}"
            raise InputError(
                f"{name} is {kind}, where a list with one item per sample is expected (a string would be scored one "
                f"character at a time); pass {name}=[...], e.g. prompts=[prompt], completions=[completion]"
            )
    if len(prompts) != len(completions):
        raise InputError(f"got {len(prompts)} prompts but {len(completions)} completions; TRL passes one prompt per completion")
    return [Conversation.from_trl(p, c, index=i) for i, (p, c) in enumerate(zip(prompts, completions))]


def text_or_messages(value: Any, where: str, completion: bool = False) -> str | tuple[Message, ...]:
    """A string as it is, or a list of messages read by :func:`rewardbridge.messages.read_turns`."""
    return read_turns(value, sample_namer(where), completion=completion)


@dataclass
class Renderer:
    """Turns a conversation into the text a reward model reads.

    Modes:
      - ``"chat"``: the reward tokenizer's chat template over prompt + completion
        (``add_generation_prompt=False``), as Skywork and Nemotron-70B-Reward-HF cards do.
      - ``"text"``: plain ``prompt + completion`` (standard data only), with the tokenizer's
        special tokens added (``[CLS] ... [SEP]`` for a BERT classifier).
      - ``"judge"``: ``judge_prompt`` filled with ``{prompt}`` and ``{response}`` as one user
        turn, then the generation prompt, so the next token is the judge's verdict.
      - ``"steerlm"``: NeMo-Aligner's SteerLM template, ending in ``<extra_id_2>``.
      - ``"auto"``: ``"chat"`` when the tokenizer has a chat template, else ``"text"``.
    """

    tokenizer: Any = None
    mode: str = "auto"
    chat_template: str | None = None
    judge_prompt: str | None = None
    system_prompt: str | None = None  # chat/judge: a system turn when the data has none; steerlm: its System text
    encoder: bool = False  # a BERT-style encoder: it reads its [CLS] ... [SEP] whatever renders the text

    def __post_init__(self):
        if self.mode not in RENDER_MODES:
            raise ConfigError(f"render={self.mode!r} is not one of {RENDER_MODES}")
        if self.mode == "judge" and not self.judge_prompt:
            raise ConfigError("render='judge' needs judge_prompt, a string with {prompt} and {response}")
        if self.judge_prompt and ("{prompt}" not in self.judge_prompt or "{response}" not in self.judge_prompt):
            raise ConfigError("judge_prompt must contain both {prompt} and {response}")
        if self.mode in ("chat", "judge") and not self.has_chat_template:
            raise ConfigError(
                f"render={self.mode!r} needs a chat template, but the reward tokenizer has none; "
                "pass chat_template='<jinja>' or tokenizer='<dir with one>' to load_reward"
            )

    @property
    def has_chat_template(self) -> bool:
        return bool(self.chat_template or getattr(self.tokenizer, "chat_template", None))

    def resolved_mode(self, conversation: Conversation) -> str:
        if self.mode != "auto":
            return self.mode
        if self.judge_prompt:
            return "judge"
        return "chat" if self.has_chat_template else "text"

    def add_special_tokens(self, conversation: Conversation) -> bool:
        """Plain text gets the tokenizer's special tokens. A chat template carries a decoder's own (TRL
        tokenizes its render with ``add_special_tokens=False``); an encoder's template seldom holds
        [CLS]/[SEP], which its pooler reads, so they are added unless the template writes them itself."""
        if self.resolved_mode(conversation) == "text":
            return True
        return self.encoder and not self._template_writes_special_tokens()

    def _template_writes_special_tokens(self) -> bool:
        """Does the rendered example already open with the tokenizer's first special token? (Asked once.)"""
        if "_writes_specials" not in self.__dict__:
            specials = self.tokenizer("", add_special_tokens=True)["input_ids"] if self.tokenizer is not None else []
            example = Conversation(({"role": "user", "content": "What is 2+2?"},), ({"role": "assistant", "content": "4"},))
            ids = self.tokenizer(self.render(example), add_special_tokens=False)["input_ids"] if specials else []
            self.__dict__["_writes_specials"] = not specials or (bool(ids) and ids[0] == specials[0])
        return self.__dict__["_writes_specials"]

    def render(self, conversation: Conversation) -> str:
        mode = self.resolved_mode(conversation)
        if mode == "text":
            if conversation.is_chat and self.mode == "text":
                raise InputError(
                    "render='text' reads standard (string) data only, and this sample is conversational (messages); "
                    "use render='chat' (or 'auto') to render it with the reward tokenizer's chat template"
                )
            if conversation.is_chat:
                raise InputError(
                    "conversational data needs a chat template, but the reward tokenizer has none; "
                    "pass chat_template='<jinja>' (or tokenizer='<dir with one>') to load_reward, "
                    "or render='steerlm' for a SteerLM model"
                )
            return conversation.prompt + conversation.completion_text()
        if mode == "steerlm":
            return render_steerlm(conversation, self.system_prompt or STEERLM_SYSTEM)
        if not self.has_chat_template:
            raise ConfigError(
                f"render={mode!r} needs a chat template, but the reward tokenizer has none; "
                "pass chat_template='<jinja>' or tokenizer='<dir with one>' to load_reward"
            )
        if mode == "judge":
            question = self.judge_prompt.format(prompt=conversation.prompt_text(), response=conversation.completion_text())
            return self._apply_template(self._with_system([{"role": "user", "content": question}]), add_generation_prompt=True)
        return self._apply_template(self._with_system(conversation.messages()), add_generation_prompt=False)

    def with_system(self, conversation: Conversation) -> Conversation:
        """``conversation`` with ``system_prompt`` as its first turn when it has no system turn of its own
        (for a server that renders messages itself)."""
        if not self.system_prompt or conversation.is_chat and any(m.get("role") == "system" for m in conversation.prompt):
            return conversation
        return Conversation(tuple(self._with_system(conversation.prompt_messages())), conversation.completion)

    def _with_system(self, messages: list[Message]) -> list[Message]:
        if self.system_prompt and not any(m.get("role") == "system" for m in messages):
            return [{"role": "system", "content": self.system_prompt}, *messages]
        return messages

    def _apply_template(self, messages: list[Message], add_generation_prompt: bool) -> str:
        kwargs = {"chat_template": self.chat_template} if self.chat_template else {}
        try:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
            )
        except Exception as error:  # noqa: BLE001: a template refusing the data (jinja2's TemplateError) is the data's fault
            if type(error).__module__.split(".")[0] != "jinja2":
                raise
            raise InputError(f"the reward model's chat template refuses this conversation ({type(error).__name__}: {error}); "
                             "fix the conversation or pass chat_template=") from error  # jinja2's own error kept as the cause


def render_steerlm(conversation: Conversation, system_prompt: str = STEERLM_SYSTEM) -> str:
    """NeMo-Aligner's SteerLM format; the reward head reads the state at ``<extra_id_2>``.

    >>> render_steerlm(Conversation("Hi", "Hello!"), "S")
    '<extra_id_0>System\\nS\\n<extra_id_1>User\\nHi\\n<extra_id_1>Assistant\\nHello!\\n<extra_id_2>'
    """
    messages = conversation.messages()
    # A system turn in the data replaces the default system prompt.
    system = next((m["content"] for m in messages if m.get("role") == "system"), system_prompt)
    text = f"<extra_id_0>System\n{system}\n"
    for message in messages:
        if message.get("role") == "user":
            text += f"<extra_id_1>User\n{message['content']}\n"
        elif message.get("role") == "assistant":
            text += f"<extra_id_1>Assistant\n{message['content']}\n"
    return text + "<extra_id_2>"
