"""ML Server parameter types. The host checks JSON values against a definition
(`check_input`); the worker turns them into Python values (`to_python`) and its results
back into plain JSON (`to_json`). numpy and pandas are imported only where values are built."""
from __future__ import annotations

import math
from typing import Any

from . import ids
from .errors import BadRequest

# ML Server's enum, plus "string", the alias its own Python walkthrough used.
TYPES = ("numeric", "integer", "logical", "character", "string", "vector", "matrix", "data.frame")
_SCALARS = (int, float, str, bool, type(None))

# What check_input takes, as the service's swagger says it. Two things JSON Schema cannot say:
# a matrix's rows, and a data.frame's columns, are of equal length.
_LARGEST = 1.7976931348623157e308
JSON_SCHEMA = {
    "numeric": {"type": "number", "minimum": -_LARGEST, "maximum": _LARGEST},
    "integer": {"type": "integer", "minimum": -2**63, "maximum": 2**63 - 1},
    "logical": {"type": "boolean"},
    "character": {"type": "string"},
    "string": {"type": "string"},
    "vector": {"type": "array", "items": {"type": ["number", "string", "boolean", "null"]}},
    "matrix": {"type": "array", "items": {"type": "array", "items": {"type": ["number", "boolean", "null"]}}},
    # {column: [values]} or [{column: value}]
    "data.frame": {"type": ["object", "array"], "additionalProperties": {"type": "array"},
                   "items": {"type": "object"}},
}


def check_definitions(defs: Any, what: str) -> list[dict[str, str]]:
    """Validate a list of ParameterDefinition objects; returns them normalised."""
    if defs is None:
        return []
    if not isinstance(defs, list):
        raise BadRequest(f"'{what}' must be a list of {{name, type}} objects")
    if len(defs) > ids.MAX_PARAMETERS:
        raise BadRequest(f"'{what}' declares more than {ids.MAX_PARAMETERS} parameters")
    out, seen = [], set()
    for d in defs:
        if not isinstance(d, dict) or not isinstance(d.get("name"), str) or not isinstance(d.get("type"), str):
            raise BadRequest(f"each entry of '{what}' must be an object with string 'name' and 'type'")
        name, typ = d["name"], d["type"]
        ids.identifier(name, f"'{what}': the parameter name")
        if typ not in TYPES:
            raise BadRequest(f"'{what}': parameter '{name}' has type '{typ[:32]}'; use one of {', '.join(TYPES)}")
        if name in seen:
            raise BadRequest(f"'{what}': parameter '{name}' is declared twice")
        seen.add(name)
        out.append({"name": name, "type": typ})
    return out


def check_inputs(defs: list[dict[str, str]], body: dict[str, Any]) -> dict[str, Any]:
    """The consume body against the declared inputs. :raises BadRequest: naming the parameter."""
    declared = {d["name"] for d in defs}
    extra = sorted(set(body) - declared)
    if extra:
        raise BadRequest(f"input '{extra[0][:64]}' is not declared by this service "
                         f"(declared: {', '.join(sorted(declared)) or 'none'})")
    for d in defs:
        if d["name"] not in body:
            raise BadRequest(f"input '{d['name']}' ({d['type']}) is missing")
        check_input(d["name"], d["type"], body[d["name"]])
    return body


def check_input(name: str, typ: str, value: Any) -> None:
    def bad(expected: str) -> BadRequest:
        return BadRequest(f"input '{name}' must be {expected} (type {typ})")

    if typ == "numeric":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not fits_float(value):
            raise bad("a number")
    elif typ == "integer":
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise bad("a whole number")
        if not -2**63 <= value < 2**63:
            raise bad("a whole number of at most 64 bits")
    elif typ == "logical":
        if not isinstance(value, bool):
            raise bad("true or false")
    elif typ in ("character", "string"):
        if not isinstance(value, str):
            raise bad("a string")
    elif typ == "vector":
        if not isinstance(value, list) or not all(isinstance(v, _SCALARS) for v in value):
            raise bad("an array of numbers, strings, booleans or nulls")
    elif typ == "matrix":
        if not isinstance(value, list) or not all(isinstance(r, list) for r in value):
            raise bad("an array of arrays")
        if len({len(r) for r in value}) > 1:
            raise bad("an array of arrays of equal length")
        if not all(isinstance(v, _SCALARS) and not isinstance(v, str) for r in value for v in r):
            raise bad("an array of arrays of numbers")
    elif typ == "data.frame":
        if isinstance(value, dict):
            if not all(isinstance(c, list) for c in value.values()) or len({len(c) for c in value.values()}) > 1:
                raise bad("an object of equal-length column arrays")
        elif isinstance(value, list):
            if not all(isinstance(r, dict) for r in value):
                raise bad("an object of column arrays, or an array of row objects")
        else:
            raise bad("an object of column arrays")


def fits_float(value: int | float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer past 1.8e308
        return False


def to_python(typ: str, value: Any) -> Any:
    """JSON value (already checked) to the natural Python value. Runs in the worker."""
    if typ == "numeric":
        return float(value)
    if typ == "integer":
        return int(value)
    if typ == "logical":
        return bool(value)
    if typ in ("character", "string"):
        return str(value)
    if typ in ("vector", "matrix"):
        import numpy as np
        return np.array(value)
    if typ == "data.frame":
        import pandas as pd
        return pd.DataFrame(value)
    return value


def to_json(typ: str | None, value: Any) -> Any:
    """A Python result to plain JSON, shaped by its declared type when there is one."""
    value = plain(value)
    if typ == "numeric" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if typ == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    if typ in ("character", "string") and value is not None and not isinstance(value, str):
        return str(value)
    if typ == "vector" and not isinstance(value, list):
        return [value]
    return value


def plain(value: Any) -> Any:
    """numpy/pandas/containers to JSON-safe values; NaN and infinities become null."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    mod = type(value).__module__.split(".")[0]
    if mod == "pandas":
        if hasattr(value, "to_dict") and hasattr(value, "columns"):
            return {str(c): plain(value[c].tolist()) for c in value.columns}
        if hasattr(value, "tolist"):
            return plain(value.tolist())
        if hasattr(value, "isoformat"):
            return value.isoformat()
    if mod == "numpy":
        if hasattr(value, "tolist"):
            return plain(value.tolist())
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "tolist"):
        return plain(value.tolist())
    return str(value)
