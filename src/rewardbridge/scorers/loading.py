"""Loading a resolved local reward model: the weights, and only the weights.

Everything that can be decided or checked without them (kind, model class, custom code,
output count, token ids, tokenizer, renderer, limits, device, the ZeRO-3 config) was done by
``resolve.py``; this module loads the model, whole or sharded with ZeRO-3, and builds the
:class:`~rewardbridge.scorers.local.LocalScorer`.
"""

from __future__ import annotations

from ..checkpoint import from_pretrained_or_explain
from ..errors import ConfigError
from .local import LocalScorer
from .readouts import readout_for
from .tokens import default_max_tokens_per_batch


def load_local_scorer(resolved) -> LocalScorer:
    """Load the weights of a resolved local source (``resolve.Resolved``) into a :class:`LocalScorer`."""
    options = resolved.options
    common = {"trust_remote_code": options.trust_remote_code, **gguf_kwargs(options.gguf_file)}
    engine = None
    if resolved.zero3_config is not None:
        from .zero3 import load_zero3_model

        engine, model, info = load_zero3_model(
            resolved.model_class, resolved.source, resolved.zero3_config, resolved.device, dtype=resolved.dtype, **common
        )
        check_loaded(resolved, info)  # before any score: every rank reads the same checkpoint, so all refuse
    else:
        from .zero3 import deepspeed_config_scope

        with deepspeed_config_scope() as hf_deepspeed:
            hf_deepspeed.unset_hf_deepspeed_config()  # load whole even beside a ZeRO-3 trainer
            model, info = from_pretrained_or_explain(
                resolved.model_class, resolved.source, "model", dtype=resolved.dtype, output_loading_info=True, **common
            )
        check_loaded(resolved, info)
        model.to(resolved.device)
    model.eval().requires_grad_(False)
    tokenizer = resolved.tokenizer
    if getattr(model.config, "pad_token_id", None) is None:
        # Sequence classifiers find each row's last token by pad_token_id; without it a batch fails.
        model.config.pad_token_id = tokenizer.pad_token_id
    return LocalScorer(
        model,
        tokenizer,
        resolved.renderer,
        readout_for(resolved, model),
        max_length=resolved.max_length,
        truncation=options.truncation,
        max_tokens_per_batch=options.max_tokens_per_batch or default_max_tokens_per_batch(resolved.device),
        device=resolved.device,
        lockstep=resolved.zero3_config is not None,
        engine=engine,
    )


def check_loaded(resolved, info: dict) -> None:
    """Refuse a model whose checkpoint lacked some of its weights (transformers' "score.weight
    MISSING"): those were initialized at random, so every score would be noise, different on each load."""
    missing = sorted(info.get("missing_keys") or ()) + sorted(f"{k[0]} (shape)" if isinstance(k, tuple) else str(k)
                                                             for k in info.get("mismatched_keys") or ())
    if not missing:
        return
    architectures = resolved.config.get("architectures") or []
    arch = architectures[0] if architectures else "an unknown architecture"
    if resolved.kind in ("classifier", "attributes") and arch.endswith("ForCausalLM"):
        hint = (f"{resolved.source} is a causal LM ({arch}) with no trained score head; read a next-token logit with "
                "kind='causal_logit' and token_id=..., or pass the folder of a trained reward model")
    elif resolved.kind == "causal_logit" and arch.endswith("ForSequenceClassification"):
        hint = f"{resolved.source} is a sequence classifier ({arch}): use kind='classifier'"
    else:
        hint = f"check that {resolved.source} is the trained reward model and that kind={resolved.kind!r} is its kind"
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    raise ConfigError(
        f"the checkpoint has no weights for {shown} of {resolved.model_class.__name__} (kind={resolved.kind!r}): "
        f"transformers would initialize them at random, so every score would be noise. {hint}"
    )


def gguf_kwargs(gguf_file: str | None) -> dict:
    """from_pretrained arguments for a GGUF checkpoint, unpacked into a plain dense model.

    Without ``dequantize=True`` transformers may mark the model as quantized, and TRL's
    Trainer then refuses to train it as a policy.
    """
    if not gguf_file:
        return {}
    from transformers import GgufConfig

    return {"gguf_file": gguf_file, "quantization_config": GgufConfig(gguf_file=gguf_file, dequantize=True)}
