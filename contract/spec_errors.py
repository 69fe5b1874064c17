"""Spec errors in the user's words: each problem on its own line with the field's dotted path, the
value given, and the closest allowed name for a typo (difflib)."""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import get_args

from pydantic import BaseModel, ValidationError


def did_you_mean(given: object, choices) -> str:
    """' (did you mean 'x'?)' for the closest of `choices` to `given`, or '' when none is close."""
    if not isinstance(given, str):
        return ""
    close = difflib.get_close_matches(given, [str(c) for c in choices], n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def _model_of(annotation) -> type[BaseModel] | None:
    """The spec section class inside a field's type (ModelSpec inside tuple[ModelSpec, ...])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _fields_at(root: type[BaseModel], loc: tuple) -> list[str]:
    """The field names allowed in the section `loc` of `root` points into (the last element is the key)."""
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        model = _model_of(field.annotation) if field else None
    return list(model.model_fields) if model else []


def format_errors(err: ValidationError, path: Path, root: type[BaseModel]) -> str:
    """A validation error as lines naming each field (dotted path), the value given, and a "did you mean"."""
    lines = [f"{path}: {err.error_count()} problem(s) in the build spec"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        given = e.get("input")
        shown = "" if isinstance(given, dict) else f" (got {given!r})"
        hint = ""
        if e["type"] == "extra_forbidden" and e["loc"]:
            hint = did_you_mean(e["loc"][-1], _fields_at(root, e["loc"]))
        elif e["type"] == "literal_error":
            hint = did_you_mean(given, re.findall(r"'([^']*)'", str(e.get("ctx", {}).get("expected", ""))))
        lines.append(f"  {loc}: {msg}{shown}{hint}")
    return "\n".join(lines)
