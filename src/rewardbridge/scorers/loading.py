"""Loading a resolved local reward model: the weights, and only the weights.

Everything that can be decided or checked without them (kind, model class, custom code,
output count, token ids, tokenizer, renderer, limits, device, the ZeRO-3 config) was done by
``resolve.py``; this module loads the model, whole or sharded with ZeRO-3, and builds the
:class:`~rewardbridge.scorers.local.LocalScorer`.
"""

from __future__ import annotations

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

        engine, model = load_zero3_model(
            resolved.model_class, resolved.source, resolved.zero3_config, resolved.device, dtype=resolved.dtype, **common
        )
    else:
        from .zero3 import deepspeed_config_scope

        with deepspeed_config_scope() as hf_deepspeed:
            hf_deepspeed.unset_hf_deepspeed_config()  # load whole even beside a ZeRO-3 trainer
            model = from_pretrained_or_explain(resolved.model_class, resolved.source, "model", dtype=resolved.dtype, **common)
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


def from_pretrained_or_explain(auto_class, source: str, what: str, **kwargs):
    """``auto_class.from_pretrained``, with transformers' hub errors turned into what to do."""
    try:
        return auto_class.from_pretrained(source, **kwargs)
    except OSError as error:
        raise ConfigError(
            f"cannot load the {what} of {source!r}: it is not a local folder, and the hub did not provide it "
            f"({' '.join(str(error).split())[:300]}). Pass a local model directory, or a hub id this machine can reach"
        ) from error


def gguf_kwargs(gguf_file: str | None) -> dict:
    """from_pretrained arguments for a GGUF checkpoint, unpacked into a plain dense model.

    Without ``dequantize=True`` transformers may mark the model as quantized, and TRL's
    Trainer then refuses to train it as a policy.
    """
    if not gguf_file:
        return {}
    from transformers import GgufConfig

    return {"gguf_file": gguf_file, "quantization_config": GgufConfig(gguf_file=gguf_file, dequantize=True)}
