"""The rest of ML Server's session API: files, workspace objects, snapshots into sessions,
console output, history, cancel and force close."""
import io
import threading
import time
import zipfile

import dill
import pytest
import requests

from tests.e2e.helpers import execute, new_session, snapshot

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]


def test_files_upload_list_download_overwrite_delete_and_reach_snapshots(base_url, alice):
    sid = new_session(base_url, alice)
    url = f"{base_url}/sessions/{sid}/files"
    r = requests.post(url, files={"file": ("data.csv", b"a,b\n1,2\n")}, headers=alice)
    assert r.status_code == 201
    assert requests.get(url, headers=alice).json() == ["data.csv"]
    out = execute(base_url, alice, sid, "import pandas as pd\ndf = pd.read_csv('data.csv')\n"
                  "df.to_csv('out.csv', index=False)\nopen('data.csv', 'a').write('3,4\\n')",
                  outputParameters=["df"])
    assert out["success"] is True, out
    assert out["outputParameters"] == [{"name": "df", "value": {"a": [1], "b": [2]}}]
    assert out["changedFiles"] == ["data.csv", "out.csv"]
    assert requests.get(f"{url}/data.csv", headers=alice).content == b"a,b\n1,2\n3,4\n"
    requests.post(url, files={"file": ("data.csv", b"replaced")}, headers=alice)
    assert requests.get(f"{url}/data.csv", headers=alice).content == b"replaced"
    snap = snapshot(base_url, alice, sid)
    names = zipfile.ZipFile(io.BytesIO(requests.get(f"{base_url}/snapshots/{snap}", headers=alice).content)).namelist()
    assert {"files/data.csv", "files/out.csv"} <= set(names)
    assert requests.delete(f"{url}/out.csv", headers=alice).status_code == 200
    assert requests.get(f"{url}/out.csv", headers=alice).status_code == 404
    assert requests.get(url, headers=alice).json() == ["data.csv"]


@pytest.mark.parametrize("name", ["..", "../../host.json", "/etc/passwd", "x" * 300, ".hidden", "a b", "a/b"])
def test_uploads_whose_names_could_leave_the_working_directory_are_refused(base_url, alice, name):
    sid = new_session(base_url, alice)
    r = requests.post(f"{base_url}/sessions/{sid}/files", files={"file": (name, b"x")}, headers=alice)
    assert r.status_code == 400 and "file name" in r.json()["message"]
    assert requests.get(f"{base_url}/sessions/{sid}/files", headers=alice).json() == []


@pytest.mark.parametrize("raw", ["%2e%2e", "%2e%2e%2fhost.json", "a%5cb", "%00", "x" * 300, "..%2f..%2fetc"])
def test_get_and_delete_of_such_names_are_refused(base_url, alice, raw):
    sid = new_session(base_url, alice)
    for method in ("GET", "DELETE"):
        r = requests.request(method, f"{base_url}/sessions/{sid}/files/{raw}", headers=alice)
        assert r.status_code in (400, 404), (method, raw, r.status_code)


def test_workspace_objects_uploaded_with_dill_load_in_the_session(base_url, alice):
    sid = new_session(base_url, alice)
    url = f"{base_url}/sessions/{sid}/workspace"
    # as a client script or notebook defines it (in __main__, so dill sends it by value)
    client = {"__name__": "__main__"}
    exec("model = {'weights': [1, 2, 3], 'scale': lambda x: x * 2}", client)
    r = requests.post(f"{url}/model", data=dill.dumps(client["model"]),
                      headers={**alice, "Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    out = execute(base_url, alice, sid, "y = model['scale'](sum(model['weights']))", outputParameters=["y"])
    assert out["outputParameters"] == [{"name": "y", "value": 12}]
    assert set(requests.get(url, headers=alice).json()) == {"model", "y"}
    back = dill.loads(requests.get(f"{url}/y", headers=alice).content)
    assert back == 12
    assert requests.delete(f"{url}/y", headers=alice).status_code == 200
    assert requests.get(f"{url}/y", headers=alice).status_code == 404
    r = requests.post(f"{url}/bad", data=b"not a pickle", headers={**alice, "Content-Type": "application/octet-stream"})
    assert r.status_code == 400 and "could not be deserialized" in r.json()["message"]


def test_a_session_can_start_from_a_snapshot_or_merge_one_in(base_url, alice):
    first = new_session(base_url, alice)
    execute(base_url, alice, first, "a = 1\nshared = 'from snapshot'\nopen('f.txt', 'w').write('snap')")
    snap = snapshot(base_url, alice, first)
    r = requests.post(f"{base_url}/sessions", json={"runtimeType": "Python", "snapshotId": snap}, headers=alice)
    started = r.json()["sessionId"]
    assert execute(base_url, alice, started, "", outputParameters=["a"])["outputParameters"] == \
        [{"name": "a", "value": 1}]
    other = new_session(base_url, alice)
    execute(base_url, alice, other, "b = 2\nshared = 'mine'\nopen('f.txt', 'w').write('mine')")
    assert requests.post(f"{base_url}/sessions/{other}/loadsnapshot/{snap}", headers=alice).status_code == 200
    out = execute(base_url, alice, other, "text = open('f.txt').read()", outputParameters=["a", "b", "shared", "text"])
    assert out["outputParameters"] == [{"name": "a", "value": 1}, {"name": "b", "value": 2},
                                       {"name": "shared", "value": "from snapshot"}, {"name": "text", "value": "snap"}]


def test_loading_someone_elses_snapshot_is_404(base_url, alice, bob):
    snap = snapshot(base_url, alice, new_session(base_url, alice))
    sid = new_session(base_url, bob)
    assert requests.post(f"{base_url}/sessions/{sid}/loadsnapshot/{snap}", headers=bob).status_code == 404
    r = requests.post(f"{base_url}/sessions", json={"runtimeType": "Python", "snapshotId": snap}, headers=bob)
    assert r.status_code == 404


def test_console_output_and_history(base_url, alice):
    sid = new_session(base_url, alice)
    execute(base_url, alice, sid, "print('one')")
    execute(base_url, alice, sid, "print('two')")
    assert requests.get(f"{base_url}/sessions/{sid}/console-output", headers=alice).json() == \
        {"consoleOutput": "two\n"}
    assert requests.get(f"{base_url}/sessions/{sid}/history", headers=alice).json() == \
        ["print('one')", "print('two')"]


def test_cancel_stops_a_running_execution_and_the_session_lives_on(base_url, alice):
    sid = new_session(base_url, alice)
    execute(base_url, alice, sid, "kept = 1")
    result = {}

    def run():
        result["out"] = execute(base_url, alice, sid, "import time\ntime.sleep(60)")

    t = threading.Thread(target=run)
    t.start()
    time.sleep(1.5)
    assert requests.post(f"{base_url}/sessions/{sid}/cancel", headers=alice).status_code == 200
    t.join(20)
    assert result["out"]["success"] is False and "cancelled" in result["out"]["errorMessage"]
    assert execute(base_url, alice, sid, "", outputParameters=["kept"])["outputParameters"] == \
        [{"name": "kept", "value": 1}]


def test_force_close_removes_the_session(base_url, alice):
    sid = new_session(base_url, alice)
    assert requests.delete(f"{base_url}/sessions/{sid}/force", headers=alice).status_code == 200
    assert requests.post(f"{base_url}/sessions/{sid}/execute", json={"code": "1"}, headers=alice).status_code == 404


def test_concurrent_executes_on_one_session_lose_no_update(base_url, alice):
    from concurrent.futures import ThreadPoolExecutor

    sid = new_session(base_url, alice)
    execute(base_url, alice, sid, "items = []")

    def append(_):
        r = requests.post(f"{base_url}/sessions/{sid}/execute", json={"code": "items.append(1)"}, headers=alice)
        return r.status_code, r.json().get("success")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(append, range(24)))
    ok = sum(1 for status, success in results if status == 200 and success)
    assert all(status in (200, 409) for status, _ in results)
    out = execute(base_url, alice, sid, "n = len(items)", outputParameters=["n"])
    assert out["outputParameters"] == [{"name": "n", "value": ok}] and ok > 0


def test_concurrent_executes_through_two_instances_lose_no_update(base_url, strict_url, alice):
    from concurrent.futures import ThreadPoolExecutor

    sid = new_session(base_url, alice)
    execute(base_url, alice, sid, "items = []")

    def append(i):
        url = base_url if i % 2 else strict_url
        r = requests.post(f"{url}/sessions/{sid}/execute", json={"code": "items.append(1)"}, headers=alice)
        return r.status_code, r.json().get("success")

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(append, range(24)))
    assert all(status in (200, 409) for status, _ in results), results
    ok = sum(1 for status, success in results if status == 200 and success)
    for url in (base_url, strict_url):
        out = execute(url, alice, sid, "n = len(items)", outputParameters=["n"])
        assert out["outputParameters"] == [{"name": "n", "value": ok}]


def _parts(sid: str) -> dict[str, int]:
    from shared.storage._clients import container

    return {b.name: b.size for b in container().list_blobs(name_starts_with=f"sessions/{sid}/parts/")}


def test_a_call_stores_only_the_objects_and_files_it_changed(base_url, alice):
    sid = new_session(base_url, alice)
    out = execute(base_url, alice, sid, "import os, numpy as np\nbig = np.arange(1_000_000)\n"
                  "noise = os.urandom(100_000)\nopen('data.bin', 'wb').write(noise)")
    assert out["success"] is True, out
    first = _parts(sid)
    big_blob = max(first, key=first.get)  # 8 MB: a blob of its own; the small entries share one
    assert first[big_blob] > 8_000_000 and len(first) == 2
    execute(base_url, alice, sid, "x = 1")
    second = _parts(sid)
    assert set(first) < set(second) and len(second) == 3  # only x is written: the rest is kept as it was
    execute(base_url, alice, sid, "big[0] = 5\ndel noise")  # changed in place; one removed
    third = _parts(sid)
    assert big_blob not in third and max(third.values()) > 8_000_000  # big written again, its old blob gone
    # a fresh worker (cancel retires this one) starts from what was stored
    assert requests.post(f"{base_url}/sessions/{sid}/cancel", headers=alice).status_code == 200
    check = execute(base_url, alice, sid, "ok = (int(big[0]), x, 'noise' in globals(), len(open('data.bin', 'rb').read()))",
                    outputParameters=["ok"])
    assert check["outputParameters"] == [{"name": "ok", "value": [5, 1, False, 100_000]}]
    # a snapshot is one zip with an entry per object and file; a session started from it has them
    snap = snapshot(base_url, alice, sid)
    zf = zipfile.ZipFile(io.BytesIO(requests.get(f"{base_url}/snapshots/{snap}", headers=alice).content))
    assert {"objects/big", "objects/x", "files/data.bin"} <= set(zf.namelist())
    r = requests.post(f"{base_url}/sessions", json={"runtimeType": "Python", "snapshotId": snap}, headers=alice)
    again = execute(base_url, alice, r.json()["sessionId"], "ok = int(big[0]) + x", outputParameters=["ok"])
    assert again["outputParameters"] == [{"name": "ok", "value": 6}]
    # closing the session deletes its parts
    assert requests.delete(f"{base_url}/sessions/{sid}", headers=alice).status_code == 200
    assert _parts(sid) == {}


def test_console_output_of_wide_characters_is_cut_to_fit_table_storage(base_url, alice):
    sid = new_session(base_url, alice)
    out = execute(base_url, alice, sid, "print('\\U0001F600' * 20000)\nx = 1")  # 40,000 UTF-16 units
    assert out["success"] is True, out
    kept = requests.get(f"{base_url}/sessions/{sid}/console-output", headers=alice).json()["consoleOutput"]
    assert kept.startswith("\U0001F600") and 29_000 < len(kept.encode("utf-16-le")) // 2 <= 30_000


def test_files_of_any_name_the_folder_can_hold_are_saved(base_url, alice):
    sid = new_session(base_url, alice)
    names = ["My Results.csv", "résumé.txt", ".env"]
    out = execute(base_url, alice, sid, "".join(f"open({n!r}, 'w').write('x')\n" for n in names))
    assert out["success"] is True, out
    assert requests.post(f"{base_url}/sessions/{sid}/cancel", headers=alice).status_code == 200  # a fresh worker
    check = execute(base_url, alice, sid, f"import os\nok = sorted(n for n in os.listdir('.') if n in {names!r})",
                    outputParameters=["ok"])
    assert check["outputParameters"] == [{"name": "ok", "value": sorted(names)}]


def test_a_workspace_of_more_entries_than_kept_is_refused_naming_the_limit(base_url, alice):
    sid = new_session(base_url, alice)
    out = execute(base_url, alice, sid, "for i in range(10_001): globals()['v%d' % i] = i")
    assert out["success"] is False and "10000" in out["errorMessage"]
    assert execute(base_url, alice, sid, "x = 1")["success"] is True  # as it was before that call


def test_names_the_workspace_cannot_keep_are_dropped_with_a_note_and_the_rest_is_saved(base_url, alice):
    sid = new_session(base_url, alice)
    out = execute(base_url, alice, sid, "globals()['my-var'] = 1\nglobals()['a' * 300] = 2\n"
                  "open(b'\\xff.txt', 'wb').write(b'x')\nx = 2")
    assert out["success"] is True, out
    assert "'my-var' is not a name the workspace keeps" in out["consoleOutput"]
    assert "is not kept in the workspace" in out["consoleOutput"]
    assert requests.post(f"{base_url}/sessions/{sid}/cancel", headers=alice).status_code == 200
    check = execute(base_url, alice, sid, "ok = (x, 'my-var' in globals())", outputParameters=["ok"])
    assert check["outputParameters"] == [{"name": "ok", "value": [2, False]}]
