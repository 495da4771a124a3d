"""Recipe values against type annotations: the dataclass fields of a recipe section, TRL's
config fields, peft's LoraConfig fields. A mismatch is a ConfigError naming the key."""

from __future__ import annotations

import enum
import types
import typing
from typing import Any

from ..errors import ConfigError


def check_value(where: str, value: Any, annotation: Any) -> Any:
    """``value`` if it fits ``annotation`` (a numeric string is taken for a float: YAML reads
    ``3e-5`` as text); else a ConfigError naming the key and the expected type."""
    ok, converted = fits(value, annotation)
    if not ok:
        raise ConfigError(f"{where}={value!r} should be {type_name(annotation)}, got {type(value).__name__}")
    return converted


def fits(value: Any, annotation: Any) -> tuple[bool, Any]:
    if annotation is Any or isinstance(annotation, (str, typing.TypeVar)):
        return True, value  # an annotation we cannot check: let the config class decide
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            ok, converted = fits(value, option)
            if ok:
                return True, converted
        return False, value
    if origin is typing.Literal:
        return value in typing.get_args(annotation), value
    if annotation is type(None):
        return value is None, value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return False, value
    if annotation is str:
        return isinstance(value, str), value
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return value in {m.value for m in annotation} or isinstance(value, annotation), value
    if origin in (list, tuple) or annotation in (list, tuple):
        return isinstance(value, (list, tuple)), value
    if origin is dict or annotation is dict:
        return isinstance(value, dict), value
    return True, value


def type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in annotation)
    if origin is not None:
        return getattr(origin, "__name__", str(annotation)) if origin in (list, dict, tuple) else str(annotation)
    return getattr(annotation, "__name__", str(annotation))
