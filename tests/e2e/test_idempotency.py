"""Idempotency-Key: a publish or snapshot retried with the key of an attempt whose answer never
arrived (the client's connection cut, or storage failing under the server) ends with one service
or snapshot and no blob that nothing points at."""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from urllib.parse import urlparse

import pytest
import requests
from azure.storage.blob import ContainerClient

from tests.constants import USERS
from tests.e2e.helpers import execute, new_session

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]

IO = {"inputParameterDefinitions": [{"name": "x", "type": "numeric"}],
      "outputParameterDefinitions": [{"name": "y", "type": "numeric"}]}


def _key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def _blobs(storage, prefix: str) -> list[str]:
    """What storage holds under `prefix` (read straight from Azurite: the orphans are invisible
    through the API by nature)."""
    container = f"{os.environ['STORAGE_PREFIX'].lower()}-data"
    client = ContainerClient.from_connection_string(storage.connection_string, container)
    return list(client.list_blob_names(name_starts_with=prefix))


def _cut_client_side(url: str, path: str, headers: dict, body: bytes) -> None:
    """Send a request and hang up before its answer, as a client whose connection dropped."""
    u = urlparse(url)
    with socket.create_connection((u.hostname, u.port)) as s:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\n{head}\r\n".encode() + body)


def _snapshot_of(host: str, alice: dict) -> str:
    sid = new_session(host, alice)
    execute(host, alice, sid, "import numpy as np\nw = np.arange(1000)\nbias = 41")
    r = requests.post(f"{host}/sessions/{sid}/snapshot", json={"name": "s"}, headers=alice, timeout=60)
    assert r.status_code == 201, r.text
    return r.json()["snapshotId"]


def test_a_publish_whose_answer_was_lost_to_the_client_is_answered_again_not_repeated(flaky_host, flaky_alice):
    host, alice = flaky_host, flaky_alice
    name = "idem" + uuid.uuid4().hex[:6]
    key = _key()
    body = {"code": "y = x + 1", "runtimeType": "Python", **IO}
    _cut_client_side(host, f"/services/{name}", {**alice, **key}, json.dumps(body).encode())
    time.sleep(2)  # the server goes on with the publish the client stopped waiting for
    again = requests.post(f"{host}/services/{name}", json=body, headers={**alice, **key}, timeout=60)
    assert again.status_code == 201, again.text
    versions = requests.get(f"{host}/services/{name}", headers=alice, timeout=60).json()
    assert [v["version"] for v in versions] == [again.json()]  # one development version, not two
    # the same key with another request is refused; a new key publishes another version
    other = requests.post(f"{host}/services/{name}", json={**body, "code": "y = 0"}, headers={**alice, **key})
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["message"], other.text
    assert requests.post(f"{host}/services/{name}", json=body, headers={**alice, **_key()}).status_code == 201
    assert len(requests.get(f"{host}/services/{name}", headers=alice, timeout=60).json()) == 2


@pytest.mark.parametrize("cut", ["answers", "requests"])
def test_a_publish_that_failed_with_storage_is_whole_after_its_retry_with_no_orphan(flaky_host, flaky_storage,
                                                                                   flaky_alice, cut):
    host, storage, alice = flaky_host, flaky_storage, flaky_alice
    snap = _snapshot_of(host, alice)
    name, key = "idem" + uuid.uuid4().hex[:6], _key()
    body = {"code": "y = x + bias", "runtimeType": "Python", "snapshotId": snap, **IO}
    getattr(storage, f"cut_{cut}")(100)
    try:
        first = requests.post(f"{host}/services/{name}/1.0", json=body, headers={**alice, **key}, timeout=60)
    finally:
        assert storage.calm() >= 1
    assert first.status_code == 503, first.text
    again = requests.post(f"{host}/services/{name}/1.0", json=body, headers={**alice, **key}, timeout=60)
    assert again.status_code == 201 and again.json() == "1.0", again.text
    assert requests.post(f"{host}/api/{name}/1.0", json={"x": 1}, headers=alice).json()["outputParameters"]["y"] == 42
    # a retry of the retry answers the same; without the key it is the usual 409
    assert requests.post(f"{host}/services/{name}/1.0", json=body, headers={**alice, **key}).status_code == 201
    assert requests.post(f"{host}/services/{name}/1.0", json=body, headers=alice).status_code == 409
    assert len(_blobs(storage, f"services/{name}/1.0/")) == 1


@pytest.mark.parametrize("cut", ["answers", "requests"])
def test_a_snapshot_that_failed_with_storage_is_one_snapshot_after_its_retry(flaky_host, flaky_storage,
                                                                             flaky_alice, cut):
    host, storage, alice = flaky_host, flaky_storage, flaky_alice
    sid = new_session(host, alice)
    execute(host, alice, sid, "import numpy as np\nw = np.arange(5000)")
    before = {s["id"] for s in requests.get(f"{host}/snapshots", headers=alice, timeout=60).json()}
    key = _key()
    getattr(storage, f"cut_{cut}")(100)
    try:
        first = requests.post(f"{host}/sessions/{sid}/snapshot", json={"name": "k"}, headers={**alice, **key})
    finally:
        assert storage.calm() >= 1
    assert first.status_code == 503, first.text
    again = requests.post(f"{host}/sessions/{sid}/snapshot", json={"name": "k"}, headers={**alice, **key})
    assert again.status_code == 201, again.text
    snap = again.json()["snapshotId"]
    after = {s["id"] for s in requests.get(f"{host}/snapshots", headers=alice, timeout=60).json()}
    assert after - before == {snap}
    assert requests.get(f"{host}/snapshots/{snap}", headers=alice, timeout=60).status_code == 200
    assert len(_blobs(storage, f"snapshots/{snap}/")) == 1
    r = requests.post(f"{host}/sessions/{sid}/snapshot", json={"name": "k"}, headers={**alice, **key})
    assert r.status_code == 201 and r.json()["snapshotId"] == snap
    r = requests.post(f"{host}/sessions/{sid}/snapshot", json={"name": "other"}, headers={**alice, **key})
    assert r.status_code == 422


def test_keys_are_the_callers_own_and_must_be_visible_ascii(flaky_host, flaky_alice):
    host, alice = flaky_host, flaky_alice
    bob = requests.post(f"{host}/login", json={"username": "bob", "password": USERS["bob"]}, timeout=30)
    bob = {"Authorization": f"Bearer {bob.json()['access_token']}"}
    sid_a, sid_b = new_session(host, alice), new_session(host, bob)
    key = _key()
    a = requests.post(f"{host}/sessions/{sid_a}/snapshot", json={}, headers={**alice, **key})
    b = requests.post(f"{host}/sessions/{sid_b}/snapshot", json={}, headers={**bob, **key})
    assert a.status_code == b.status_code == 201 and a.json() != b.json()  # one key, two callers, two snapshots
    for bad in ("", "x" * 201, "caf\u00e9".encode().decode("latin-1"), "a b"):
        r = requests.post(f"{host}/sessions/{sid_a}/snapshot", json={}, headers={**alice, "Idempotency-Key": bad})
        assert r.status_code == 400 and "Idempotency-Key" in r.json()["message"], (bad, r.text)


def test_blobs_of_an_attempt_that_never_committed_are_removed_by_the_retry_that_does(flaky_host, flaky_storage,
                                                                                   flaky_alice):
    """The first attempt stores the workspace, then its row never reaches storage; the session
    changes before the retry, so the retry stores other bytes under another name."""
    host, storage, alice = flaky_host, flaky_storage, flaky_alice
    sid = new_session(host, alice)
    execute(host, alice, sid, "v = 1")
    assert requests.post(f"{host}/sessions/{sid}/snapshot", json={}, headers=alice).status_code == 201  # tables made
    key = _key()
    table = storage.proxies[1]
    table.cut_requests(100)
    try:
        first = requests.post(f"{host}/sessions/{sid}/snapshot", json={}, headers={**alice, **key})
    finally:
        assert table.cut >= 1
        table.calm()
    assert first.status_code == 503, first.text
    execute(host, alice, sid, "v = 2")
    again = requests.post(f"{host}/sessions/{sid}/snapshot", json={}, headers={**alice, **key})
    assert again.status_code == 201, again.text
    assert len(_blobs(storage, f"snapshots/{again.json()['snapshotId']}/")) == 1


def test_one_key_sent_at_once_with_different_requests_keeps_the_committed_one_whole(flaky_host, flaky_alice):
    """The requests differ (so all but one answer 422) but store the same bytes under the same
    name: a refused one must not delete what the committed one points at."""
    from concurrent.futures import ThreadPoolExecutor

    host, alice = flaky_host, flaky_alice
    snap = _snapshot_of(host, alice)
    name, key = "race" + uuid.uuid4().hex[:6], _key()

    def publish(i: int) -> requests.Response:
        return requests.post(f"{host}/services/{name}/1.0", headers={**alice, **key}, timeout=60,
                             json={"code": "y = x + bias", "runtimeType": "Python", "snapshotId": snap,
                                   "description": f"attempt {i}", **IO})

    with ThreadPoolExecutor(8) as pool:
        codes = sorted(r.status_code for r in pool.map(publish, range(8)))
    assert codes.count(201) >= 1 and set(codes) <= {201, 422}, codes
    r = requests.post(f"{host}/api/{name}/1.0", json={"x": 1}, headers=alice, timeout=60)
    assert r.status_code == 200 and r.json()["outputParameters"]["y"] == 42, r.text

    sid = new_session(host, alice)
    execute(host, alice, sid, "z = 5")
    key = _key()

    def snapshot(i: int) -> requests.Response:
        return requests.post(f"{host}/sessions/{sid}/snapshot", json={"name": f"n{i}"}, headers={**alice, **key})

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(snapshot, range(8)))
    made = {r.json()["snapshotId"] for r in replies if r.status_code == 201}
    assert len(made) == 1 and {r.status_code for r in replies} <= {201, 422}
    assert requests.get(f"{host}/snapshots/{made.pop()}", headers=alice, timeout=60).status_code == 200
