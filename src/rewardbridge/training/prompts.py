"""Prompt datasets for the recipes: a file or hub dataset -> TRL's ``prompt`` column.

TRL's online trainers read one column, ``prompt``: a string, or a list of chat messages
(``{"role", "content"}``) that the policy's chat template renders. HelpSteer2-Preference
stores prompts as flattened text (REFERENCE.md §4); :func:`helpsteer2_preference_prompts`
turns its rows into chat prompts the way the Nemotron-70B recipe trained on them.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from ..conversation import parse_flattened_turns
from ..errors import ConfigError, InputError
from .recipe import DatasetSpec


def helpsteer2_preference_prompts(rows: Iterable[dict[str, Any]], split: str = "train") -> list[dict[str, Any]]:
    """HelpSteer2-Preference rows -> ``[{"prompt": [messages]}]``: one row per distinct prompt.

    Keeps rows whose ``split`` column is ``split`` (the preference subset ships train and
    validation rows together), turns each flattened ``<extra_id_1>`` multi-turn prompt into
    messages, and drops repeated prompts (each prompt appears once per response pair),
    keeping first-seen order.

    >>> rows = [{"split": "train", "prompt": "Hi"}, {"split": "train", "prompt": "Hi"},
    ...         {"split": "validation", "prompt": "Bye"}]
    >>> helpsteer2_preference_prompts(rows)
    [{'prompt': [{'role': 'user', 'content': 'Hi'}]}]
    """
    seen: set[str] = set()
    prompts = []
    for index, row in enumerate(rows):
        if "prompt" not in row or "split" not in row:
            raise InputError(
                f"HelpSteer2-Preference row {index} lacks {'prompt' if 'prompt' not in row else 'split'}; "
                f"it has {sorted(row)} (expected the columns of nvidia/HelpSteer2, data_dir='preference')"
            )
        if row["split"] != split or row["prompt"] in seen:
            continue
        seen.add(row["prompt"])
        prompts.append({"prompt": parse_flattened_turns(row["prompt"])})
    return prompts


def read_rows(path: str, prompt_column: str | None = None) -> list[dict[str, Any]]:
    """A local file's rows, in any format ``rows.py`` reads; a malformed row names the file and place.

    With ``prompt_column``, every row's prompt is read as TRL and the rewards will read it
    (``messages.read_turns``: a string, or text messages), and all of one kind: a missing or null
    prompt, ``[]``, an image part or strings mixed with messages would otherwise fail mid-training
    (or in TRL, or in pyarrow), naming a sample instead of the line.
    """
    from ..jobs import rows
    from ..messages import read_turns, sample_namer

    out = []
    kinds: dict[bool, str] = {}
    for row in rows.read_rows(path):
        place = row.where.split()[-1]  # "line 7" -> path:7
        if row.data is None:
            raise InputError(f"{path}:{place}: not a JSON object ({row.error})")
        if prompt_column is not None:
            value = row.data.get(prompt_column)
            if value is None:
                raise InputError(f"{path}:{place}: no {prompt_column!r} value ({'null' if prompt_column in row.data else 'missing'}); "
                                 "every row needs its prompt: a string, or a list of chat messages")
            read_turns(value, sample_namer(f"{path}:{place}: {prompt_column}"))
            is_text = isinstance(value, str)
            kinds.setdefault(is_text, f"{path}:{place}")
            if len(kinds) > 1:
                raise InputError(
                    f"{path}:{place}: its {prompt_column!r} is {'a string' if is_text else 'a list of messages'}, but "
                    f"{kinds[not is_text]}'s is {'a list of messages' if is_text else 'a string'}; a dataset column holds one "
                    "kind: write every prompt as a string, or every prompt as messages"
                )
        out.append(row.data)
    return out


def load_prompts(spec: DatasetSpec):
    """The prompts a recipe trains on, as a ``datasets.Dataset`` with a ``prompt`` column."""
    from datasets import Dataset, load_dataset

    if os.path.exists(spec.path):  # a local file: the same reader as `rewardbridge score`
        prompt_column = None if spec.format == "helpsteer2_preference" else spec.prompt_column
        dataset = Dataset.from_list(read_rows(spec.path, prompt_column))
    else:
        try:
            dataset = load_dataset(spec.path, data_dir=spec.data_dir, split=spec.split)
        except Exception as error:  # noqa: BLE001: datasets raises many kinds (hub, network, missing split)
            raise ConfigError(
                f"dataset.path={spec.path!r} is not a local file, and loading it as a hub dataset failed "
                f"({type(error).__name__}: {' '.join(str(error).split())[:300]}); pass a .jsonl/.json/.csv/.parquet file "
                "(relative to the recipe) or a hub dataset id this machine can reach"
            ) from error
    if spec.format == "helpsteer2_preference":
        # The preference subset is one hub split holding a `split` column: keep its train rows.
        dataset = Dataset.from_list(helpsteer2_preference_prompts(dataset, split="train"))
    elif spec.prompt_column != "prompt":
        dataset = dataset.rename_column(spec.prompt_column, "prompt")
    if "prompt" not in dataset.column_names:
        raise InputError(f"{spec.path}: no '{spec.prompt_column}' column (has {dataset.column_names}); set dataset.prompt_column")
    if spec.limit:
        dataset = dataset.select(range(min(spec.limit, len(dataset))))
    return dataset
