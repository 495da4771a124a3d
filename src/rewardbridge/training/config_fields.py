"""The field names of TRL's config classes, read from their source files without importing TRL.

Importing ``trl`` imports torch and transformers (seconds); a recipe with a one-key typo only needs
the names, to say ``did you mean training.max_steps?``. Each class's body is parsed with ``ast``
(its annotated assignments are the dataclass fields), then its bases, found by the module's own
``from ... import`` lines. Anything unexpected falls back to importing the class.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import os

# Where a base class is defined, when the module imports it from a package's lazy top level.
DEFINED_IN = {"TrainingArguments": "transformers.training_args"}


def config_fields(module: str, name: str) -> list[str]:
    """The dataclass field names of ``module.name`` (``"trl.trainer.grpo_config", "GRPOConfig"``),
    base classes' first, as ``dataclasses.fields`` lists them."""
    try:
        found = _fields_from_source(module, name, depth=0)
    except (OSError, SyntaxError, ValueError):
        found = None
    if found is None:  # not where it was expected: import it, as before
        return [f.name for f in dataclasses.fields(getattr(importlib.import_module(module), name))]
    return list(dict.fromkeys(found))


def _source_file(module: str) -> str | None:
    top, _, rest = module.partition(".")
    spec = importlib.util.find_spec(top)  # a top-level name: found without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], *rest.split(".")) if rest else spec.origin
    for candidate in (path + ".py", os.path.join(path, "__init__.py")):
        if os.path.isfile(candidate):
            return candidate
    return None


def _fields_from_source(module: str, name: str, depth: int) -> list[str] | None:
    path = _source_file(module)
    if path is None or depth > 5:
        return None
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    if name not in classes:
        return None
    imported = {}
    package = module.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")[: -node.level]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                imported[alias.asname or alias.name] = base
    fields: list[str] = []
    for base in classes[name].bases:
        if not isinstance(base, ast.Name) or base.id == "object":
            return None
        where = module if base.id in classes else DEFINED_IN.get(base.id, imported.get(base.id, package))
        inherited = _fields_from_source(where, base.id, depth + 1)
        if inherited is None:
            return None
        fields += inherited
    for node in classes[name].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            annotation = ast.unparse(node.annotation)
            if not annotation.startswith("ClassVar"):
                fields.append(node.target.id)
    return fields
