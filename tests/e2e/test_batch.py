"""Batch scoring (ML Server's /api/{name}/{version}/batch) through two local hosts sharing one
Azurite, each running the batch queue's function as Azure would."""
from __future__ import annotations

import os
import signal
import time
import uuid

import numpy as np
import pytest
import requests
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from tests.constants import ADMIN_PASSWORD, USERS
from tests.e2e.conftest import start_host, stop_host
from tests.e2e.helpers import execute, new_session, snapshot

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]

IRIS = load_iris()
SPECIES = ["I. setosa", "I. versicolor", "I. virginica"]
FEATURES = ("sl", "sw", "pl", "pw")
TRAIN = ("from sklearn.datasets import load_iris\nfrom sklearn.linear_model import LogisticRegression\n"
         "X, y = load_iris(return_X_y=True)\nmodel = LogisticRegression(max_iter=1000).fit(X, y)\n"
         f"names = {SPECIES!r}")
SCORE = "import numpy as np\nspecies = names[int(model.predict(np.array([[sl, sw, pl, pw]]))[0])]"
SLOW = "import time\ntime.sleep(pause)\ny = x * 2"


class Hosts:
    def __init__(self, prefix: str, urls: list[str], pids: list[int]) -> None:
        self.prefix, self.urls, self.pids = prefix, urls, pids
        self.url = urls[0]

    def login(self, user: str, url: str | None = None) -> dict[str, str]:
        password = ADMIN_PASSWORD if user == "admin" else USERS[user]
        r = requests.post(f"{url or self.url}/login", json={"username": user, "password": password}, timeout=30)
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture(scope="module")
def hosts(azurite):
    """Two hosts with a storage prefix (and so a batch queue) of their own: only they take its lanes."""
    prefix = "b" + uuid.uuid4().hex[:8]
    started = [start_host(STORAGE_PREFIX=prefix, DEVHOST_QUEUE_SHUTDOWN_SECONDS="3") for _ in range(2)]
    yield Hosts(prefix, [url for _, url in started], [proc.pid for proc, _ in started])
    for proc, _ in started:
        stop_host(proc)


@pytest.fixture(scope="module")
def alice(hosts):
    return hosts.login("alice")


def _publish(url: str, headers: dict, code: str, inputs: dict, outputs: dict, **extra) -> str:
    name = "b" + uuid.uuid4().hex[:8]
    body = {"code": code, "runtimeType": "Python",
            "inputParameterDefinitions": [{"name": n, "type": t} for n, t in inputs.items()],
            "outputParameterDefinitions": [{"name": n, "type": t} for n, t in outputs.items()], **extra}
    r = requests.post(f"{url}/services/{name}/1.0", json=body, headers=headers, timeout=120)
    assert r.status_code == 201, r.text
    return name


@pytest.fixture(scope="module")
def iris(hosts, alice):
    sid = new_session(hosts.url, alice)
    execute(hosts.url, alice, sid, TRAIN)
    return _publish(hosts.url, alice, SCORE, {n: "numeric" for n in FEATURES}, {"species": "character"},
                    snapshotId=snapshot(hosts.url, alice, sid))


@pytest.fixture(scope="module")
def slow(hosts, alice):
    """y = x * 2, after `pause` seconds: each record names itself in its answer."""
    return _publish(hosts.url, alice, SLOW, {"x": "numeric", "pause": "numeric"}, {"y": "numeric"})


def _start(url: str, headers: dict, name: str, records: list, parallel: int | None = None) -> str:
    query = f"?parallelCount={parallel}" if parallel else ""
    r = requests.post(f"{url}/api/{name}/1.0/batch{query}", json=records, headers=headers, timeout=120)
    assert r.status_code == 202, r.text
    assert r.json()["batchExecutionId"] == r.json()["BatchExecutionId"]
    return r.json()["batchExecutionId"]


def _status(url: str, headers: dict, name: str, bid: str, partial: bool = False) -> dict:
    r = requests.get(f"{url}/api/{name}/1.0/batch/{bid}?showPartialResults={str(partial).lower()}",
                     headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def _finished(url: str, headers: dict, name: str, bid: str, within: float = 180) -> dict:
    deadline = time.monotonic() + within
    while True:
        st = _status(url, headers, name, bid)
        if st["state"] in ("Complete", "Failed"):
            return st
        assert time.monotonic() < deadline, st
        time.sleep(0.5)


def _tables(azurite: str) -> TableServiceClient:
    return TableServiceClient.from_connection_string(azurite)


def _committers(azurite: str, prefix: str, bid: str) -> dict[str, int]:
    rows = _tables(azurite).get_table_client(f"{prefix}batchchunks").query_entities(
        "PartitionKey eq @b", parameters={"b": bid})
    by: dict[str, int] = {}
    for r in rows:
        if r["RowKey"].startswith("c-"):
            by[r["by"]] = by.get(r["by"], 0) + 1
    return by


def _blobs(azurite: str, prefix: str, bid: str) -> list[str]:
    container = BlobServiceClient.from_connection_string(azurite).get_container_client(f"{prefix}-data")
    return list(container.list_blob_names(name_starts_with=f"batches/{bid}/"))


def _slow_records(n: int, pause: float) -> list[dict]:
    return [{"x": float(i), "pause": pause} for i in range(n)]


def _each_record_once(results: list[dict], n: int) -> None:
    assert len(results) == n
    bad = [(i, r) for i, r in enumerate(results) if not r["success"] or r["outputParameters"]["y"] != 2 * i]
    assert not bad, bad[:3]


def test_ten_thousand_iris_rows_through_two_hosts_are_each_scored_right_once(hosts, alice, iris, azurite):
    rows = np.array([IRIS.data[i % 150] for i in range(10_000)]) + np.random.default_rng(7).normal(0, 0.3, (10_000, 4))
    records = [dict(zip(FEATURES, map(float, r))) for r in rows]
    expected = LogisticRegression(max_iter=1000).fit(IRIS.data, IRIS.target).predict(rows)
    bid = _start(hosts.url, alice, iris, records, parallel=8)
    st = _finished(hosts.urls[1], alice, iris, bid)  # either host answers for the batch
    assert (st["state"], st["completedItemCount"], st["totalItemCount"]) == ("Complete", 10_000, 10_000)
    got = [r["outputParameters"]["species"] for r in st["batchExecutionResults"]]
    assert got == [SPECIES[k] for k in expected]
    assert all(r["success"] for r in st["batchExecutionResults"])
    assert "I. versicolor" in got
    by = _committers(azurite, hosts.prefix, bid)
    assert len(by) == 2 and sum(by.values()) == 100, by  # both hosts took chunks; each chunk counted once
    assert bid in requests.get(f"{hosts.url}/api/{iris}/1.0/batch", headers=alice, timeout=60).json()


def test_partial_results_come_in_input_order_while_the_batch_runs(hosts, alice, slow):
    bid = _start(hosts.url, alice, slow, _slow_records(300, 0.01), parallel=1)
    assert _status(hosts.url, alice, slow, bid)["state"] in ("Pending", "InProgress")
    deadline = time.monotonic() + 60
    while True:
        st = _status(hosts.url, alice, slow, bid, partial=True)
        if 0 < st["completedItemCount"] < 300:
            break
        assert time.monotonic() < deadline and st["state"] != "Complete", st
        time.sleep(0.2)
    assert st["state"] == "InProgress"
    partial = st["batchExecutionResults"]
    assert 0 < len(partial) <= st["completedItemCount"]
    assert [r["outputParameters"]["y"] for r in partial] == [2 * i for i in range(len(partial))]
    assert _status(hosts.url, alice, slow, bid)["batchExecutionResults"] == []  # not partial: none until done
    _each_record_once(_finished(hosts.url, alice, slow, bid)["batchExecutionResults"], 300)


def _workers_of(host_pid: int) -> list[int]:
    """The host's sandbox workers: those forked by its templates, and those started cold."""
    from tests.security.conftest import children

    found = []
    for child in children(host_pid, "worker"):
        with open(f"/proc/{child}/cmdline", "rb") as f:
            template = b"--template" in f.read()
        found += children(child) if template else [child]
    return found


def test_a_worker_killed_mid_chunk_loses_and_duplicates_nothing(hosts, alice, slow):
    bid = _start(hosts.url, alice, slow, _slow_records(400, 0.02), parallel=2)
    killed = 0
    deadline = time.monotonic() + 60
    while killed < 3 and time.monotonic() < deadline:
        st = _status(hosts.url, alice, slow, bid)
        if st["state"] == "Complete":
            break
        if st["completedItemCount"] >= 50 * (killed + 1):
            for pid in hosts.pids:
                for w in _workers_of(pid):
                    try:
                        os.kill(w, signal.SIGKILL)
                        killed += 1
                    except ProcessLookupError:
                        pass
        time.sleep(0.3)
    assert killed >= 1, "no worker was killed: the test did not test"
    st = _finished(hosts.url, alice, slow, bid)
    assert st["state"] == "Complete" and st["completedItemCount"] == 400
    _each_record_once(st["batchExecutionResults"], 400)


def test_a_chunk_that_keeps_failing_ends_as_failed_rows_carrying_the_error(hosts, alice, slow, azurite):
    bid = _start(hosts.url, alice, slow, _slow_records(300, 0.02), parallel=1)
    # Chunk 2's stored records are damaged before its lane reaches it (chunk 0 alone takes 2 s).
    blob = BlobServiceClient.from_connection_string(azurite).get_blob_client(
        f"{hosts.prefix}-data", f"batches/{bid}/records/000002.json")
    blob.upload_blob(b"not json", overwrite=True)
    st = _finished(hosts.url, alice, slow, bid, within=240)
    assert st["state"] == "Failed" and st["completedItemCount"] == 300, st
    results = st["batchExecutionResults"]
    assert len(results) == 300
    assert all(r["success"] and r["outputParameters"]["y"] == 2 * i for i, r in enumerate(results) if i < 200)
    failed = results[200:300]
    assert all(not r["success"] and "could not be read" in r["errorMessage"] for r in failed), failed[0]


def test_a_cancelled_batch_stops_and_everything_it_stored_is_gone(hosts, alice, slow, azurite):
    bid = _start(hosts.url, alice, slow, _slow_records(2000, 0.01), parallel=2)
    deadline = time.monotonic() + 60
    while _status(hosts.url, alice, slow, bid)["completedItemCount"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    r = requests.delete(f"{hosts.url}/api/{slow}/1.0/batch/{bid}", headers=alice, timeout=60)
    assert r.status_code == 200 and r.json() == [bid], r.text
    assert requests.get(f"{hosts.url}/api/{slow}/1.0/batch/{bid}", headers=alice, timeout=60).status_code == 404
    assert bid not in requests.get(f"{hosts.url}/api/{slow}/1.0/batch", headers=alice, timeout=60).json()
    time.sleep(3)  # a chunk being scored when the batch was cancelled ends, and removes what it wrote
    assert _blobs(azurite, hosts.prefix, bid) == []
    assert _committers(azurite, hosts.prefix, bid) == {}


def test_only_the_caller_who_started_a_batch_and_owners_see_it(hosts, alice, slow):
    bob, admin = hosts.login("bob"), hosts.login("admin")
    bid = _start(hosts.url, alice, slow, _slow_records(5, 0), parallel=1)
    base = f"{hosts.url}/api/{slow}/1.0/batch"
    for method, path in (("GET", f"/{bid}"), ("GET", f"/{bid}/0/files"), ("GET", f"/{bid}/0/files/a.txt"),
                         ("DELETE", f"/{bid}")):
        r = requests.request(method, base + path, headers=bob, timeout=60)
        assert r.status_code == 404, (method, path, r.text)
    assert bid not in requests.get(base, headers=bob, timeout=60).json()
    assert bid in requests.get(base, headers=admin, timeout=60).json()
    _each_record_once(_finished(hosts.url, admin, slow, bid)["batchExecutionResults"], 5)
    assert requests.get(f"{base}/{bid}", headers=alice, timeout=60).status_code == 200


def test_each_records_output_files_are_listed_and_served(hosts, alice):
    name = _publish(hosts.url, alice, "open('out.txt', 'w').write(f'row {int(x)}')\ny = x",
                    {"x": "numeric"}, {"y": "numeric"}, outputFileNames=["out.txt", "never.txt"])
    bid = _start(hosts.url, alice, name, [{"x": float(i)} for i in range(3)])
    _finished(hosts.url, alice, name, bid)
    base = f"{hosts.url}/api/{name}/1.0/batch/{bid}"
    assert requests.get(f"{base}/2/files", headers=alice, timeout=60).json() == ["out.txt"]
    r = requests.get(f"{base}/2/files/out.txt", headers=alice, timeout=60)
    assert r.status_code == 200 and r.content == b"row 2"
    assert requests.get(f"{base}/2/files/never.txt", headers=alice, timeout=60).status_code == 404
    for index in ("3", "²", "٣", "0000000002", "9" * 5000):
        assert requests.get(f"{base}/{index}/files", headers=alice, timeout=60).status_code == 404, index


def test_batches_of_a_deleted_service_end_as_failed(hosts, alice):
    name = _publish(hosts.url, alice, SLOW, {"x": "numeric", "pause": "numeric"}, {"y": "numeric"})
    bid = _start(hosts.url, alice, name, _slow_records(600, 0.01), parallel=1)
    deadline = time.monotonic() + 60
    while _status(hosts.url, alice, name, bid)["completedItemCount"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert requests.delete(f"{hosts.url}/services/{name}/1.0", headers=alice, timeout=60).status_code == 200
    st = _finished(hosts.url, alice, name, bid)
    assert st["state"] == "Failed" and st["completedItemCount"] == 600
    assert st["batchExecutionResults"][0]["success"]
    assert "deleted" in st["batchExecutionResults"][-1]["errorMessage"]


@pytest.mark.parametrize("body, query, status, words", [
    ({"x": 1, "pause": 0}, "", 400, "JSON array"),
    ([], "", 400, "at least one"),
    ([{"x": 1, "pause": 0}, 5], "", 400, "record 1 must be an object"),
    ([{"x": 1, "pause": 0}, {"x": "one", "pause": 0}], "", 400, "record 1: input 'x'"),
    ([{"x": 1, "pause": 0}], "?parallelCount=0", 400, "parallelCount"),
    ([{"x": 1, "pause": 0}], "?parallelCount=many", 400, "parallelCount"),
    ([{"x": 1, "pause": 0}], "?parallelCount=²", 400, "parallelCount"),  # a digit to str.isdigit, not to int()
    ([{"x": 1, "pause": 0}], "?parallelCount=３", 400, "parallelCount"),
    ([{"x": 1, "pause": 0}], "?parallelCount=" + "1" * 4301, 400, "parallelCount"),
])
def test_bad_batches_are_refused_naming_the_problem(hosts, alice, slow, body, query, status, words):
    r = requests.post(f"{hosts.url}/api/{slow}/1.0/batch{query}", json=body, headers=alice, timeout=60)
    assert r.status_code == status and words in r.json()["message"], r.text


def test_batch_limits_answer_413_naming_the_setting(azurite):
    proc, url = start_host(STORAGE_PREFIX="l" + uuid.uuid4().hex[:8], BATCH_MAX_RECORDS="3", BATCH_MAX_BYTES="400")
    try:
        h = {"Authorization": "Bearer " + requests.post(f"{url}/login", json={"username": "alice",
                                                        "password": USERS["alice"]}, timeout=30).json()["access_token"]}
        name = _publish(url, h, "y = x", {"x": "numeric"}, {"y": "numeric"})
        r = requests.post(f"{url}/api/{name}/1.0/batch", json=[{"x": 1}] * 4, headers=h, timeout=60)
        assert r.status_code == 413 and "BATCH_MAX_RECORDS" in r.json()["message"], r.text
        padded = '[{"x": 1}' + " " * 400 + "]"  # one record, past BATCH_MAX_BYTES
        r = requests.post(f"{url}/api/{name}/1.0/batch", data=padded, headers={**h, "Content-Type": "application/json"},
                          timeout=60)
        assert r.status_code == 413 and "BATCH_MAX_BYTES" in r.json()["message"], r.text
        assert requests.post(f"{url}/api/{name}/1.0/batch", json=[{"x": 1}] * 3, headers=h, timeout=60).status_code == 202
        assert requests.get(f"{url}/api/nosuch/1.0/batch/{uuid.uuid4()}", headers=h, timeout=60).status_code == 404
    finally:
        stop_host(proc)


def test_the_services_own_callers_go_before_its_batch_records(hosts, alice, slow):
    """A batch takes, on each instance, only a worker no call is using: an interactive call
    waits for at most the one record being scored (the attacker's round: with lanes retrying
    the worker, 11 of 20 calls of the publisher got 503 during another user's batch)."""
    rita = hosts.login("rita")  # a Reader may batch any service she can see
    bid = _start(hosts.url, rita, slow, _slow_records(400, 0.5), parallel=8)
    time.sleep(4)  # every lane is scoring (the hosts poll the queue every 2 s at most)
    took = []
    for i in range(8):
        start = time.monotonic()
        r = requests.post(f"{hosts.url}/api/{slow}/1.0", json={"x": i, "pause": 0.5}, headers=alice, timeout=60)
        took.append(round(time.monotonic() - start, 2))
        assert r.status_code == 200 and r.json()["outputParameters"]["y"] == 2 * i, (r.text, took)
    assert max(took) < 1.8, took  # its own 0.5 s, and at most one batch record's 0.5 s before it
    assert _status(hosts.url, rita, slow, bid)["state"] != "Complete"  # the batch was running all along
    requests.delete(f"{hosts.url}/api/{slow}/1.0/batch/{bid}", headers=rita, timeout=60)
