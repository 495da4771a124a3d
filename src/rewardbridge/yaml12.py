"""YAML as people type it on a command line or in a recipe: the YAML 1.2 core schema.

PyYAML implements YAML 1.1, where ``yes``/``no``/``on``/``off`` are booleans and ``1:30`` is 90;
``token_id: [Yes, No]`` would become ``(True, False)``. Here only true/false are booleans,
and ``1e-3`` is a float (PyYAML 1.1 reads it as a string).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from .errors import ConfigError


def load(text: str) -> Any:
    """A whole YAML document (a recipe), with YAML 1.2 scalars."""
    return yaml.load(text, Loader=Yaml12Loader)


def parse_value(text: str, where: str) -> Any:
    """A command-line value as YAML 1.2: only true/false are booleans; ``1e-3`` is a float.

    >>> [parse_value(t, "x") for t in ("no", "1:30", "1e-3", "true", "[1, on]")]
    ['no', '1:30', 0.001, True, [1, 'on']]
    """
    try:
        return yaml.load(text, Loader=Yaml12Loader)
    except yaml.YAMLError as error:
        raise ConfigError(f"{where}: the value is not valid YAML ({getattr(error, 'problem', error)})") from None


NULL_WORDS = ("null", "Null", "NULL", "~")


def parse_setting(key: str, text: str, where: str) -> Any:
    """A ``--option KEY=VALUE`` or ``--set a.b.KEY=VALUE`` value, by the rule both share.

    ``null`` / ``~`` is None for every key (it clears an option). A prompt or a template
    (``judge_prompt``, ``chat_template``, ``system_prompt``, ``principle``, ``principle_prompt``)
    is the text as typed. Everything else is YAML 1.2, except that a text option (``name``,
    ``model_name``, ``gguf_file``, ...) keeps a number as the text it was typed as.

    >>> [parse_setting(k, v, "x") for k, v in [("gguf_file", "null"), ("judge_prompt", "Q: {prompt}"), ("name", "2024"),
    ...                                        ("max_steps", "5"), ("token_id", "[Yes, No]")]]
    [None, 'Q: {prompt}', '2024', 5, ['Yes', 'No']]
    """
    from .options import PROMPT_OPTIONS, TEXT_OPTIONS

    if text.strip() in NULL_WORDS:
        return None
    if key in PROMPT_OPTIONS:
        return text
    value = parse_value(text, where)
    if key in TEXT_OPTIONS and isinstance(value, (bool, int, float)):
        return text.strip()
    return value


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 core-schema scalars."""


def _use_core_schema(loader: type) -> None:
    replaced = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
    loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in replaced]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    core_schema = [  # YAML 1.2 core schema
        ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
        ("tag:yaml.org,2002:int", r"^[-+]?[0-9]+$", "-+0123456789"),
        ("tag:yaml.org,2002:float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
         "-+.0123456789"),
    ]
    for tag, pattern, first in core_schema:
        loader.add_implicit_resolver(tag, re.compile(pattern), list(first))


_use_core_schema(Yaml12Loader)
