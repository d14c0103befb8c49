import math

import numpy as np
import pandas as pd
import pytest

from shared import types
from shared.errors import BadRequest


def test_check_definitions_accepts_every_ml_server_type_and_the_string_alias():
    defs = [{"name": f"p{i}", "type": t} for i, t in enumerate(types.TYPES)]
    assert types.check_definitions(defs, "inputParameterDefinitions") == defs


@pytest.mark.parametrize("defs, fragment", [
    ([{"name": "x", "type": "float"}], "type 'float'"),
    ([{"name": "not valid", "type": "numeric"}], "'not valid' is not allowed: use an ASCII Python identifier"),
    ([{"name": "données", "type": "numeric"}], "use an ASCII Python identifier"),
    ([{"name": "x" * 129, "type": "numeric"}], "at most 128 characters"),
    ([{"name": f"p{i}", "type": "numeric"} for i in range(101)], "more than 100 parameters"),
    ([{"name": "x", "type": "numeric"}, {"name": "x", "type": "vector"}], "declared twice"),
    ({"name": "x"}, "must be a list"),
    ([{"name": "x"}], "string 'name' and 'type'"),
])
def test_check_definitions_names_the_problem(defs, fragment):
    with pytest.raises(BadRequest, match=fragment):
        types.check_definitions(defs, "inputParameterDefinitions")


@pytest.mark.parametrize("typ, value", [
    ("numeric", 1.5), ("numeric", 2), ("integer", 3), ("integer", 3.0), ("logical", False),
    ("character", "a"), ("string", ""), ("vector", [1, 2.5, None]), ("vector", ["a", "b"]),
    ("matrix", [[1, 2], [3, 4]]), ("data.frame", {"a": [1, 2], "b": ["x", "y"]}),
    ("data.frame", [{"a": 1}, {"a": 2}]),
])
def test_check_input_accepts_values_of_the_declared_type(typ, value):
    types.check_input("p", typ, value)


@pytest.mark.parametrize("typ, value", [
    ("numeric", "1"), ("numeric", True), ("integer", 1.5), ("logical", 1), ("character", 5),
    ("vector", 5), ("vector", [[1]]), ("matrix", [1, 2]), ("matrix", [[1, 2], [3]]),
    ("matrix", [["a"]]), ("data.frame", {"a": [1], "b": [1, 2]}), ("data.frame", 3),
])
def test_check_input_refuses_a_wrong_value_naming_the_parameter(typ, value):
    with pytest.raises(BadRequest, match="input 'p'"):
        types.check_input("p", typ, value)


def test_check_inputs_names_missing_and_undeclared_parameters():
    defs = [{"name": "a", "type": "numeric"}]
    with pytest.raises(BadRequest, match="input 'a' .* missing"):
        types.check_inputs(defs, {})
    with pytest.raises(BadRequest, match="input 'zzz' is not declared"):
        types.check_inputs(defs, {"a": 1, "zzz": 2})


def test_to_python_builds_natural_values():
    assert types.to_python("numeric", 2) == 2.0 and isinstance(types.to_python("numeric", 2), float)
    assert types.to_python("integer", 3.0) == 3 and isinstance(types.to_python("integer", 3.0), int)
    assert types.to_python("logical", True) is True
    v = types.to_python("vector", [1, 2, 3])
    assert isinstance(v, np.ndarray) and v.shape == (3,)
    m = types.to_python("matrix", [[1, 2], [3, 4]])
    assert isinstance(m, np.ndarray) and m.shape == (2, 2)
    df = types.to_python("data.frame", {"a": [1, 2], "b": ["x", "y"]})
    assert isinstance(df, pd.DataFrame) and list(df.columns) == ["a", "b"] and len(df) == 2


def test_to_json_gives_plain_json_for_numpy_pandas_and_non_finite_values():
    assert types.to_json("vector", np.array([1, 2])) == [1, 2]
    assert types.to_json("numeric", np.float64(1.5)) == 1.5
    assert type(types.to_json("numeric", np.float64(1.5))) is float
    assert types.to_json("integer", np.int64(3)) == 3
    assert types.to_json("logical", np.bool_(True)) is True
    assert types.to_json("vector", np.array([1.0, math.nan, math.inf])) == [1.0, None, None]
    assert types.to_json("matrix", np.array([[1, 2], [3, 4]])) == [[1, 2], [3, 4]]
    assert types.to_json("data.frame", pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})) == {"a": [1, 2],
                                                                                          "b": ["x", "y"]}
    assert types.to_json("character", np.str_("I. setosa")) == "I. setosa"
    assert types.to_json("vector", "one") == ["one"]
    assert types.to_json(None, {"k": np.arange(2)}) == {"k": [0, 1]}
