"""Resolve, then load: what a reward source is, decided once, before any weights load.

:func:`resolve` turns what the user passed (a source and ``load_reward`` options) into a
:class:`Resolved`. For a local model that is its kind, model class, readout, renderer,
token ids and limits, read from ``config.json`` and the tokenizer; for a URL its endpoints,
protocol and (for protocols that carry rendered text) renderer. For both: the preset that
filled the model card's defaults, and why each choice was made. Every check that needs no
weights happens here, so a typo costs seconds, not a 70B load; loading
(``scorers.build_scorer``) takes a ``Resolved`` and only loads.

``load_reward``, ``rewardbridge score | eval | serve | train`` and ``rewardbridge inspect``
(which prints :meth:`Resolved.format`) all go through this one step.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import ConfigError, warn
from .options import RewardOptions
from .checkpoint import (
    check_kind_fits, check_output_count, check_tokenizer_files, config_dict, is_encoder, max_positions, model_class_for,
    model_max_length, reads_pairs, resolve_device,
    resolve_dtype, resolve_kind, token_ids_for,
)
from .presets import Preset, apply_preset, find_preset, log_unknown_model
from .sources import URL_PATTERN, base_url, check_source_text, is_remote, resolve_local_source  # noqa: F401 (re-exported)

EXAMPLE = ("What is 2+2?", "4")  # the conversation `inspect` renders to show the model's input


@dataclass
class Resolved:
    """A reward source, decided: what loading will build, and why.

    Attributes:
        source: an absolute local path, a hub id, or comma-separated endpoint URLs.
        options: the user's options with the preset's defaults filled in.
        remote: True for an endpoint.
        preset: the known family the model's name matched, or None; ``filled``: the options
            it filled (none when the user's options left it nothing, e.g. another kind).
        why: decision -> reason, e.g. ``{"kind": "architecture LlamaForCausalLM"}``.
        kind, config, model_class, tokenizer, token_ids, max_length, device, dtype,
            zero3_config: a local model's (None for an endpoint).
        renderer: what turns a conversation into the text the model reads (a local model,
            or a protocol that carries rendered text; None when the server renders).
        urls: an endpoint's base URLs.
    """

    source: str
    options: RewardOptions
    remote: bool
    preset: Preset | None = None
    filled: tuple[str, ...] = ()
    why: dict[str, str] = field(default_factory=dict)
    kind: str | None = None
    config: dict = field(default_factory=dict, repr=False)
    model_class: Any = None
    tokenizer: Any = field(default=None, repr=False)
    renderer: Any = field(default=None, repr=False)
    token_ids: tuple[int, ...] | None = None
    max_length: int | None = None
    device: Any = None
    dtype: Any = None
    zero3_config: dict | None = field(default=None, repr=False)
    urls: tuple[str, ...] = ()

    @property
    def needs_groups(self) -> bool:
        """A judge that compares a prompt's responses with each other (genrm): it needs whole groups."""
        if not self.remote:
            return False
        from .protocols import protocol_module

        return getattr(protocol_module(self.options.protocol).CLIENT, "scorer", None) == "pairwise"

    @property
    def input(self) -> str:
        """What the model reads, in words."""
        from .conversation import Conversation
        if self.remote and self.renderer is None:
            return "conversations as messages; the server renders them with its model's template"
        if self.kind == "pair_regression":
            return "(question, answer) pair: the prompt's last user turn and the completion"
        renderer = self.renderer
        if self.remote and renderer.tokenizer is None and renderer.mode == "auto" and not renderer.has_chat_template:
            if self.options.protocol == "vllm":
                return ("messages, one conversation per request (text rows as one user turn + the answer): the server "
                        "renders them with its model's template; render='text' sends prompt + completion as raw input instead")
            return ("text: prompt + completion as plain text (standard data); chat data needs tokenizer= "
                    "(the reward model's tokenizer) for its chat template")
        if renderer.mode != "auto":
            given = "as given" if self.options.render != "auto" else "the protocol's default"
            return f"render={renderer.mode!r} ({given})"
        if renderer.judge_prompt:
            return "judge: judge_prompt as one user turn"
        if renderer.has_chat_template:
            if not self.remote and renderer.add_special_tokens(Conversation("?", "!")):
                shown = self.tokenizer.decode(self.tokenizer("", add_special_tokens=True)["input_ids"])
                return (f"chat: the reward tokenizer's chat template, with the tokenizer's special tokens added ({shown!r}): "
                        "an encoder reads them and the template does not write them")
            return "chat: the reward tokenizer's chat template"
        return "text: prompt + completion with the tokenizer's special tokens (the tokenizer has no chat template)"

    @property
    def readout(self) -> str:
        """What is read from the model's output, in words."""
        opts = self.options
        if self.remote:
            return "the endpoint's answer (see protocol)"
        if self.kind == "causal_logit":
            tokens = [f"{i} ({self.tokenizer.convert_ids_to_tokens(i)!r})" for i in self.token_ids]
            if len(tokens) == 1:
                return f"the next-token logit of token {tokens[0]} after the last token"
            return f"logit of token {tokens[0]} - logit of token {tokens[1]} at the next position (a yes/no judge)"
        if self.kind == "pair_regression":
            return f"model(**tokenizer(question, answer), alpha={opts.alpha:g}) (a tensor, or .logits[:, 0])"
        if self.kind == "custom":
            return "output.score; output.rewards as named attributes"
        if opts.attribute_weights is not None:
            return "sum_k attribute_weights[k] * logits[:, k]"
        if opts.attributes:
            return "logits[:, k] as named attributes (no single reward: pass attribute_weights to train on it)"
        return "logits[:, 0]"

    def describe(self) -> list[tuple[str, str]]:
        """(label, text) rows: what ``rewardbridge inspect`` prints."""
        opts = self.options
        if self.preset is None:
            preset = "none matches (nothing filled in)"
        elif not self.filled:
            preset = f"{self.preset.match!r} matches, but the options given leave it nothing to fill"
        else:
            about = f" ({self.preset.why})" if not self.remote else f" (for protocol {opts.protocol!r}, matched by model_name)"
            preset = f"{self.preset.match!r}: filled {', '.join(self.filled)}{about}"
        source = self.source if not self.remote else ", ".join(self.urls) + (f" ({self.why['urls']})" if "urls" in self.why else "")
        rows = [("source", source), ("preset", preset)]
        if self.remote:
            rows += self._describe_endpoint()
        else:
            rows += [
                ("kind", f"{self.kind} ({self.why['kind']})"),
                ("model class", self.model_class.__name__),
                ("readout", self.readout),
            ]
        labels = {label for label, _ in rows}  # a judge's codec says what it sends itself
        rows += [(label, text()) for label, text in (("input", lambda: self.input), ("example", self.example)) if label not in labels]
        if opts.attributes:
            weights = opts.weight_vector() if opts.attribute_weights is not None else None
            named = [f"{a}={w:g}" for a, w in zip(opts.attributes, weights)] if weights else list(opts.attributes)
            rows.append(("attributes", ", ".join(named) + ("" if weights else " (no weights)")))
        if not self.remote:
            from .scorers.tokens import default_max_tokens_per_batch

            budget = opts.max_tokens_per_batch or f"{default_max_tokens_per_batch(self.device)} (the default on {self.device})"
            rows.append(("limits", f"max_length {self.max_length} tokens ({self.why['max_length']}), truncation "
                                   f"{opts.truncation!r}, max_tokens_per_batch {budget}"))
            rows.append(("device", f"{self.device}, {str(self.dtype).removeprefix('torch.')} ({self.why['device']})"))
            rows.append(("zero3", "off" if self.zero3_config is None else _describe_zero3(self.zero3_config)))
        rows.append(("normalize", opts.normalize if opts.normalize != "reference" else f"reference ({opts.reference_column!r})"))
        return rows

    def _describe_endpoint(self) -> list[tuple[str, str]]:
        from .protocols import protocol_module
        from .scorers.transport import DEFAULT_KEY_ENV

        opts = self.options
        codec = protocol_module(opts.protocol).CLIENT
        key_env = opts.api_key_env or DEFAULT_KEY_ENV.get(opts.protocol)
        key = "no key sent" if not key_env else f"${key_env} ({'set' if os.environ.get(key_env) else 'not set: no key sent'})"
        batch = f"request_batch_size {opts.request_batch_size}, " if codec.batches else ""  # else one per request
        return [
            ("protocol", f"{opts.protocol}: {codec.summary}"),
            ("model_name", opts.model_name),
            ("key", key),
            ("transport", f"timeout {opts.timeout:g} s, retry_budget {opts.retry_budget:g} s, max_retries "
                          f"{'none (the budget decides)' if opts.max_retries is None else opts.max_retries}, retry_wait {opts.retry_wait:g} s, "
                          f"max_concurrency {opts.max_concurrency}, {batch}on_error {opts.on_error!r}"),
        ] + (codec.describe(opts) if hasattr(codec, "describe") else [])  # a judge's own rows (pairs, sampling, ..., input, example)

    def example(self) -> str:
        """The example conversation as the model reads it: for a local model the text decoded from
        the very token ids the scorer would feed it (special tokens included); for an endpoint what
        the client sends."""
        from .conversation import Conversation

        chat = Conversation([{"role": "user", "content": EXAMPLE[0]}], ({"role": "assistant", "content": EXAMPLE[1]},))
        sends_messages = (self.remote and self.options.protocol == "vllm" and self.renderer is not None
                          and self.renderer.mode == "auto" and not self.renderer.has_chat_template)  # VllmClient._as_messages
        if self.renderer is None or sends_messages:
            return repr(chat.messages())
        conversation = chat if self.renderer.has_chat_template or self.renderer.resolved_mode(chat) == "steerlm" else Conversation(*EXAMPLE)
        if self.remote:
            text = self.renderer.render(conversation)
        else:
            from .scorers.tokens import encode, encode_pairs

            if self.kind == "pair_regression":
                ids, _ = encode_pairs([EXAMPLE[0]], [EXAMPLE[1]], self.tokenizer, max_length=self.max_length)
            else:
                rendered = self.renderer.render(conversation)
                add_special = self.renderer.add_special_tokens(conversation)
                ids, _ = encode([rendered], self.tokenizer, add_special_tokens=add_special, max_length=self.max_length)
            text = self.tokenizer.decode(ids[0], skip_special_tokens=False)
        shown = repr(text if len(text) <= 400 else text[:397] + "...")
        if not conversation.is_chat and not self.remote and self.kind != "pair_regression":
            shown += "  (standard data; chat data is refused: no chat template)"
        return shown

    def format(self) -> str:
        rows = self.describe()
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label:<{width}}  {text}" for label, text in rows)


def _describe_zero3(config: dict) -> str:
    zero = config.get("zero_optimization", {})
    offload = (zero.get("offload_param") or {}).get("device", "none")
    return f"stage {zero.get('stage')}, parameters offloaded to {offload}"


def resolve(source: Any, **options: Any) -> Resolved:
    """Decide what ``load_reward(source, **options)`` would build, without loading weights.

    Raises ConfigError (or OptionTypeError) for any mistake that needs no weights to find.
    """
    return resolve_options(source, RewardOptions.from_kwargs(**options), given=set(options))


def resolve_options(source: Any, options: RewardOptions, given: set[str] | None = None) -> Resolved:
    """:func:`resolve` for options already built. ``given``: the option names the user passed
    (None: those that differ from their defaults, as after unpickling)."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    check_source_text(source)  # 127.0.0.1:8000, htp://...: an endpoint mistyped, not a folder
    if isinstance(source, (list, tuple)) and is_remote(source):  # several endpoints: one comma-separated string
        source = ",".join(source)
    remote = is_remote(source)
    options.check_applies_to_source(remote)
    if isinstance(options.attribute_weights, Mapping):
        unweighted = [a for a in options.attributes if a not in options.attribute_weights]
        if unweighted:
            warn(
                f"attribute_weights gives no weight to {unweighted}: they count 0 in the reward (still logged). "
                "Give them an explicit 0 to silence this"
            )
    return _resolve_endpoint(source, options, given) if remote else _resolve_local(source, options, given)


def _resolve_endpoint(source: str, options: RewardOptions, given: set[str] | None) -> Resolved:
    from .option_checks import check_misapplied
    from .options import PROTOCOLS
    from .protocols import protocol_module
    from .protocols.base import remote_renderer
    from .scorers.transport import split_urls

    if options.protocol is None:
        raise ConfigError(f"{source!r} is a URL; pass protocol= one of {PROTOCOLS} to say what the endpoint speaks")
    routes = [route.path for route in protocol_module(options.protocol).ROUTES if route.method == "POST"]
    cut = [base_url(url, routes) for url in split_urls(source)]
    urls = tuple(url for url, _ in cut)  # http://host/v1 (as NIM's docs write it) -> http://host: no /v1/v1/...
    why = {"urls": f"the route {next(c for _, c in cut if c)!r} cut off: requests add it"} if any(c for _, c in cut) else {}
    if options.tokenizer:
        options = dataclasses.replace(options, tokenizer=resolve_local_source(options.tokenizer, "tokenizer"))
    preset = find_preset(options.model_name)
    options, filled = _with_preset(source, options, given, remote=True)
    codec = protocol_module(options.protocol).CLIENT
    renderer = remote_renderer(options, codec.default_render) if codec.renders_here else None
    resolved = Resolved(source=",".join(urls), options=options, remote=True, preset=preset, filled=tuple(sorted(filled)),
                        why=why, renderer=renderer, urls=urls)
    check_misapplied(resolved)
    return resolved


def _resolve_local(source: str, options: RewardOptions, given: set[str] | None) -> Resolved:
    import torch
    from transformers import AutoTokenizer

    from .conversation import Renderer
    from .option_checks import check_judge, check_misapplied
    from .checkpoint import from_pretrained_or_explain

    source = resolve_local_source(source)
    if options.tokenizer:
        options = dataclasses.replace(options, tokenizer=resolve_local_source(options.tokenizer, "tokenizer"))
    if isinstance(options.zero3, str):
        options = dataclasses.replace(options, zero3=os.path.abspath(os.path.expanduser(options.zero3)))
    preset = find_preset(source)
    options, filled = _with_preset(source, options, given)
    why: dict[str, str] = {}

    device, why["device"] = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    if device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
        warn(
            f"dtype={options.dtype!r} on CPU: most CPUs emulate half precision, often many times slower than "
            "float32; use dtype='auto' (float32 on CPU) unless you measured otherwise",
            UserWarning,
        )
    zero3_config = None
    if options.zero3:
        from .scorers.zero3 import resolve_config

        zero3_config = resolve_config(options.zero3, dtype)
    config = config_dict(source, options)
    kind, why["kind"] = resolve_kind(source, options, config)
    if "kind" in filled:
        why["kind"] = f"kind={kind!r} from the preset {preset.match!r}, matched by the model's name"
    check_kind_fits(kind, config, why["kind"])
    check_judge(kind, options)
    tokenizer_kwargs = {"trust_remote_code": options.trust_remote_code}
    if options.gguf_file and not options.tokenizer:
        tokenizer_kwargs["gguf_file"] = options.gguf_file
    else:
        check_tokenizer_files(options.tokenizer or source, "tokenizer" if options.tokenizer else "source")
    tokenizer = from_pretrained_or_explain(AutoTokenizer, options.tokenizer or source, "tokenizer", **tokenizer_kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if options.kind is None:  # a BERT-style cross-encoder reads (question, answer) pairs, as its card does
        kind, why["kind"] = reads_pairs(kind, why["kind"], config, options, has_template=bool(options.chat_template or tokenizer.chat_template))
    options.check_applies_to_kind(kind)
    model_class = model_class_for(kind, source, options, config)  # refuses custom code before anything loads
    # Several named outputs without attribute_weights still load: `rewardbridge score` labels data with
    # them; as a TRL reward they need weights, which RewardFunction.combine says on the first call.
    check_output_count(config, kind, options.attributes)
    trained = max_positions(config)
    if options.max_length and trained and options.max_length > trained:
        warn(
            f"max_length={options.max_length} is beyond the model's max_position_embeddings={trained}: "
            "positions past it were never trained and their scores are not to be trusted; lower max_length",
            UserWarning,
        )

    token_ids = token_ids_for(options.token_id, tokenizer) if kind == "causal_logit" else None
    renderer = Renderer(
        tokenizer=tokenizer,
        mode=options.render,
        chat_template=options.chat_template,
        judge_prompt=options.judge_prompt,
        system_prompt=options.system_prompt,
        encoder=is_encoder(config),
    )
    if options.max_length:
        max_length = options.max_length
        why["max_length"] = "from the preset" if "max_length" in filled else "max_length was given"
    else:
        max_length = model_max_length(tokenizer, config)
        why["max_length"] = "the model's own limit"
    resolved = Resolved(
        source=source, options=options, remote=False, preset=preset, filled=tuple(sorted(filled)), why=why, kind=kind, config=config,
        model_class=model_class, tokenizer=tokenizer, renderer=renderer, token_ids=token_ids, max_length=max_length,
        device=device, dtype=dtype, zero3_config=zero3_config,
    )
    check_misapplied(resolved)
    log_unknown_model(source, kind, why["kind"], resolved.input)
    return resolved


def _with_preset(source: str, options: RewardOptions, given: set[str] | None, remote: bool = False):
    """``apply_preset``, and the names of the options it filled."""
    with_preset = apply_preset(source, options, given=given, remote=remote)
    return with_preset, {name for name in with_preset.changed() if getattr(with_preset, name) != getattr(options, name)}

