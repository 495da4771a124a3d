"""ZeRO-3 inference for a colocated reward model: the only module that imports deepspeed.

A 70B reward model does not fit beside the policy on one GPU. DeepSpeed ZeRO-3 partitions
its parameters across the training processes, so each rank holds about 1/N of them and
gathers one layer at a time for the forward (optionally from CPU or NVMe: ZeRO-Inference).
No optimizer is built: ``deepspeed.initialize`` with stage 3 and no optimizer installs only
the parameter-partitioning hooks.

A ZeRO-3 forward is a collective: every rank must run the same number of forwards.
``LocalScorer(lockstep=True)`` agrees on the count before scoring (see local.py).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import socket
from typing import Any

import torch

from ..errors import ConfigError

# Same as configs/deepspeed/zero3_inference.json (a test keeps them equal).
DEFAULT_CONFIG: dict[str, Any] = {
    "zero_optimization": {
        "stage": 3,
        # 0: partition every tensor. DeepSpeed's default keeps tensors under 1e5 elements whole
        # on every rank, which for a small model is all of them (REFERENCE.md §6).
        "stage3_param_persistence_threshold": 0,
        "stage3_max_live_parameters": 1e9,
        "stage3_prefetch_bucket_size": 5e7,
    },
    "train_micro_batch_size_per_gpu": 1,  # required by deepspeed.initialize; unused without training
    "steps_per_print": 10**9,
    "wall_clock_breakdown": False,
}


def resolve_config(zero3: bool | dict | str, dtype: torch.dtype) -> dict:
    """``True`` -> the default config; a dict or a JSON path as given. Precision follows ``dtype``."""
    if zero3 is True:
        config = copy.deepcopy(DEFAULT_CONFIG)
    elif isinstance(zero3, dict):
        config = copy.deepcopy(zero3)
    elif isinstance(zero3, str):
        if not os.path.exists(zero3):
            raise ConfigError(f"zero3={zero3!r}: no such DeepSpeed config file; pass True, a dict, or a JSON path")
        try:
            with open(zero3) as f:
                config = json.load(f)
        except json.JSONDecodeError as error:
            raise ConfigError(f"zero3={zero3!r} is not valid JSON ({error}); see configs/deepspeed/ for examples") from None
    else:
        raise ConfigError(f"zero3 must be True, a DeepSpeed config dict or a JSON path, got {zero3!r}")
    stage = config.get("zero_optimization", {}).get("stage")
    if stage != 3:
        raise ConfigError(f"zero3 config has zero_optimization.stage={stage}; reward-model sharding needs stage 3")
    if any("." in key for key in config):
        # TRL's prepare_deepspeed writes dotted keys, which DeepSpeed silently ignores (REFERENCE.md §1).
        raise ConfigError(f"zero3 config has dotted top-level keys {[k for k in config if '.' in k]}; nest them")
    config.setdefault("train_micro_batch_size_per_gpu", 1)
    config["bf16"] = {"enabled": dtype == torch.bfloat16}
    config["fp16"] = {"enabled": dtype == torch.float16}
    return config


@contextlib.contextmanager
def deepspeed_config_scope():
    """Restore, on exit, the DeepSpeed config that transformers sees as active.

    transformers keeps one global (weak) reference to the active DeepSpeed config; while it
    names a ZeRO-3 config, every ``from_pretrained`` loads partitioned parameters, and such a
    model fails outside a DeepSpeed engine (REFERENCE.md §1). Inside this scope a loader can
    clear it or set its own without touching the trainer's.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    previous = hf_deepspeed._hf_deepspeed_config_weak_ref
    try:
        yield hf_deepspeed
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = previous


def ensure_distributed(device: torch.device) -> None:
    """Join the trainer's process group, or start one (a single process gets a 1-rank group)."""
    import deepspeed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return  # the trainer's (accelerate's) group: DeepSpeed reuses it
    if "RANK" not in os.environ:  # plain `python script.py`: a group of one
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")


def load_zero3_model(model_class, source: str, config: dict, device: torch.device, **from_pretrained_kwargs):
    """Load ``source`` partitioned across ranks and wrap it in a ZeRO-3 inference engine.

    Returns (engine, model, loading info): call ``model`` (``engine.module``); keep ``engine`` alive;
    the info is transformers' (``missing_keys``, ...), for ``loading.check_loaded``: a score head the
    checkpoint lacks is initialized at random under ZeRO-3 as it is without.
    """
    import deepspeed
    from transformers.integrations import HfDeepSpeedConfig

    ensure_distributed(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    with deepspeed_config_scope():
        # While this config is the active one, from_pretrained loads each rank's partition
        # only (zero.Init), so no rank ever holds the whole model. The scope then restores
        # whatever config was active before (the trainer's, or none), so later loads of the
        # policy are not partitioned by ours.
        hf_config = HfDeepSpeedConfig(config)  # noqa: F841 (must stay alive during the load)
        model, info = model_class.from_pretrained(source, output_loading_info=True, **from_pretrained_kwargs)
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.module.eval()
    return engine, engine.module, info


def partitioned_param_bytes(model: torch.nn.Module) -> int:
    """Bytes of parameters this rank holds: its ZeRO-3 partitions (or whole tensors if unsharded)."""
    total = 0
    for param in model.parameters():
        held = getattr(param, "ds_tensor", param)
        total += held.numel() * held.element_size()
    return total


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
