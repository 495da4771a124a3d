"""``--set KEY=VALUE``: a dotted key into a recipe's raw mapping, before it is validated."""

from __future__ import annotations

from typing import Any

from .. import yaml12
from ..errors import ConfigError


def apply_override(data: dict, item: str) -> None:
    """``"training.max_steps=5"`` -> ``data["training"]["max_steps"] = 5`` (in place)."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {item!r} is not KEY=VALUE (for example --set training.max_steps=5)")
    # The rule --option follows: null clears any key; a prompt or template is taken as typed.
    parsed = yaml12.parse_setting(key.strip().rsplit(".", 1)[-1], value, f"--set {item!r}")
    node: Any = data
    *parents, leaf = key.strip().split(".")
    for depth, part in enumerate(parents):
        if isinstance(node, list):
            node = node[_list_index(node, part, item)]
        elif not isinstance(node, dict):
            raise ConfigError(f"--set {item!r}: {'.'.join(parents[:depth])} is a value, not a section")
        else:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
    if isinstance(node, list):
        node[_list_index(node, leaf, item)] = parsed
    elif isinstance(node, dict):
        node[leaf] = parsed
    else:
        raise ConfigError(f"--set {item!r}: {'.'.join(parents)} is a value, not a section")


def _list_index(node: list, part: str, item: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--set {item!r}: {part!r} is not an index of a list of {len(node)} (0..{len(node) - 1})")
    return int(part)
