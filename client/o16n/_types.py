"""ML Server's parameter types, and how Python values travel as JSON (reference §7)."""
from __future__ import annotations

from typing import Any

TYPES = ("numeric", "integer", "logical", "character", "vector", "matrix", "data.frame")
_BY_PYTHON = {float: "numeric", int: "integer", bool: "logical", str: "character", list: "vector"}
#: the spellings ML Server's SDK accepted, as strings
_BY_NAME = {"float": "numeric", "int": "integer", "bool": "logical", "str": "character", "list": "vector",
            "numpy.array": "vector", "numpy.ndarray": "vector", "array": "vector", "numpy.matrix": "matrix",
            "matrix": "matrix", "pandas.DataFrame": "data.frame", "DataFrame": "data.frame",
            "numpy.DataFrame": "data.frame"}


def server_type(declared: Any, name: str) -> str:
    """The server's type string for a Python type, an SDK spelling, or a server type string."""
    if isinstance(declared, str):
        if declared in TYPES:
            return declared
        if declared in _BY_NAME:
            return _BY_NAME[declared]
    elif declared in _BY_PYTHON:
        return _BY_PYTHON[declared]
    else:
        qualified = f"{getattr(declared, '__module__', '')}.{getattr(declared, '__name__', '')}"
        for module, kind in (("numpy.ndarray", "vector"), ("numpy.matrix", "matrix"),
                             ("pandas.core.frame.DataFrame", "data.frame")):
            if qualified == module:
                return kind
    raise ValueError(f"{name}: {declared!r} is not a parameter type; use float, int, bool, str, list, "
                     f"numpy.ndarray, numpy.matrix, pandas.DataFrame or one of {', '.join(TYPES)}")


def encode(value: Any) -> Any:
    """A Python value as JSON: numpy arrays and scalars as lists and numbers, a DataFrame as
    {column: [values]} (ML Server's column-ordered form)."""
    if hasattr(value, "to_dict") and hasattr(value, "columns"):
        return {str(k): [encode(v) for v in col] for k, col in value.to_dict(orient="list").items()}
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    return value


def decode(value: Any, kind: str | None) -> Any:
    """A JSON output as the declared type: data.frame as a pandas.DataFrame when pandas is
    installed; everything else stays as JSON gave it."""
    if kind == "data.frame" and isinstance(value, dict):
        try:
            import pandas
        except ImportError:
            return value
        return pandas.DataFrame(value)
    return value
