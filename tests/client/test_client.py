"""The o16n package (the SDK side) against the real app on the local host and Azurite."""
from __future__ import annotations

import io
import json
import os
import stat
import time
import uuid
import zipfile

import pytest
import requests
from sklearn import datasets, svm

import o16n
from o16n import (AccessTokenCredential, ClientAuthenticationError, DeployClient, HttpResponseError, O16nClient,
                  PasswordCredential, ResourceNotFoundError)
from tests.client.conftest import PASSWORDS

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]

NAMES = {0: "I. setosa", 1: "I. versicolor", 2: "I. virginica"}


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def iris_model():
    iris = datasets.load_iris()
    return svm.SVC().fit(iris.data, iris.target)


@pytest.fixture
def alice(server) -> O16nClient:
    return O16nClient(server, PasswordCredential("alice", PASSWORDS["alice"]))


# what the service runs: defined once per worker (with init), called per request
def predict(flower):
    return [names[int(x)] for x in clf.predict([flower])]  # noqa: F821 - clf comes from the snapshot


def load():
    global names
    names = {0: "I. setosa", 1: "I. versicolor", 2: "I. virginica"}


def add(x, y):
    print(f"adding {x} and {y}")
    return x + y, x * y


def test_the_fluent_api_publishes_calls_lists_updates_and_deletes(alice, iris_model):
    name = unique("Iris")
    svc = (alice.service(name).version("1.0").code_fn(predict, load).inputs(flower=list).outputs(species=list)
           .models(clf=iris_model).description("iris, from the client").deploy())
    assert (svc.name, svc.version, svc.operation_id, svc.published_by) == (name, "1.0", "predict", "alice")
    assert [(p.name, p.type) for p in svc.inputs] == [("flower", "vector")]
    assert svc.predict([7, 3.2, 4.7, 1.4]).output("species") == ["I. versicolor"]   # the operationId's method
    assert svc.consume(flower=[5.1, 3.5, 1.4, 0.2]).outputs == {"species": ["I. setosa"]}
    assert alice.list_snapshots() == [] or all(s.name != f"{name} 1.0" for s in alice.list_snapshots())

    swagger = svc.swagger()
    assert swagger["paths"][f"/api/{name}/1.0"]["post"]["operationId"] == "predict"
    caps = svc.capabilities()
    assert caps["inputs"] == {"flower": "vector"} and caps["swagger"].endswith(f"/api/{name}/1.0/swagger.json")

    assert [s.version for s in alice.list_services(name)] == ["1.0"]
    assert name in {s.name for s in alice.list_services()}
    assert alice.get_service(name).version == "1.0"

    updated = alice.service(name).version("1.0").description("iris, updated").redeploy()
    assert updated.description == "iris, updated" and [p.name for p in updated.inputs] == ["flower"]
    assert updated.predict([7, 3.2, 4.7, 1.4]).output("species") == ["I. versicolor"]  # models kept

    alice.delete_service(name, version="1.0")
    alice.delete_service(name, version="1.0")  # already gone: still fine
    with pytest.raises(ResourceNotFoundError) as caught:
        alice.get_service(name, version="1.0")
    assert caught.value.status_code == 404 and caught.value.correlation_id and name in caught.value.message


def test_several_outputs_console_output_and_a_guid_version(alice):
    name = unique("Add")
    svc = alice.service(name).code_fn(add).inputs(x=float, y=float).outputs(total=float, product=float).deploy()
    uuid.UUID(svc.version)  # no version given: the server made one
    answer = svc.add(2, 3.5)
    assert answer.success and answer.outputs == {"total": 5.5, "product": 7.0}
    assert answer.console_output == "adding 2.0 and 3.5\n"
    with pytest.raises(TypeError, match="no input 'z'"):
        svc.add(1, z=2)


def test_server_errors_carry_the_message_code_and_correlation_id(alice):
    name = unique("Typed")
    svc = alice.service(name).version("v1").code_str("y = x * 2").inputs(x=float).outputs(y=float).deploy()
    with pytest.raises(HttpResponseError) as caught:
        svc.consume(x="not a number")
    err = caught.value
    assert err.status_code == 400 and "x" in err.message and err.error_code and err.correlation_id
    assert str(err).startswith("(400) ")
    failing = alice.service(unique("Fails")).version("v1").code_str("raise ValueError('no luck')") \
        .outputs(y=float).deploy()
    answer = failing.consume()
    assert not answer.success and "no luck" in answer.error
    with pytest.raises(o16n.ServiceError, match="no luck"):
        answer.raise_for_error()


def test_a_reader_is_refused_with_the_servers_reason(server):
    rita = O16nClient(server, PasswordCredential("rita", PASSWORDS["rita"]))
    with pytest.raises(HttpResponseError) as caught:
        rita.service(unique("Nope")).version("1").code_str("y = 1").deploy()
    assert caught.value.status_code == 403 and caught.value.message


def test_realtime_services_from_a_scikit_learn_estimator_and_from_onnx(alice, iris_model):
    from sklearn.linear_model import LogisticRegression
    from skl2onnx import to_onnx
    import numpy as np

    iris = datasets.load_iris()
    model = LogisticRegression(max_iter=500).fit(iris.data.astype(np.float32), iris.target)
    from_sklearn = alice.realtime_service(unique("RtSk")).version("1").serialized_model(model).deploy()
    assert from_sklearn.runtime_type == "Realtime"
    onnx_model = to_onnx(model, iris.data[:1].astype(np.float32), options={id(model): {"zipmap": False}})
    from_onnx = alice.realtime_service(unique("RtOnnx")).version("1").serialized_model(onnx_model) \
        .description("onnx").deploy()
    for svc in (from_sklearn, from_onnx):
        flower = {"sepal length": [7.0], "sepal width": [3.2], "petal length": [4.7], "petal width": [1.4]}
        answer = svc.consume(inputData=flower).raise_for_error()
        labels = next(v for k, v in answer.raw_outputs["outputData"].items() if "label" in k)
        assert labels == [1]


def test_sessions_objects_files_snapshots(alice, tmp_path):
    with alice.create_session(name="client test") as session:
        result = session.execute("z = x + 1\nprint('hi')", inputs={"x": 41}, outputs=["z"])
        assert result.success and result.outputs == {"z": 42} and result.console_output == "hi\n"
        session.set_object("model", {"weights": [1, 2, 3]})
        assert "model" in session.list_objects() and session.get_object("model") == {"weights": [1, 2, 3]}
        (tmp_path / "data.csv").write_text("a,b\n1,2\n")
        session.upload_file(tmp_path / "data.csv")
        assert "data.csv" in session.list_files() and session.get_file("data.csv") == b"a,b\n1,2\n"
        snap = session.snapshot("client snapshot")
        assert "z = x + 1\nprint('hi')" in session.history()
        session.delete_file("data.csv")
        session.delete_object("model")
        assert "model" not in session.list_objects()
    assert session.id not in {s["id"] for s in alice.list_sessions()}
    assert snap.id in {s.id for s in alice.list_snapshots()}
    with zipfile.ZipFile(io.BytesIO(alice.get_snapshot_content(snap.id))) as z:
        assert z.namelist()
    with alice.create_session(snapshot_id=snap.id) as again:
        assert again.get_object("model") == {"weights": [1, 2, 3]}
    alice.delete_snapshot(snap.id)
    alice.delete_snapshot(snap.id)  # already gone: still fine
    assert snap.id not in {s.id for s in alice.list_snapshots()}


def test_batch_from_records_in_input_order(alice):
    svc = alice.service(unique("Batch")).version("1").code_fn(add).inputs(x=float, y=float) \
        .outputs(total=float, product=float).deploy()
    records = [{"y": float(i), "x": 1.0} for i in range(12)]
    batch = svc.batch(records, parallel_count=3).start()
    assert batch.execution_id in svc.list_batch_executions()
    seen = []
    result = batch.wait(poll_seconds=0.3, timeout=120, progress=lambda r: seen.append(r.state))
    assert result.state == "Complete" and result.total_item_count == 12 and seen
    assert [r.output("total") for r in result] == [1.0 + i for i in range(12)]
    again = svc.get_batch(batch.execution_id).results()
    assert again.completed_item_count == 12
    batch.cancel()
    with pytest.raises(ResourceNotFoundError):
        batch.results()
    with pytest.raises(ValueError, match="at least one record"):
        svc.batch([])


def test_password_sign_in_renews_before_expiry_and_keeps_no_password(server, tmp_path):
    cache = tmp_path / "cfg" / "tokens.json"
    cred = PasswordCredential("bob", PASSWORDS["bob"], cache_path=cache)
    client = O16nClient(server, cred)
    client.list_services()
    kept = json.loads(cache.read_text())
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600 and stat.S_IMODE(os.stat(cache.parent).st_mode) == 0o700
    assert PASSWORDS["bob"] not in cache.read_text()

    # a new process, without the password: the refresh token carries on, and renews when near expiry
    kept["expires_on"] = int(time.time()) + 5
    cache.write_text(json.dumps(kept))
    later = O16nClient(server, PasswordCredential("bob", cache_path=cache))
    later.list_services()
    renewed = json.loads(cache.read_text())
    assert renewed["access_token"] != kept["access_token"] and renewed["refresh_token"] != kept["refresh_token"]
    old = requests.post(f"{server}/login/refreshToken", json={"refreshToken": kept["refresh_token"]})
    assert old.status_code == 401  # renewal spent the old pair

    later.sign_out()
    assert not cache.exists()
    revoked = requests.post(f"{server}/login/refreshToken", json={"refreshToken": renewed["refresh_token"]})
    assert revoked.status_code == 401
    with pytest.raises(ClientAuthenticationError, match="sign in"):
        O16nClient(server, PasswordCredential("bob", cache_path=cache)).list_services()


def test_a_token_file_others_can_read_is_refused(server, tmp_path):
    cache = tmp_path / "tokens.json"
    O16nClient(server, PasswordCredential("bob", PASSWORDS["bob"], cache_path=cache)).list_services()
    os.chmod(cache, 0o644)
    with pytest.raises(o16n.O16nError, match="readable by others"):
        PasswordCredential("bob", cache_path=cache)


def test_a_token_given_as_is_and_ml_servers_constructor(server):
    token = requests.post(f"{server}/login", json={"username": "alice", "password": PASSWORDS["alice"]}).json()
    assert O16nClient(server, AccessTokenCredential(token["access_token"])).list_services() is not None
    assert DeployClient(server, auth=token["access_token"]).list_services() is not None
    assert DeployClient(server, use="MLServer", auth=("alice", PASSWORDS["alice"])).list_services() is not None
    with pytest.raises(ClientAuthenticationError) as caught:
        O16nClient(server, AccessTokenCredential("not-a-token")).list_services()
    assert caught.value.status_code == 401
    with pytest.raises(ClientAuthenticationError):
        O16nClient(server, PasswordCredential("alice", "wrong password")).list_services()


def test_client_side_checks_name_the_problem(alice):
    with pytest.raises(ValueError, match="name"):
        alice.service("")
    with pytest.raises(ValueError, match="not a parameter type"):
        alice.service("X").inputs(x=dict)
    with pytest.raises(ValueError, match="missing \\['y'\\]"):
        alice.service("X").version("1").code_fn(add).inputs(x=float).outputs(total=float)._request(True)
    with pytest.raises(ValueError, match="endpoint"):
        O16nClient("localhost:12800", None)


def test_processes_sharing_a_sign_in_renew_it_once(server, tmp_path):
    """Renewal spends the refresh token: two CLI processes renewing at once must not sign each other out."""
    from concurrent.futures import ThreadPoolExecutor

    cache = tmp_path / "tokens.json"
    O16nClient(server, PasswordCredential("bob", PASSWORDS["bob"], cache_path=cache)).list_services()
    kept = json.loads(cache.read_text())
    kept["expires_on"] = int(time.time()) + 5
    cache.write_text(json.dumps(kept))

    def one(_):  # each its own credential, as separate processes would have, sharing only the file
        return O16nClient(server, PasswordCredential("bob", cache_path=cache)).list_services() is not None
    with ThreadPoolExecutor(6) as pool:
        assert all(pool.map(one, range(6)))
    assert json.loads(cache.read_text())["refresh_token"] != kept["refresh_token"]
