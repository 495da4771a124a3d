"""What a recipe run checks before any weights load, so a mistake costs seconds, not a 70B load.

:func:`preflight` checks the policy's folder (not a file, with a tokenizer), reads the prompts (a folder that is not a dataset, a missing ``prompt``
column, a hub id that cannot be reached), resolves every reward model without its weights and
builds every rule (:func:`check_rewards`, which also refuses two rewards under one name), and,
with several processes, refuses a remote reward whose worst request outlasts ``ddp_timeout``
(``remote_rewards.check_collective_timeout``), all before TRL's trainers are imported or any
model loads. The batch arithmetic TRL would refuse
is checked earlier still, when the recipe is read (``recipe.check_batch``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from .recipe import Recipe, RewardSpec, load_function, resolve_path


def preflight(recipe: Recipe) -> tuple[Any, list[Callable | None]]:
    """(the prompt dataset, the rule rewards built: None for reward models), or a clear error."""
    import os

    from ..errors import ConfigError, InputError
    from .prompts import load_prompts
    from .remote_rewards import check_collective_timeout

    check_collective_timeout(recipe, int(os.environ.get("WORLD_SIZE", "1")))  # torchrun / accelerate set WORLD_SIZE
    check_policy(recipe)
    try:
        prompts = load_prompts(recipe.dataset)
    except InputError as error:
        raise ConfigError(f"dataset: {error}") from None
    return prompts, check_rewards(recipe.rewards)


def check_policy(recipe: Recipe) -> None:
    """The policy's source names a folder (not its config.json) with a tokenizer, or a hub id."""
    from ..checkpoint import check_tokenizer_files
    from ..sources import resolve_local_source

    path = resolve_local_source(resolve_path(recipe.model.path), "model.path")
    if recipe.model.gguf_file is None:
        check_tokenizer_files(path, "model.path")


def check_rewards(specs: Sequence[RewardSpec]) -> list[Callable | None]:
    """Every reward resolved without its weights (``resolve.py``: kind, tokenizer, template, token
    ids, limits) and every rule built; two rewards under one name are refused (TRL logs rewards by
    name and would merge their metrics). Returns the rules (None for reward models)."""
    from ..errors import ConfigError, RewardBridgeError
    from ..resolve import resolve
    from ..reward_names import default_name

    functions: list[Callable | None] = []
    names: dict[str, int] = {}
    for index, spec in enumerate(specs):
        if spec.function is not None:
            target = load_function(spec.function, f"rewards[{index}]")
            function = target(**spec.kwargs) if isinstance(target, type) else target
            functions.append(function)
            name = getattr(function, "__name__", type(function).__name__)
        else:
            try:
                resolved = resolve(resolve_path(spec.source), **spec.options)
            except RewardBridgeError as error:
                raise type(error)(f"rewards[{index}] ({spec.source}): {error}") from None
            functions.append(None)
            name = resolved.options.name or default_name(resolved.source, resolved.options)
        if name in names:
            raise ConfigError(
                f"rewards[{names[name]}] and rewards[{index}] are both named {name!r}; TRL logs rewards by name "
                f"(rewards/{name}/mean) and would merge them: give each its own 'name:' (a reward model) or tell the rules apart"
            )
        names[name] = index
    return functions
