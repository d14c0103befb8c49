"""What the attacker round on batch scoring tried: another user's batch through every batch
operation, and odd indexes and parallelCounts that answered 500 (str.isdigit takes '²')."""
from __future__ import annotations

import time
import uuid

import pytest
import requests

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]


def _service(host, headers) -> str:
    name = "sb" + uuid.uuid4().hex[:8]
    body = {"code": "open('out.txt', 'w').write('secret of ' + str(x))\ny = x", "runtimeType": "Python",
            "inputParameterDefinitions": [{"name": "x", "type": "numeric"}],
            "outputParameterDefinitions": [{"name": "y", "type": "numeric"}], "outputFileNames": ["out.txt"]}
    r = requests.post(f"{host.url}/services/{name}/v1", json=body, headers=headers, timeout=120)
    assert r.status_code == 201, r.text
    return name


def test_another_users_batch_is_not_found_through_any_operation(host, alice, bob):
    rita = host.login("rita")
    name = _service(host, alice)
    base = f"{host.url}/api/{name}/v1/batch"
    r = requests.post(base, json=[{"x": 1}, {"x": 2}], headers=alice, timeout=60)
    assert r.status_code == 202, r.text
    bid = r.json()["batchExecutionId"]
    deadline = time.monotonic() + 120
    while requests.get(f"{base}/{bid}", headers=alice, timeout=60).json()["state"] != "Complete":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    for intruder in (bob, rita):
        for method, path in (("GET", f"/{bid}"), ("GET", f"/{bid}?showPartialResults=true"),
                             ("GET", f"/{bid}/0/files"), ("GET", f"/{bid}/0/files/out.txt"),
                             ("GET", f"/{bid.upper()}/0/files/out.txt"), ("DELETE", f"/{bid}")):
            r = requests.request(method, base + path, headers=intruder, timeout=60)
            assert r.status_code == 404 and "secret of" not in r.text, (method, path, r.text)
        assert bid not in requests.get(base, headers=intruder, timeout=60).text
    r = requests.get(f"{base}/{bid}/0/files/out.txt", headers=alice, timeout=60)
    assert r.status_code == 200 and r.content == b"secret of 1.0"  # still there: nothing was cancelled


@pytest.mark.parametrize("index", ["²", "٣", "３", "-1", "0000000000", "9" * 4400, "..%2F0"])
def test_odd_record_indexes_are_not_found_never_a_500(host, alice, index):
    name = _service(host, alice)
    bid = requests.post(f"{host.url}/api/{name}/v1/batch", json=[{"x": 1}], headers=alice,
                        timeout=60).json()["batchExecutionId"]
    r = requests.get(f"{host.url}/api/{name}/v1/batch/{bid}/{index}/files", headers=alice, timeout=60)
    assert r.status_code == 404, r.text


@pytest.mark.parametrize("count", ["²", "３", "0", "65", "1" * 4301, "-1"])
def test_odd_parallel_counts_are_refused_never_a_500(host, alice, count):
    name = _service(host, alice)
    r = requests.post(f"{host.url}/api/{name}/v1/batch", params={"parallelCount": count}, json=[{"x": 1}],
                      headers=alice, timeout=60)
    assert r.status_code == 400 and "parallelCount" in r.json()["message"], r.text
