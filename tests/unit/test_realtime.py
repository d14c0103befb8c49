"""What a realtime model may hold: the rules that bound its memory and time in the host."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from shared import realtime

F = TensorProto.FLOAT


def model(nodes, inputs=None, outputs=None, initializers=(), functions=(), domains=("",)) -> bytes:
    inputs = inputs or [helper.make_tensor_value_info("X", F, ["N", 3])]
    outputs = outputs or [helper.make_tensor_value_info("Y", F, ["N", 3])]
    g = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    opsets = [helper.make_opsetid(d, 17 if d == "" else 1) for d in domains]
    return helper.make_model(g, opset_imports=opsets, functions=list(functions)).SerializeToString()


def test_a_plain_model_is_described_by_its_tensors():
    info = realtime.check(model([helper.make_node("Relu", ["X"], ["Y"])]))
    assert info == {"inputs": [{"name": "X", "type": "float32", "shape": [None, 3]}],
                    "outputs": [{"name": "Y", "type": "float32", "shape": [None, 3]}]}


def test_the_revoscale_mark_comes_off():
    assert realtime.unmark(b"blob" + b"abc") == b"abc"
    assert realtime.unmark(b"abc") == b"abc"


def _refused(data: bytes, words: str) -> None:
    with pytest.raises(realtime.ModelRefused) as err:
        realtime.check(data)
    assert words in err.value.message


def test_subgraphs_are_refused():
    body = helper.make_graph([helper.make_node("Identity", ["c"], ["c_out"])], "body",
                             [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                             [helper.make_tensor_value_info("c_out", TensorProto.BOOL, [])])
    _refused(model([helper.make_node("If", ["X"], ["Y"], then_branch=body, else_branch=body)]), "If")


def test_functions_and_custom_domains_are_refused():
    fn = helper.make_function("custom", "f", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])],
                              [helper.make_opsetid("", 17)])
    _refused(model([helper.make_node("f", ["X"], ["Y"], domain="custom")], functions=[fn],
                   domains=("", "custom")), "functions")
    _refused(model([helper.make_node("Relu", ["X"], ["Y"])], domains=("", "com.microsoft")), "com.microsoft")


def test_products_and_shapes_come_only_from_constants():
    _refused(model([helper.make_node("Gemm", ["X", "X"], ["Y"])]), "Gemm takes its input 2 from the data")
    _refused(model([helper.make_node("Reshape", ["X", "X"], ["Y"])]), "Reshape")
    w = numpy_helper.from_array(np.eye(3, dtype=np.float32), "W")
    realtime.check(model([helper.make_node("MatMul", ["X", "W"], ["Y"])], initializers=[w]))


def test_external_data_is_refused_wherever_it_hides():
    t = numpy_helper.from_array(np.ones(3, np.float32), "v")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", "/etc/passwd"
    _refused(model([helper.make_node("Constant", [], ["C"], value=t), helper.make_node("Add", ["X", "C"], ["Y"])]),
             "external files")


def test_inputs_and_outputs_must_be_tensors_of_known_width():
    seq = helper.make_tensor_sequence_value_info("Y", F, None)
    _refused(model([helper.make_node("Relu", ["X"], ["Y"])], outputs=[seq]), "not a tensor")
    _refused(model([helper.make_node("Relu", ["X"], ["Y"])], inputs=[helper.make_tensor_value_info("X", F, ["N", None])]),
             "fixed number of columns")
    two = [helper.make_tensor_value_info("A", F, ["N", 3]), helper.make_tensor_value_info("B", F, ["N", 1])]
    _refused(model([helper.make_node("Add", ["A", "B"], ["Y"])], inputs=two), "several values per row")


def test_outputs_become_columns_without_nan():
    out = realtime.to_columns({"p": np.array([[0.5, np.nan]]), "label": np.array([1]), "v": np.array([[2.0]])})
    assert out == {"p_0": [0.5], "p_1": [None], "label": [1], "v": [2.0]}
