"""Options that would be silently misapplied, refused once the source is resolved (no weights needed).

Each of these used to change nothing, or the wrong thing, without a word:

- ``judge_prompt`` on a model that is not a causal-LM judge rewrote its input into a question;
- rendering options (``tokenizer``, ``chat_template``, ``system_prompt``, ``render``) on a protocol
  whose server renders the messages itself were never sent;
- ``chat_template`` (and, remotely, ``tokenizer``) where the text is not rendered by a chat
  template (``render='text'`` or ``'steerlm'``, a (question, answer) pair model);
- ``system_prompt`` where a conversation has no place for it (plain prompt + completion text).

``system_prompt`` itself works wherever a chat template renders: it becomes the system turn of
a conversation that has none (``conversation.Renderer``).
"""

from __future__ import annotations

from .errors import ConfigError

RENDERING = ("tokenizer", "chat_template", "system_prompt")


def check_misapplied(resolved) -> None:
    """Refuse an option that ``resolved`` (``resolve.Resolved``) would ignore or misapply."""
    opts = resolved.options
    if resolved.remote and resolved.renderer is None:
        ignored = [k for k in RENDERING if getattr(opts, k)] + (["render"] if opts.render != "auto" else [])
        if ignored:
            raise ConfigError(
                f"option(s) {ignored} would be ignored: protocol={opts.protocol!r} sends messages and the server renders them with "
                "its own model's template. Set them where the model is served (rewardbridge serve MODEL --option ...), or put a "
                "system message in the prompt"
            )
        return
    if not resolved.remote:
        check_judge(resolved.kind, opts)
        if resolved.kind == "pair_regression":
            if opts.alpha != 1.0 and not resolved.config.get("auto_map"):
                # Only custom code (nicholasKluge's RewardModel) takes alpha; whether that code does is known once it
                # is imported (readouts.readout_for). A standard transformers class never does.
                raise ConfigError(
                    f"alpha={opts.alpha:g} would be passed to the model's forward, but {resolved.source} is a standard "
                    f"transformers model (config.json has no auto_map: no custom code), whose forward takes no alpha; "
                    "pass alpha=1 (its output is read as is)"
                )
            ignored = [k for k in ("chat_template", "system_prompt") if getattr(opts, k)] + (["render"] if opts.render != "auto" else [])
            if ignored:
                # kind='classifier' alone would render plain text, where system_prompt has no place either.
                needs_template = not resolved.renderer.has_chat_template and (opts.system_prompt or opts.render in ("chat", "judge"))
                template = " and chat_template='<jinja>' (this tokenizer has none)" if needs_template else ""
                raise ConfigError(
                    f"option(s) {ignored} would be ignored: kind='pair_regression' reads (question, answer) as a tokenizer pair, "
                    f"with no template. Drop them, or pass kind='classifier'{template} to render the conversation"
                )
            return
    mode = rendered_mode(resolved.renderer)
    where = f"protocol={opts.protocol!r} with render={mode!r}" if resolved.remote else f"render={mode!r}"
    if opts.chat_template and mode in ("text", "steerlm"):
        raise ConfigError(
            f"chat_template would be ignored: {where} does not render with a chat template "
            f"({'plain prompt + completion' if mode == 'text' else 'NeMo-Aligner SteerLM text'}); drop it, or pass render='chat'"
        )
    if resolved.remote and opts.tokenizer and mode in ("text", "steerlm"):
        raise ConfigError(
            f"tokenizer= would be ignored: a remote endpoint tokenizes for itself, and {where} uses no chat template; "
            "drop it, or pass render='chat' to render with its template"
        )
    if opts.system_prompt and mode == "text":
        raise ConfigError(
            f"system_prompt has no place in {where} (plain prompt + completion); it becomes a system turn under a chat "
            "template: pass chat_template=... (or a tokenizer with one), or drop system_prompt"
        )
    if mode in ("chat", "judge"):
        check_template_renders(resolved.renderer)


def check_judge(kind: str, opts) -> None:
    """``judge_prompt`` only for a causal-LM judge (checked as soon as the kind is known, before the tokenizer)."""
    if opts.judge_prompt and kind != "causal_logit":
        raise ConfigError(
            f"judge_prompt asks a causal LM a question whose next token is its verdict (kind='causal_logit'); this model is "
            f"kind={kind!r} and reads the conversation itself, which judge_prompt would replace. Drop judge_prompt"
        )


def rendered_mode(renderer) -> str:
    """The mode a renderer renders chat data in (``auto`` decided as :meth:`Renderer.resolved_mode` decides)."""
    if renderer.mode != "auto":
        return renderer.mode
    if renderer.judge_prompt:
        return "judge"
    return "chat" if renderer.has_chat_template else "text"


def check_template_renders(renderer) -> None:
    """Render the example conversation now, so a broken chat template (a syntax error, an unknown filter,
    its own ``raise_exception``) is reported when the reward is resolved, not at the first call; with
    ``system_prompt``, render it with and without the system turn: a template that drops system turns
    would ignore it."""
    import dataclasses

    from .conversation import Conversation

    example = Conversation(({"role": "user", "content": "What is 2+2?"},), ({"role": "assistant", "content": "4"},))
    plain = dataclasses.replace(renderer, system_prompt=None)
    where = "chat_template" if renderer.chat_template else "the tokenizer's chat template"
    try:
        without = plain.render(example)
    except Exception as error:  # noqa: BLE001: whatever jinja2 (or the template's raise_exception) raises
        error = error.__cause__ or error  # jinja2's own error, not the renderer's wrapping of it
        raise ConfigError(
            f"{where} cannot render a conversation ({type(error).__name__}: {error}); fix the template, or pass "
            "chat_template='<jinja>' (tokenizer='<dir>') with one that renders"
        ) from None
    if not renderer.system_prompt:
        return
    try:
        with_system = renderer.render(example)
    except Exception as error:  # noqa: BLE001: a template's own refusal (jinja2 raise_exception)
        error = error.__cause__ or error
        raise ConfigError(
            f"system_prompt: the chat template refuses a system turn ({type(error).__name__}: {error}); put the instruction "
            "in the user turn, or pass a chat_template that takes one"
        ) from None
    if with_system == without:
        raise ConfigError(
            f"system_prompt would be ignored: {where} renders the same text with and without a system turn (it drops "
            "system messages); put the instruction in the user turn, or pass a chat_template that renders system turns"
        )
