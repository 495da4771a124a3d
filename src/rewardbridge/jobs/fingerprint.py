"""What model a job's rows came from, beyond its path: the fingerprint ``OUT.run.json`` records.

A path names a folder, not its weights: the weights can be replaced, or a symlink retargeted, and a
``--resume`` would then write a second model's scores into one file. The fingerprint holds:

- a local folder: its real path (symlinks followed) and, per file that decides a score (config,
  weights, tokenizer, chat template, custom code), a SHA-256 of files up to 16 MiB and the size and
  modification time of larger ones (hashing a 70B checkpoint would take minutes);
- a hub id: the commit of its cached snapshot when one is cached (and that snapshot's files), else
  ``commit: unknown``;
- an endpoint: its URLs and ``model_name`` (the served weights are the server's to pin);
- a local ``tokenizer=`` folder, as a model folder;
- the resolved ``dtype`` (``dtype='auto'`` is float32 on CPU and bfloat16 on a GPU: a resume on another
  device would otherwise write rows of two precisions into one file).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

HASHED_BYTES = 16 * 2**20  # files up to this size are hashed; larger ones (weights) by size and mtime
# Files that decide a score, besides weights (*.safetensors, pytorch_model*.bin) and custom code (*.py).
SCORE_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
               "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model",
               "chat_template.jinja", "chat_template.json")


def model_fingerprint(source: str, options: Any, remote: bool, dtype: Any = None) -> dict[str, str]:
    """A flat ``{what: identity}`` for the model ``source`` (as ``resolve`` resolved it) with ``options``.

    >>> model_fingerprint("http://rm:8000", type("O", (), {"model_name": "reward_model"})(), remote=True)
    {'urls': 'http://rm:8000', 'model_name': 'reward_model'}
    """
    if remote:
        return {"urls": source, "model_name": options.model_name}
    found: dict[str, str] = {}
    if os.path.isdir(source):
        found["path"] = os.path.realpath(source)
        found.update(folder_files(source, getattr(options, "gguf_file", None)))
    else:
        commit, snapshot = cached_snapshot(source)
        found["hub_id"] = source
        found["commit"] = commit or "unknown (not in this machine's hub cache)"
        if snapshot is not None:
            found.update(folder_files(snapshot, getattr(options, "gguf_file", None)))
    tokenizer = getattr(options, "tokenizer", None)
    if tokenizer and os.path.isdir(tokenizer):
        found["tokenizer"] = os.path.realpath(tokenizer)
        found.update({f"tokenizer/{name}": value for name, value in folder_files(tokenizer).items()})
    if dtype is not None:
        found["dtype"] = str(dtype).removeprefix("torch.")
    return found


def folder_files(folder: str, gguf_file: str | None = None) -> dict[str, str]:
    """``{file name: identity}`` for the files of ``folder`` that decide a score."""
    found = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not os.path.isfile(path) or not _decides_a_score(name, gguf_file):
            continue
        stat = os.stat(path)  # a hub snapshot's symlink: the blob it points to
        if stat.st_size <= HASHED_BYTES:
            with open(path, "rb") as f:
                found[name] = "sha256:" + hashlib.sha256(f.read()).hexdigest()[:16]
        else:
            found[name] = f"{stat.st_size} bytes, modified {stat.st_mtime_ns}"
    return found


def _decides_a_score(name: str, gguf_file: str | None) -> bool:
    if name in SCORE_FILES or name.endswith((".safetensors", ".safetensors.index.json", ".py")):
        return True
    if name.endswith(".bin") or name.endswith(".bin.index.json"):
        return name.startswith(("pytorch_model", "adapter_model", "model"))  # not training_args.bin, optimizer state
    return gguf_file is not None and name == gguf_file


def cached_snapshot(hub_id: str) -> tuple[str | None, str | None]:
    """(commit, snapshot folder) of ``hub_id``'s config.json in the local hub cache, or (None, None)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(hub_id, "config.json")
    except Exception:  # noqa: BLE001: an id the hub library refuses is simply not cached
        return None, None
    if not isinstance(path, str):
        return None, None
    snapshot = os.path.dirname(path)
    return os.path.basename(snapshot), snapshot
