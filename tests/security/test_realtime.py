"""Crafted realtime models and inputs, from an attacker round: a model that crashes onnxruntime,
runs for hours, allocates outside its arena or answers hundreds of megabytes costs its own calls
only; the API process and other users' calls go on."""
from __future__ import annotations

import pickle
import threading
import time
import uuid

import numpy as np
import pytest
import requests
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from tests.e2e.helpers import publish as publish_standard

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]


def _model(nodes, inputs, outputs, inits=(), ml=True) -> bytes:
    g = h.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    ops = [h.make_opsetid("", 17)] + ([h.make_opsetid("ai.onnx.ml", 3)] if ml else [])
    return h.make_model(g, opset_imports=ops, ir_version=8).SerializeToString()


def _expand(inits: list, nodes: list, expand: int) -> str:
    """Each input row becomes `expand` rows (broadcast with constants, reshaped by a constant)."""
    inits += [numpy_helper.from_array(np.zeros((1, expand), np.float32), "Z"),
              numpy_helper.from_array(np.array([-1, 1], np.int64), "S")]
    nodes += [h.make_node("Add", ["X", "Z"], ["XZ"]), h.make_node("Reshape", ["XZ", "S"], ["XR"])]
    return "XR"


def chain_forest(trees: int, depth: int, expand: int = 0) -> bytes:
    """Trees that are chains of `depth` nodes: every row walks every node."""
    tid, nid, modes, vals, tr, fa, tw_t, tw_n = [], [], [], [], [], [], [], []
    for t in range(trees):
        tid += [t] * (depth + 2)
        nid += list(range(depth + 2))
        modes += ["BRANCH_GT"] * depth + ["LEAF", "LEAF"]
        vals += [1e30] * depth + [0.0, 0.0]
        fa += list(range(1, depth + 1)) + [0, 0]
        tr += [depth + 1] * depth + [0, 0]
        tw_t += [t, t]
        tw_n += [depth, depth + 1]
    nodes, inits = [], []
    src = _expand(inits, nodes, expand) if expand else "X"
    nodes.append(h.make_node("TreeEnsembleRegressor", [src], ["T"], domain="ai.onnx.ml", n_targets=1,
                             nodes_treeids=tid, nodes_nodeids=nid, nodes_featureids=[0] * len(nid),
                             nodes_modes=modes, nodes_values=vals, nodes_truenodeids=tr, nodes_falsenodeids=fa,
                             target_ids=[0] * len(tw_t), target_nodeids=tw_n, target_treeids=tw_t,
                             target_weights=[1.0, 2.0] * trees))
    nodes.append(h.make_node("ReduceSum", ["T"], ["Y"], keepdims=1))
    return _model(nodes, [h.make_tensor_value_info("X", T.FLOAT, [None, 1])],
                  [h.make_tensor_value_info("Y", T.FLOAT, [1, 1])], inits)


def string_gather(size_mb: int, expand: int) -> bytes:
    """A long string constant copied once per index: string bytes live outside any arena."""
    inits = [numpy_helper.from_array(np.array(["A" * (size_mb * 2**20)], dtype=object), "S"),
             numpy_helper.from_array(np.zeros((1, expand), np.int64), "Z"),
             numpy_helper.from_array(np.array([-1], np.int64), "R")]
    nodes = [h.make_node("Add", ["I", "Z"], ["IZ"]), h.make_node("Reshape", ["IZ", "R"], ["IR"]),
             h.make_node("Gather", ["S", "IR"], ["Y"], axis=0)]
    return _model(nodes, [h.make_tensor_value_info("I", T.INT64, [None, 1])],
                  [h.make_tensor_value_info("Y", T.STRING, [None])], inits, ml=False)


def wide_output(n: int) -> bytes:
    """n*n floats out per input row."""
    inits = [numpy_helper.from_array(np.zeros((1, n), np.float32), "Z1"),
             numpy_helper.from_array(np.zeros((1, n), np.float32), "Z2"),
             numpy_helper.from_array(np.array([-1, 1], np.int64), "S"),
             numpy_helper.from_array(np.array([-1], np.int64), "F")]
    nodes = [h.make_node("Add", ["X", "Z1"], ["A"]), h.make_node("Reshape", ["A", "S"], ["B"]),
             h.make_node("Add", ["B", "Z2"], ["C"]), h.make_node("Reshape", ["C", "F"], ["Y"])]
    return _model(nodes, [h.make_tensor_value_info("X", T.FLOAT, [None, 1])],
                  [h.make_tensor_value_info("Y", T.FLOAT, [None])], inits, ml=False)


def publish(host, headers, model: bytes, name: str | None = None) -> requests.Response:
    name = name or "rt" + uuid.uuid4().hex[:8]
    r = requests.post(f"{host.url}/realtime-services/{name}/v1", files={"model": ("m", model)}, headers=headers,
                      timeout=120)
    r.name = name
    return r


def consume(host, headers, name, data, timeout=60) -> requests.Response:
    return requests.post(f"{host.url}/api/{name}/v1", json={"inputData": data}, headers=headers, timeout=timeout)


@pytest.fixture(scope="module")
def bystander(host, bob):
    """Bob's standard service, consumed while the attacks run."""
    name = publish_standard(host.url, bob, "y = x + 1", inputs=[{"name": "x", "type": "numeric"}],
                            outputs=[{"name": "y", "type": "numeric"}])
    return lambda: requests.post(f"{host.url}/api/{name}/v1", json={"x": 1}, headers=bob, timeout=10).json()


def test_a_model_that_crashes_onnxruntime_on_load_is_refused_and_the_api_lives(host, alice, bob, bystander):
    before = host.rss_mb()
    r = publish(host, alice, chain_forest(1, 60_000))  # overflowed onnxruntime's stack in the API process
    assert r.status_code in (201, 400), r.text
    assert host.healthy(bob) and bystander()["outputParameters"] == {"y": 2.0}
    if r.status_code == 201:
        out = consume(host, alice, r.name, {"X": [0.0]}).json()
        assert host.healthy(bob) and "success" in out
    assert host.rss_mb() - before < 200


def test_a_model_that_runs_for_hours_is_stopped_at_the_timeout(host, alice, bob, bystander):
    r = publish(host, alice, chain_forest(20, 5_000, expand=500))
    assert r.status_code == 201, r.text
    done = {}
    t = threading.Thread(target=lambda: done.update(consume(host, alice, r.name, {"X": [0.0] * 4000}).json()))
    t.start()
    time.sleep(0.5)
    started = time.monotonic()
    assert bystander()["outputParameters"] == {"y": 2.0} and host.healthy(bob)
    assert time.monotonic() - started < 5
    t.join(30)
    assert done["success"] is False and "did not answer within 3 seconds" in done["errorMessage"]


def test_memory_outside_onnxruntimes_arena_is_bounded_by_the_worker(host, alice, bob, bystander):
    before = host.rss_mb()
    r = publish(host, alice, string_gather(1, 1000))
    assert r.status_code == 201, r.text
    out = consume(host, alice, r.name, {"I": [0, 0, 0, 0, 0]})  # 5,000 copies of 1 MB
    assert out.status_code == 200 and out.json()["success"] is False
    assert "Traceback" not in out.text
    assert host.rss_mb() - before < 200
    assert bystander()["outputParameters"] == {"y": 2.0}


def test_a_huge_reply_is_refused_by_the_worker_not_built_by_the_host(host, alice, bystander):
    before = host.rss_mb()
    r = publish(host, alice, wide_output(2048))
    assert r.status_code == 201, r.text
    out = consume(host, alice, r.name, {"X": [0.0] * 20})  # 80 million floats
    assert out.status_code == 200 and out.json()["success"] is False
    assert host.rss_mb() - before < 300
    assert bystander()["outputParameters"] == {"y": 2.0}


def test_row_objects_with_very_many_keys_cost_linear_time(host, bob):
    r = publish(host, bob, _model([h.make_node("Relu", ["X"], ["Y"])],
                                  [h.make_tensor_value_info("X", T.FLOAT, [None, 2])],
                                  [h.make_tensor_value_info("Y", T.FLOAT, [None, 2])], ml=False))
    assert r.status_code == 201, r.text
    wide = [{f"k{i}": 0 for i in range(300_000)}]  # quadratic: hours of CPU
    out = consume(host, bob, r.name, wide, timeout=30)
    assert out.status_code == 400 and "2 columns" in out.json()["message"]


def test_pickles_are_checked_one_per_user_and_two_at_a_time(host, alice, bob):
    class Slow:
        def __reduce__(self):
            return (time.sleep, (2.5,))

    model = pickle.dumps(Slow())
    answers: dict[str, list[int]] = {"alice": [], "bob": []}
    threads = [threading.Thread(target=lambda who=who, hdr=hdr: answers[who].append(publish(host, hdr, model).status_code))
               for who, hdr in (("alice", alice), ("bob", bob)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(answers["alice"]) == [400, 503] and sorted(answers["bob"]) == [400, 503]


def test_sparse_indices_in_external_files_are_refused(host, alice):
    values = numpy_helper.from_array(np.ones(2, np.float32), "V")
    indices = numpy_helper.from_array(np.array([0, 1], np.int64), "I")
    indices.ClearField("raw_data")
    indices.data_location = T.EXTERNAL
    entry = indices.external_data.add()
    entry.key, entry.value = "location", "local.settings.json"
    sparse = h.make_sparse_tensor(values, indices, [4])
    g = h.make_graph([h.make_node("Add", ["X", "C"], ["Y"])], "g",
                     [h.make_tensor_value_info("X", T.FLOAT, [None, 4])],
                     [h.make_tensor_value_info("Y", T.FLOAT, [None, 4])], sparse_initializer=[sparse])
    g.node.insert(0, h.make_node("Constant", [], ["C"], sparse_value=sparse))
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17)]).SerializeToString()
    r = publish(host, alice, model)
    assert r.status_code == 400 and "external files" in r.json()["message"]


def test_huge_integers_are_a_400_and_cost_no_worker(host, alice, bob):
    huge = "1" + "0" * 400
    std = publish_standard(host.url, alice, "y = x * 2", inputs=[{"name": "x", "type": "numeric"}],
                           outputs=[{"name": "y", "type": "numeric"}])
    for name, body in ((std, '{"x": %s}' % huge),):
        r = requests.post(f"{host.url}/api/{name}/v1", data=body, headers={**bob, "Content-Type": "application/json"})
        assert r.status_code == 400 and "'x'" in r.json()["message"]
    for elem in (T.INT64, T.FLOAT):
        rt = publish(host, alice, _model([h.make_node("Identity", ["x"], ["y"])],
                                         [h.make_tensor_value_info("x", elem, [None, 1])],
                                         [h.make_tensor_value_info("y", elem, [None, 1])], ml=False))
        assert rt.status_code == 201, rt.text
        r = requests.post(f"{host.url}/api/{rt.name}/v1", data='{"inputData": {"x": [%s]}}' % huge,
                          headers={**bob, "Content-Type": "application/json"})
        assert r.status_code == 400 and "column 'x'" in r.json()["message"]
        assert consume(host, bob, rt.name, {"x": [2]}).json()["outputParameters"]["outputData"]["y"] == [2]


def _pickled_call(func: str, *args) -> bytes:
    """A pickle that calls `func(*args)` when loaded (by the converting worker)."""
    class Call:
        def __reduce__(self):
            return (eval, (f"{func}(*{args!r})",))

    return pickle.dumps(Call())


def test_a_pickle_sent_as_a_model_cannot_read_the_apps_secrets(host, alice, app_sentinel):
    for attempt in (_pickled_call("(lambda path: open(path).read())", app_sentinel),
                    _pickled_call("__import__('os').environ.copy")):
        r = publish(host, alice, attempt)
        assert r.status_code == 400
        assert "SENTINEL-SECRET" not in r.text and "SIGNING_KEY" not in r.text and "AccountKey" not in r.text


def test_a_pickle_cannot_reach_the_network_or_outlive_the_timeout(host, alice):
    port = int(host.url.rsplit(":", 1)[1])
    r = publish(host, alice, _pickled_call("__import__('socket').create_connection", ("127.0.0.1", port)))
    assert r.status_code == 400 and "PermissionError" in r.json()["message"]  # the connect itself was refused
    marker = "1234.5678"
    started = time.monotonic()
    r = publish(host, alice, _pickled_call("__import__('subprocess').run",
                                           ["sh", "-c", f"sleep {marker}"]))
    assert r.status_code == 400 and "EXECUTION_TIMEOUT_SECONDS" in r.json()["message"]
    assert time.monotonic() - started < 15
    from tests.security.conftest import gone
    assert gone(marker, within=5)
