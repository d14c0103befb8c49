"""Publishing and consuming services over HTTP: types, patch, delete."""
import time
import uuid

import pytest
import requests

from tests.e2e.helpers import execute, new_session, publish, snapshot

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]

ALL_TYPES = [{"name": "n", "type": "numeric"}, {"name": "i", "type": "integer"}, {"name": "b", "type": "logical"},
             {"name": "s", "type": "character"}, {"name": "v", "type": "vector"}, {"name": "m", "type": "matrix"},
             {"name": "df", "type": "data.frame"}]


def test_every_parameter_type_arrives_as_its_natural_python_value_and_round_trips(base_url, alice):
    code = ("import numpy as np, pandas as pd\n"
            "seen = [type(x).__name__ for x in (n, i, b, s, v, m, df)]\n"
            "n2, i2, b2, s2 = n * 2, i + 1, not b, s.upper()\n"
            "v2 = v * 2\nm2 = m.T\ndf2 = df.assign(c=df['a'] * 10)\n")
    outputs = [{"name": "seen", "type": "vector"}, {"name": "n2", "type": "numeric"},
               {"name": "i2", "type": "integer"}, {"name": "b2", "type": "logical"},
               {"name": "s2", "type": "character"}, {"name": "v2", "type": "vector"},
               {"name": "m2", "type": "matrix"}, {"name": "df2", "type": "data.frame"}]
    name = publish(base_url, alice, code, inputs=ALL_TYPES, outputs=outputs)
    body = {"n": 1.5, "i": 2, "b": True, "s": "abc", "v": [1, 2, 3], "m": [[1, 2], [3, 4]],
            "df": {"a": [1, 2], "t": ["x", "y"]}}
    r = requests.post(f"{base_url}/api/{name}/v1", json=body, headers=alice)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["success"] is True, out
    assert out["outputParameters"] == {
        "seen": ["float", "int", "bool", "str", "ndarray", "ndarray", "DataFrame"],
        "n2": 3.0, "i2": 3, "b2": False, "s2": "ABC", "v2": [2, 4, 6], "m2": [[1, 3], [2, 4]],
        "df2": {"a": [1, 2], "t": ["x", "y"], "c": [10, 20]}}


@pytest.mark.parametrize("body, fragment", [
    ({"x": "one"}, "input 'x' must be a number"), ({}, "input 'x' (numeric) is missing"),
    ({"x": 1, "y": 2}, "input 'y' is not declared"),
])
def test_wrong_missing_or_undeclared_inputs_get_400_naming_the_parameter(base_url, alice, body, fragment):
    name = publish(base_url, alice, "z = x", inputs=[{"name": "x", "type": "numeric"}],
                   outputs=[{"name": "z", "type": "numeric"}])
    r = requests.post(f"{base_url}/api/{name}/v1", json=body, headers=alice)
    assert r.status_code == 400 and fragment in r.json()["message"]


def test_non_finite_and_numpy_results_come_back_as_strict_json(base_url, alice):
    name = publish(base_url, alice, "import numpy as np\nr = [np.nan, np.inf, np.int64(3)]\nk = np.float32(0.5)",
                   outputs=[{"name": "r", "type": "vector"}, {"name": "k", "type": "numeric"}])
    r = requests.post(f"{base_url}/api/{name}/v1", json={}, headers=alice)
    assert r.json()["outputParameters"] == {"r": [None, None, 3], "k": 0.5}


def test_failing_code_is_success_false_with_the_error_not_a_500(base_url, alice):
    name = publish(base_url, alice, "print('before')\ny = 1 / x", inputs=[{"name": "x", "type": "numeric"}],
                   outputs=[{"name": "y", "type": "numeric"}])
    r = requests.post(f"{base_url}/api/{name}/v1", json={"x": 0}, headers=alice)
    assert r.status_code == 200
    out = r.json()
    assert out["success"] is False and "ZeroDivisionError" in out["errorMessage"]
    assert out["consoleOutput"] == "before\n" and out["outputParameters"] == {}
    assert "worker.py" not in out["errorMessage"]


def test_patch_takes_effect_on_the_next_call_and_keeps_what_it_does_not_send(base_url, alice):
    name = publish(base_url, alice, "y = x + 1", inputs=[{"name": "x", "type": "numeric"}],
                   outputs=[{"name": "y", "type": "numeric"}], description="plus one")
    assert requests.post(f"{base_url}/api/{name}/v1", json={"x": 1}, headers=alice).json()["outputParameters"] == \
        {"y": 2.0}
    r = requests.patch(f"{base_url}/services/{name}/v1", json={"code": "y = x + 100"}, headers=alice)
    assert r.status_code == 200 and r.json() == "v1"
    assert requests.post(f"{base_url}/api/{name}/v1", json={"x": 1}, headers=alice).json()["outputParameters"] == \
        {"y": 101.0}
    ws = requests.get(f"{base_url}/services/{name}/v1", headers=alice).json()[0]
    assert ws["description"] == "plus one" and ws["inputParameterDefinitions"] == [{"name": "x", "type": "numeric"}]


def test_init_code_runs_once_when_the_worker_loads_the_service(base_url, alice):
    name = publish(base_url, alice, "n = globals().get('n', 0) + 1\nstamp = loaded_at",
                   initCode="import time\nloaded_at = time.time()",
                   outputs=[{"name": "n", "type": "integer"}, {"name": "stamp", "type": "numeric"}])
    first = requests.post(f"{base_url}/api/{name}/v1", json={}, headers=alice).json()["outputParameters"]
    second = requests.post(f"{base_url}/api/{name}/v1", json={}, headers=alice).json()["outputParameters"]
    assert first["stamp"] == second["stamp"]
    # names a request binds do not carry over to the next request
    assert first["n"] == second["n"] == 1


def test_a_service_keeps_its_snapshot_after_the_session_and_snapshot_are_gone(base_url, alice):
    sid = new_session(base_url, alice)
    execute(base_url, alice, sid, "factor = 7\nwith open('table.txt', 'w') as f: f.write('from a file')")
    snap = snapshot(base_url, alice, sid)
    name = publish(base_url, alice, "y = x * factor\ntext = open('table.txt').read()", snapshot_id=snap,
                   inputs=[{"name": "x", "type": "numeric"}],
                   outputs=[{"name": "y", "type": "numeric"}, {"name": "text", "type": "character"}])
    assert requests.delete(f"{base_url}/sessions/{sid}", headers=alice).status_code == 200
    assert requests.delete(f"{base_url}/snapshots/{snap}", headers=alice).status_code == 200
    r = requests.post(f"{base_url}/api/{name}/v1", json={"x": 2}, headers=alice).json()
    assert r["outputParameters"] == {"y": 14.0, "text": "from a file"}


def test_publish_without_a_version_gets_a_generated_one(base_url, alice):
    r = requests.post(f"{base_url}/services/noversion", json={"code": "y = 1", "runtimeType": "Python"},
                      headers=alice)
    assert r.status_code == 201
    version = r.json()
    assert len(version) == 36
    assert requests.get(f"{base_url}/services/noversion/{version}", headers=alice).status_code == 200


def test_consume_of_an_unknown_service_is_404(base_url, alice):
    r = requests.post(f"{base_url}/api/nothing/v9", json={}, headers=alice)
    assert r.status_code == 404 and "nothing" in r.json()["message"]


# --- who may publish under a name, and who may read the code ---------------------------------

def _publish(base_url, headers, name, version, **extra):
    url = f"{base_url}/services/{name}" + (f"/{version}" if version else "")
    return requests.post(url, json={"code": "y = 1", "runtimeType": "Python", **extra}, headers=headers)


def test_a_name_belongs_to_its_first_publisher(base_url, alice, bob, admin):
    import uuid

    name = "Az" + uuid.uuid4().hex[:6]
    assert _publish(base_url, alice, name, "1.0").status_code == 201
    for squat in ((name, "9.9"), (name.lower(), "1.0"), (name.upper(), "1.0")):
        r = _publish(base_url, bob, *squat)
        assert r.status_code == 403 and "belongs to alice" in r.json()["message"], squat
    versions = requests.get(f"{base_url}/services/{name}", headers=alice).json()
    assert [v["versionPublishedBy"] for v in versions] == ["alice"]
    # Owners may publish under any name.
    assert _publish(base_url, admin, name, "1.1").status_code == 201


def test_the_holder_names_co_publishers_and_only_the_holder_may(base_url, alice, bob):
    import uuid

    name = "Shared" + uuid.uuid4().hex[:6]
    assert _publish(base_url, alice, name, "1.0").status_code == 201
    r = requests.patch(f"{base_url}/services/{name}/1.0", json={"coPublishers": ["bob"]}, headers=alice)
    assert r.status_code == 200, r.text
    assert requests.get(f"{base_url}/services/{name}/1.0", headers=bob).json()[0]["coPublishers"] == ["bob"]
    assert _publish(base_url, bob, name, "2.0").status_code == 201
    # A co-publisher owns his version, not the name.
    r = requests.patch(f"{base_url}/services/{name}/2.0", json={"coPublishers": ["bob", "mallory"]}, headers=bob)
    assert r.status_code == 403 and "alice" in r.json()["message"]
    assert requests.patch(f"{base_url}/services/{name}/1.0", json={"description": "x"}, headers=bob).status_code == 403
    r = requests.patch(f"{base_url}/services/{name}/1.0", json={"coPublishers": []}, headers=alice)
    assert r.status_code == 200
    assert _publish(base_url, bob, name, "3.0").status_code == 403


def test_a_name_stays_with_its_holder_when_its_versions_are_deleted(base_url, alice, bob):
    import uuid

    name = "Kept" + uuid.uuid4().hex[:6]
    assert _publish(base_url, alice, name, "1.0").status_code == 201
    assert requests.delete(f"{base_url}/services/{name}/1.0", headers=alice).status_code == 200
    assert _publish(base_url, bob, name, "2.0").status_code == 403
    assert _publish(base_url, alice, name, "2.0").status_code == 201


def test_a_development_version_claims_no_name_and_only_its_author_sees_it(base_url, alice, bob):
    import uuid

    name = "Dev" + uuid.uuid4().hex[:6]
    r = _publish(base_url, bob, name, None)
    assert r.status_code == 201
    guid = r.json()
    assert _publish(base_url, alice, name, "1.0").status_code == 201  # bob's hidden version held nothing
    assert [v["version"] for v in requests.get(f"{base_url}/services/{name}", headers=alice).json()] == ["1.0"]
    assert requests.post(f"{base_url}/api/{name}/{guid}", json={}, headers=alice).status_code == 404
    assert requests.post(f"{base_url}/api/{name}/{guid}", json={}, headers=bob).status_code == 200
    # Once the name is held, a development version under it obeys the holder and the spelling.
    assert _publish(base_url, bob, name, None).status_code == 403
    assert _publish(base_url, alice, name.lower(), None).status_code == 409
    assert _publish(base_url, alice, name, None).status_code == 201


def test_a_removed_co_publisher_loses_his_versions_to_the_holder(base_url, alice, bob):
    import uuid

    name = "Co" + uuid.uuid4().hex[:6]
    assert _publish(base_url, alice, name, "1.0", coPublishers=["bob"]).status_code == 201
    assert _publish(base_url, bob, name, "2.0").status_code == 201
    assert requests.get(f"{base_url}/services/{name}/2.0", headers=alice).json()[0]["code"] == "y = 1"
    assert requests.patch(f"{base_url}/services/{name}/1.0", json={"coPublishers": []}, headers=alice).status_code == 200
    r = requests.patch(f"{base_url}/services/{name}/2.0", json={"code": "y = 1000"}, headers=bob)
    assert r.status_code == 403 and "no longer lists you" in r.json()["message"]
    assert requests.delete(f"{base_url}/services/{name}/2.0", headers=bob).status_code == 403
    assert requests.delete(f"{base_url}/services/{name}/2.0", headers=alice).status_code == 200


def test_init_code_is_hidden_from_everyone_but_its_publisher_and_owners(base_url, alice, bob, rita, admin):
    import uuid

    name = "Keys" + uuid.uuid4().hex[:6]
    secret = "API_KEY = 'k-" + uuid.uuid4().hex + "'"
    assert _publish(base_url, alice, name, "1.0", initCode=secret).status_code == 201
    for who, sees in ((alice, True), (admin, True), (bob, False), (rita, False)):
        one = requests.get(f"{base_url}/services/{name}/1.0", headers=who).json()[0]
        listed = [s for s in requests.get(f"{base_url}/services", headers=who).json() if s["name"] == name][0]
        swagger = requests.get(f"{base_url}/api/{name}/1.0/swagger.json", headers=who).text
        assert (one["initCode"] == secret) is sees and (listed["initCode"] == secret) is sees
        assert (one["code"] == "y = 1") is sees
        assert secret not in swagger


def test_a_name_has_one_spelling_and_deleting_its_versions_does_not_free_it(base_url, alice, bob):
    import uuid

    name = "Iris" + uuid.uuid4().hex[:6]
    assert _publish(base_url, alice, name, "v1").status_code == 201
    r = _publish(base_url, alice, name.lower(), "v1")
    assert r.status_code == 409 and f"spelled '{name}'" in r.json()["message"]
    assert _publish(base_url, alice, name, "v2").status_code == 201
    assert requests.delete(f"{base_url}/services/{name}/v1", headers=alice).status_code == 200
    assert requests.delete(f"{base_url}/services/{name}/v2", headers=alice).status_code == 200
    assert _publish(base_url, bob, name.upper(), "v3").status_code == 403


@pytest.mark.parametrize("extra, status, fragment", [
    ({"snapshotId": "00000000-0000-0000-0000-000000000000"}, 404, "snapshot"),
    ({"initCode": "\U0001F600" * 20000}, 400, "'initCode' is longer"),
    ({"outputFileNames": [f"f{i}.csv" for i in range(5000)]}, 400, "'outputFileNames' is too long"),
])
def test_a_publish_that_fails_claims_no_name(base_url, alice, bob, extra, status, fragment):
    import uuid

    name = "Team" + uuid.uuid4().hex[:6]
    r = _publish(base_url, alice, name, "v1", **extra)
    assert r.status_code == status and fragment in r.json()["message"], r.text
    assert requests.get(f"{base_url}/services/{name}", headers=alice).json() == []
    assert _publish(base_url, bob, name, "v1").status_code == 201


def test_etags_make_concurrent_changes_visible_and_if_match_refuses_stale_ones(base_url, alice):
    name = publish(base_url, alice, "y = 1", outputs=[{"name": "y", "type": "numeric"}])
    url = f"{base_url}/services/{name}/v1"
    first = requests.get(url, headers=alice).headers["ETag"]
    assert first.startswith('"') and first.endswith('"')
    assert requests.get(url, headers=alice).headers["ETag"] == first  # unchanged: the same tag
    # Two clients read the same state; the first change wins, the second learns it was stale.
    r = requests.patch(url, json={"description": "one"}, headers={**alice, "If-Match": first})
    assert r.status_code == 200, r.text
    second = r.headers["ETag"]
    assert second != first and requests.get(url, headers=alice).headers["ETag"] == second
    r = requests.patch(url, json={"description": "two"}, headers={**alice, "If-Match": first})
    assert r.status_code == 412 and "ETag" in r.json()["message"], r.text
    assert requests.get(url, headers=alice).json()[0]["description"] == "one"
    # Weak tags never match (RFC 9110's strong comparison); a list matches if one tag does.
    r = requests.patch(url, json={"description": "w"}, headers={**alice, "If-Match": f"W/{second}"})
    assert r.status_code == 412
    r = requests.patch(url, json={"description": "three"}, headers={**alice, "If-Match": f'{first}, {second}'})
    assert r.status_code == 200
    third = r.headers["ETag"]
    # Realtime and standard versions share the rule; * matches any state; DELETE honours it too.
    assert requests.delete(url, headers={**alice, "If-Match": second}).status_code == 412
    assert requests.get(url, headers=alice).status_code == 200
    assert requests.patch(url, json={"description": "four"}, headers={**alice, "If-Match": "*"}).status_code == 200
    assert requests.delete(url, headers={**alice, "If-Match": third}).status_code == 412
    current = requests.get(url, headers=alice).headers["ETag"]
    assert requests.delete(url, headers={**alice, "If-Match": current}).status_code == 200
    assert requests.get(url, headers=alice).status_code == 404


def test_without_if_match_changes_still_apply_as_before(base_url, alice):
    name = publish(base_url, alice, "y = 1", outputs=[{"name": "y", "type": "numeric"}])
    url = f"{base_url}/services/{name}/v1"
    r = requests.patch(url, json={"description": "x"}, headers=alice)
    assert r.status_code == 200 and r.headers["ETag"] == requests.get(url, headers=alice).headers["ETag"]
    assert requests.delete(url, headers=alice).status_code == 200


def test_publishes_of_a_new_name_at_once_leave_the_name_with_its_holder(base_url, alice, bob):
    """The publish that claimed the name but lost the race for the version must not give the
    claim back: the version the other publish made relies on it."""
    from concurrent.futures import ThreadPoolExecutor

    body = {"code": "y = 1", "runtimeType": "Python", "outputParameterDefinitions": [{"name": "y", "type": "numeric"}]}
    for _ in range(4):
        name = "Race" + uuid.uuid4().hex[:8]  # a claim is kept in lower case, versions as spelled
        with ThreadPoolExecutor(8) as pool:
            codes = sorted(pool.map(lambda _: requests.post(f"{base_url}/services/{name}/v1", json=body,
                                                            headers=alice).status_code, range(8)))
        assert codes.count(201) == 1 and set(codes) <= {201, 409}, codes
        taken = requests.post(f"{base_url}/services/{name}/v2", json=body, headers=bob)
        assert taken.status_code == 403, (codes, taken.text)


def test_a_refused_patch_or_publish_changes_no_co_publishers(base_url, alice, bob):
    name = publish(base_url, alice, "y = 1", outputs=[{"name": "y", "type": "numeric"}])
    body = {"code": "y = 1", "runtimeType": "Python"}
    bad = requests.patch(f"{base_url}/services/{name}/v1", json={"coPublishers": ["bob"], "operationId": "1 bad"},
                         headers=alice)
    assert bad.status_code == 400, bad.text
    exists = requests.post(f"{base_url}/services/{name}/v1", json={**body, "coPublishers": ["bob"]}, headers=alice)
    assert exists.status_code == 409, exists.text
    assert requests.post(f"{base_url}/services/{name}/v2", json=body, headers=bob).status_code == 403


def test_a_patch_lets_the_calls_already_running_answer(base_url, alice):
    import threading

    name = publish(base_url, alice, "import time\ntime.sleep(0.05)\ny = x * 2",
                   inputs=[{"name": "x", "type": "numeric"}], outputs=[{"name": "y", "type": "numeric"}])
    failures, stop = [], threading.Event()

    def consume() -> None:
        while not stop.is_set():
            r = requests.post(f"{base_url}/api/{name}/v1", json={"x": 2}, headers=alice)
            if r.status_code != 200 or not r.json()["success"]:
                failures.append(r.text)

    threads = [threading.Thread(target=consume) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(12):
            assert requests.patch(f"{base_url}/services/{name}/v1", json={"description": f"d{i}"},
                                  headers=alice).status_code == 200
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
