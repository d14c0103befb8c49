"""Realtime services end to end: ONNX models published as multipart, consumed with inputData."""
from __future__ import annotations

import pickle
import uuid
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

warnings.filterwarnings("ignore", category=UserWarning)
IRIS = load_iris(as_frame=True)
X, Y = IRIS.data, IRIS.target
COLUMNS = list(X.columns)


def _classifier():
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, Y)


def onnx_bytes(model=None) -> bytes:
    from skl2onnx import to_onnx

    model = model or _classifier()
    last = model.steps[-1][1]
    return to_onnx(model, X.values[:1].astype(np.float32), options={id(last): {"zipmap": False}}).SerializeToString()


def graph_model(nodes, inputs, outputs, initializers=(), opset=17) -> bytes:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def publish(base_url, headers, model: bytes, *, name=None, version="v1", **fields) -> requests.Response:
    name = name or "rt" + uuid.uuid4().hex[:8]
    path = f"/realtime-services/{name}/{version}" if version else f"/realtime-services/{name}"
    r = requests.post(base_url + path, files={"model": ("model", model)}, data=fields, headers=headers, timeout=120)
    r.name = name
    return r


def consume(base_url, headers, name, input_data, version="v1") -> requests.Response:
    return requests.post(f"{base_url}/api/{name}/{version}", json={"inputData": input_data}, headers=headers,
                         timeout=60)


def columns(frame: pd.DataFrame) -> dict:
    return {c: frame[c].tolist() for c in frame.columns}


def test_onnx_model_publishes_and_scores_like_scikit_learn(base_url, alice):
    model = _classifier()
    r = publish(base_url, alice, onnx_bytes(model), description="iris", operationId="score")
    assert r.status_code == 201, r.text
    assert r.json() == "v1"
    svc = requests.get(f"{base_url}/services/{r.name}/v1", headers=alice).json()[0]
    assert svc["runtimeType"] == "Realtime"
    assert svc["inputParameterDefinitions"] == [{"name": "inputData", "type": "data.frame"}]
    assert svc["outputParameterDefinitions"] == [{"name": "outputData", "type": "data.frame"}]
    assert (svc["description"], svc["operationId"], svc["code"]) == ("iris", "score", "")

    rows = X.iloc[[0, 60, 120]]
    out = consume(base_url, alice, r.name, columns(rows))
    assert out.status_code == 200, out.text
    body = out.json()
    assert body["success"] is True, body
    data = body["outputParameters"]["outputData"]
    assert data["label"] == model.predict(rows).tolist()
    proba = model.predict_proba(rows)
    for j in range(3):
        assert np.allclose(data[f"probabilities_{j}"], proba[:, j], atol=1e-5)
    # rows as an array of row objects score the same
    again = consume(base_url, alice, r.name, rows.to_dict(orient="records")).json()
    assert again["outputParameters"]["outputData"]["label"] == data["label"]


def test_onnx_behind_revoscale_mark_is_accepted(base_url, alice):
    r = publish(base_url, alice, b"blob" + onnx_bytes())
    assert r.status_code == 201, r.text
    out = consume(base_url, alice, r.name, columns(X.iloc[:2])).json()
    assert out["success"] is True and len(out["outputParameters"]["outputData"]["label"]) == 2


def test_class_scores_from_zipmap_become_one_column_per_class(base_url, alice):
    from skl2onnx import to_onnx

    model = _classifier()
    r = publish(base_url, alice, to_onnx(model, X.values[:1].astype(np.float32)).SerializeToString())
    assert r.status_code == 201, r.text
    out = consume(base_url, alice, r.name, columns(X.iloc[[0, 120]])).json()["outputParameters"]["outputData"]
    assert sorted(out) == ["output_label", "output_probability_0", "output_probability_1", "output_probability_2"]
    assert np.allclose(out["output_probability_2"], model.predict_proba(X.iloc[[0, 120]])[:, 2], atol=1e-5)


def test_pickled_scikit_learn_model_is_converted_and_matches_columns_by_name(base_url, alice):
    model = LinearRegression().fit(X, Y)
    r = publish(base_url, alice, b"blob" + pickle.dumps(model))
    assert r.status_code == 201, r.text
    reordered = X.iloc[:4][list(reversed(COLUMNS))]  # by name, not by position
    out = consume(base_url, alice, r.name, columns(reordered)).json()
    assert out["success"] is True, out
    assert np.allclose(out["outputParameters"]["outputData"]["variable"], model.predict(X.iloc[:4]), atol=1e-4)

    missing = consume(base_url, alice, r.name, columns(X.iloc[:2, :3]))
    assert missing.status_code == 400
    assert COLUMNS[3] in missing.json()["message"]


def test_a_pickle_runs_only_in_the_sandbox(base_url, alice, tmp_path):
    marker = Path("/tmp") / f"o16n-realtime-{uuid.uuid4().hex}"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    r = publish(base_url, alice, pickle.dumps(Evil()))
    assert r.status_code == 400
    assert not marker.exists()
    assert "Traceback" not in r.text

    r = publish(base_url, alice, pickle.dumps({"not": "a model"}))
    assert r.status_code == 400
    assert "not a scikit-learn estimator" in r.json()["message"]


@pytest.mark.parametrize("model, expected", [
    (b"definitely not a model", "neither an ONNX model nor"),
    (b"", "empty"),
    (graph_model([helper.make_node("ConstantOfShape", ["X"], ["Y"])],
                 [helper.make_tensor_value_info("X", TensorProto.INT64, [2])],
                 [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)]), "ConstantOfShape"),
    (graph_model([helper.make_node("MatMul", ["X", "X"], ["Y"])],
                 [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 3])],
                 [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)]), "from the data"),
    (graph_model([helper.make_node("Relu", ["X"], ["Y"], domain="com.evil")],
                 [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 3])],
                 [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)]), "com.evil"),
])
def test_models_realtime_scoring_cannot_bound_are_refused(base_url, alice, model, expected):
    r = publish(base_url, alice, model)
    assert r.status_code == 400, r.text
    assert expected in r.json()["message"]


def test_a_model_reading_external_files_is_refused(base_url, alice):
    weights = numpy_helper.from_array(np.ones((4, 1), np.float32), "W")
    weights.data_location = TensorProto.EXTERNAL
    weights.ClearField("raw_data")
    entry = weights.external_data.add()
    entry.key, entry.value = "location", "../../local.settings.json"
    model = graph_model([helper.make_node("MatMul", ["X", "W"], ["Y"])],
                        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
                        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 1])], [weights])
    r = publish(base_url, alice, model)
    assert r.status_code == 400
    assert "external files" in r.json()["message"]


def test_a_model_that_would_take_the_hosts_memory_fails_its_call_only(base_url, alice):
    # [N,1] + [1,N] -> N x N: 100,000 rows would need 40 GB
    shape = numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape")
    model = graph_model([helper.make_node("Reshape", ["X", "shape"], ["T"]), helper.make_node("Add", ["X", "T"], ["S"]),
                         helper.make_node("ReduceSum", ["S"], ["Y"], keepdims=0)],
                        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 1])],
                        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [])], [shape])
    r = publish(base_url, alice, model)
    assert r.status_code == 201, r.text
    small = consume(base_url, alice, r.name, {"X": [1.0, 2.0]}).json()
    assert small["success"] is True and small["outputParameters"]["outputData"]["Y"] == 12.0
    big = consume(base_url, alice, r.name, {"X": [1.0] * 100_000})
    assert big.status_code == 200
    assert big.json()["success"] is False
    assert "WORKER_MEMORY_MB" in big.json()["errorMessage"]
    assert "onnxruntime_src" not in big.text
    again = consume(base_url, alice, r.name, {"X": [1.0, 2.0]}).json()
    assert again["success"] is True


def test_bad_input_data_is_a_400_naming_the_column(base_url, alice):
    r = publish(base_url, alice, onnx_bytes())
    name = r.name
    bad = consume(base_url, alice, name, {**columns(X.iloc[:1]), COLUMNS[0]: ["five"]})
    assert bad.status_code == 400 and COLUMNS[0] in bad.json()["message"]
    narrow = consume(base_url, alice, name, columns(X.iloc[:1, :2]))
    assert narrow.status_code == 400 and "4 columns" in narrow.json()["message"]
    assert consume(base_url, alice, name, {}).status_code == 400
    r = requests.post(f"{base_url}/api/{name}/v1", json={"inputData": 3}, headers=alice)
    assert r.status_code == 400


def test_patch_changes_model_and_fields_and_kinds_do_not_mix(base_url, alice, bob):
    r = publish(base_url, alice, onnx_bytes())
    name = r.name
    url = f"{base_url}/realtime-services/{name}/v1"
    p = requests.patch(url, data={"description": "new words"}, files={"unused": ("", b"")}, headers=alice)
    assert p.status_code == 400  # only the file 'model' is read
    p = requests.patch(url, data={"description": "new words"}, files={"model": ("model", onnx_bytes())}, headers=alice)
    assert p.status_code == 200, p.text
    # a new model scores at once
    regression = LinearRegression().fit(X, Y)
    p = requests.patch(url, files={"model": ("model", pickle.dumps(regression))}, headers=alice)
    assert p.status_code == 200, p.text
    svc = requests.get(f"{base_url}/services/{name}/v1", headers=alice).json()[0]
    assert svc["description"] == "new words"
    # If-Match holds for realtime versions too: a stale tag is refused, the current one applies
    stale = p.headers["ETag"]
    assert requests.patch(url, data={"description": "newer"}, files={"model": ("model", onnx_bytes())},
                          headers=alice).status_code == 200
    p = requests.patch(url, data={"description": "lost"}, files={"model": ("model", onnx_bytes())},
                       headers={**alice, "If-Match": stale})
    assert p.status_code == 412, p.text
    current = requests.get(f"{base_url}/services/{name}/v1", headers=alice).headers["ETag"]
    p = requests.patch(url, data={"description": "new words"}, files={"model": ("model", pickle.dumps(regression))},
                       headers={**alice, "If-Match": current})
    assert p.status_code == 200, p.text
    out = consume(base_url, alice, name, columns(X.iloc[:1])).json()
    assert "variable" in out["outputParameters"]["outputData"]

    assert requests.patch(url, files={"model": ("model", onnx_bytes())}, headers=bob).status_code == 403
    standard = requests.patch(f"{base_url}/services/{name}/v1", json={"code": "x = 1"}, headers=alice)
    assert standard.status_code == 409 and "/realtime-services/" in standard.json()["message"]
    code_svc = "svc" + uuid.uuid4().hex[:8]
    assert requests.post(f"{base_url}/services/{code_svc}/v1", json={"code": "x = 1", "runtimeType": "Python"},
                         headers=alice).status_code == 201
    wrong = requests.patch(f"{base_url}/realtime-services/{code_svc}/v1", files={"model": ("model", onnx_bytes())},
                           headers=alice)
    assert wrong.status_code == 409 and "standard Python service" in wrong.json()["message"]


def test_publish_rules_are_those_of_any_service(base_url, alice, bob, rita):
    r = publish(base_url, alice, onnx_bytes())
    assert publish(base_url, alice, onnx_bytes(), name=r.name).status_code == 409
    assert publish(base_url, bob, onnx_bytes(), name=r.name, version="v2").status_code == 403
    assert publish(base_url, rita, onnx_bytes()).status_code == 403
    json_body = requests.post(f"{base_url}/realtime-services/x{uuid.uuid4().hex[:6]}/v1", json={"model": "x"},
                              headers=alice)
    assert json_body.status_code == 415
    as_text = requests.post(f"{base_url}/realtime-services/x{uuid.uuid4().hex[:6]}/v1",
                            files={"model": (None, "not a file part")}, headers=alice)
    assert as_text.status_code == 400 and "file part" in as_text.json()["message"]
    no_file = requests.post(f"{base_url}/realtime-services/x{uuid.uuid4().hex[:6]}/v1", files={"x": ("x", b"1")},
                            data={"description": "d"}, headers=alice)
    assert no_file.status_code == 400
    extra = publish(base_url, alice, onnx_bytes(), code="print(1)")
    assert extra.status_code == 400 and "'code'" in extra.json()["message"]

    dev = publish(base_url, alice, onnx_bytes(), version=None)
    assert dev.status_code == 201
    version = dev.json()
    assert consume(base_url, alice, dev.name, columns(X.iloc[:1]), version).json()["success"] is True
    assert consume(base_url, bob, dev.name, columns(X.iloc[:1]), version).status_code == 404

    doc = requests.get(f"{base_url}/api/{r.name}/v1/swagger.json", headers=alice).json()
    assert "inputData" in str(doc) and "outputData" in str(doc)
    assert requests.delete(f"{base_url}/services/{r.name}/v1", headers=alice).status_code == 200
    assert consume(base_url, alice, r.name, columns(X.iloc[:1])).status_code == 404


def test_large_bodies_are_read_off_the_event_loop_and_answered_the_same(base_url, alice):
    r = publish(base_url, alice, onnx_bytes())
    many = pd.concat([X] * 200)  # 30,000 rows: a body of ~1 MB
    out = consume(base_url, alice, r.name, columns(many))
    assert out.status_code == 200 and len(out.json()["outputParameters"]["outputData"]["label"]) == 30_000
    bad = requests.post(f"{base_url}/api/{r.name}/v1", data=b"{" + b" " * 100_000,
                        headers={**alice, "Content-Type": "application/json"})
    assert bad.status_code == 400 and "JSON" in bad.json()["message"]
