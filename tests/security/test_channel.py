"""User code that writes into its worker's channel to the host: forged, stray, oversized and
malformed frames cost that worker (stopped, clear error), never the host or another call."""
import pytest
import requests

from tests.e2e.helpers import execute, new_session, publish

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]

# User code can always find its channel to the host: its one socket.
WRITE = """
import json, os, stat, struct, sys
def channel():
    return next(fd for fd in range(3, 4096) if _is_socket(fd))
def _is_socket(fd):
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False
def send(frame):
    os.write(channel(), frame)
def frame(body, blob=b''):
    return struct.pack('>II', len(body), len(blob)) + body + blob
def forged(call_id, **fields):
    reply = {"ok": True, "success": True, "errorMessage": "", "consoleOutput": "FORGED",
             "outputParameters": [], "changedFiles": [], "id": call_id, "_blob": "state"}
    reply = {k: v for k, v in {**reply, **fields}.items() if v is not None}
    return frame(json.dumps(reply).encode(), b'PK' if "_blob" in reply else b'')
def call_id():
    f = sys._getframe()
    while 'msg' not in f.f_locals:
        f = f.f_back
    return f.f_locals['msg']['id']
"""


def test_a_forged_reply_is_not_taken_for_the_answer(host, alice):
    sid = new_session(host.url, alice)
    execute(host.url, alice, sid, "kept = 'before'")
    out = execute(host.url, alice, sid, WRITE + "kept = 'during'\nsend(forged('0' * 16))")
    assert out["success"] is False and "broke the protocol" in out["errorMessage"]
    assert "FORGED" not in out["consoleOutput"]
    out = execute(host.url, alice, sid, "", outputParameters=["kept"])
    assert out["success"] is True and out["outputParameters"] == [{"name": "kept", "value": "before"}]


def test_a_reply_forged_with_the_calls_own_id_answers_that_call_only(host, alice, bob):
    # In-process, user code can read the call's id from memory: the most it gets is to choose
    # the answer to its own call, which its code decides anyway. The real reply then arrives
    # as a stray frame, and the next call gets a fresh worker.
    name = publish(host.url, alice, WRITE + "if x:\n    send(forged(call_id(), _blob=None, outputParameters={'y': 999}))\n"
                   "y = 2 * x", inputs=[{"name": "x", "type": "integer"}], outputs=[{"name": "y", "type": "integer"}])
    r = requests.post(f"{host.url}/api/{name}/v1", json={"x": 1}, headers=alice)
    assert r.json()["outputParameters"] == {"y": 999}
    r = requests.post(f"{host.url}/api/{name}/v1", json={"x": 0}, headers=bob)
    assert r.json()["success"] is True and r.json()["consoleOutput"] == "", r.text
    assert r.json()["outputParameters"] == {"y": 0}


def test_a_late_real_reply_after_a_forged_one_does_not_fail_the_next_caller(host, alice, bob):
    # The forged reply ends alice's call at once; the worker's own reply comes 0.5 s later, while
    # bob's call is already waiting on that worker: bob's call moves to a fresh worker.
    name = publish(host.url, alice, WRITE + "import time\nif x:\n"
                   "    send(forged(call_id(), _blob=None, outputParameters={'y': 999}))\n    time.sleep(0.5)\n"
                   "y = 2 * x", inputs=[{"name": "x", "type": "integer"}], outputs=[{"name": "y", "type": "integer"}])
    r = requests.post(f"{host.url}/api/{name}/v1", json={"x": 1}, headers=alice)
    assert r.json()["outputParameters"] == {"y": 999}
    r = requests.post(f"{host.url}/api/{name}/v1", json={"x": 0}, headers=bob)
    assert r.json()["success"] is True and r.json()["outputParameters"] == {"y": 0}, r.text


def test_a_frame_written_between_calls_never_reaches_the_next_caller(host, alice, bob):
    name = publish(host.url, alice, WRITE + "import threading, time\n"
                   "def later():\n    time.sleep(0.3)\n    send(forged('0' * 16))\n"
                   "if x:\n    threading.Thread(target=later).start()\ny = 2 * x",
                   inputs=[{"name": "x", "type": "integer"}], outputs=[{"name": "y", "type": "integer"}])
    r = requests.post(f"{host.url}/api/{name}/v1", json={"x": 1}, headers=alice)
    assert r.json()["outputParameters"] == {"y": 2}
    import time

    time.sleep(0.6)
    r = requests.post(f"{host.url}/api/{name}/v1", json={"x": 0}, headers=bob)
    assert r.json()["success"] is True and r.json()["consoleOutput"] == "", r.text
    assert r.json()["outputParameters"] == {"y": 0}


def test_an_oversized_frame_stops_the_worker_without_the_host_allocating_it(host, alice):
    sid = new_session(host.url, alice)
    before = host.rss_mb()
    out = execute(host.url, alice, sid, WRITE + "send(struct.pack('>II', 400 * 2**20, 0) + b'x' * 2**20)\n"
                  "import time\ntime.sleep(1)")
    assert out["success"] is False and "above the limit" in out["errorMessage"]
    assert host.rss_mb() - before < 50
    assert execute(host.url, alice, sid, "x = 1")["success"] is True


@pytest.mark.parametrize("body", ["b'not json!'", "b'[' * 200000", "b'{\"ok\": NaN}'"])
def test_a_malformed_frame_stops_the_worker(host, alice, body):
    sid = new_session(host.url, alice)
    out = execute(host.url, alice, sid, WRITE + f"send(frame({body}))")
    assert out["success"] is False and "malformed" in out["errorMessage"]
    assert execute(host.url, alice, sid, "x = 1")["success"] is True
    assert host.healthy(alice)


@pytest.mark.parametrize("fields", ["success=None", "outputParameters=[float('nan')]", "ok=1",
                                    "changedFiles=[1]"])
def test_a_reply_with_the_right_id_but_the_wrong_shape_stops_the_worker(host, alice, fields):
    sid = new_session(host.url, alice)
    out = execute(host.url, alice, sid, WRITE + f"send(forged(call_id(), {fields}))")
    assert out["success"] is False
    assert "broke the protocol" in out["errorMessage"] or "malformed" in out["errorMessage"]
    assert execute(host.url, alice, sid, "x = 1")["success"] is True


def test_a_worker_that_sends_half_a_reply_and_stalls_holds_no_other_caller(host, alice, bob):
    # Consume waits on the event loop: a reply that does not arrive whole must go on in a thread,
    # or one service could stall every other call of the instance.
    import threading
    import time

    stalled = publish(host.url, alice, WRITE + "import time\nif x:\n    send(struct.pack('>II', 100, 0) + b'{')\n"
                      "    time.sleep(30)\ny = x", inputs=[{"name": "x", "type": "integer"}],
                      outputs=[{"name": "y", "type": "integer"}])
    quick = publish(host.url, bob, "y = 2", outputs=[{"name": "y", "type": "integer"}])
    assert requests.post(f"{host.url}/api/{stalled}/v1", json={"x": 0}, headers=alice).json()["success"]
    assert requests.post(f"{host.url}/api/{quick}/v1", json={}, headers=bob).json()["success"]
    answers = {}
    slow = threading.Thread(target=lambda: answers.setdefault(
        "stalled", requests.post(f"{host.url}/api/{stalled}/v1", json={"x": 1}, headers=alice).json()))
    slow.start()
    time.sleep(0.5)
    for _ in range(5):
        start = time.monotonic()
        r = requests.post(f"{host.url}/api/{quick}/v1", json={}, headers=bob)
        assert r.json()["outputParameters"] == {"y": 2} and time.monotonic() - start < 1.0
    slow.join(timeout=20)
    assert answers["stalled"]["success"] is False  # stopped at EXECUTION_TIMEOUT_SECONDS


def test_many_callers_at_once_on_one_warm_service_all_get_their_own_answer(host, alice):
    from concurrent.futures import ThreadPoolExecutor

    name = publish(host.url, alice, "y = x * 3", inputs=[{"name": "x", "type": "integer"}],
                   outputs=[{"name": "y", "type": "integer"}])
    assert requests.post(f"{host.url}/api/{name}/v1", json={"x": 1}, headers=alice).json()["success"]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda x: requests.post(f"{host.url}/api/{name}/v1", json={"x": x},
                                                        headers=alice).json(), range(64)))
    assert [a["outputParameters"] for a in answers] == [{"y": 3 * x} for x in range(64)]


def test_a_reply_too_large_for_one_read_arrives_whole(host, alice):
    name = publish(host.url, alice, "y = 'z' * (3 * 2**20)", outputs=[{"name": "y", "type": "character"}])
    for _ in range(3):
        out = requests.post(f"{host.url}/api/{name}/v1", json={}, headers=alice).json()
        assert out["success"] and len(out["outputParameters"]["y"]) == 3 * 2**20


@pytest.mark.parametrize("extra, blob", [
    ('"outputParameters": {"y": ' + "9" * 4000 + "}", b""),  # digits cost the host quadratic CPU
    ('"outputParameters": {}, "_blob": "junk"', b"x" * 1024),  # raw bytes have no place in a consume reply
    ('"outputParameters": {}, "extra": 1', b""),
])
def test_a_consume_reply_of_the_wrong_kind_is_refused_not_a_500(host, alice, extra, blob):
    code = (WRITE + "import time\nbody = ('{\"ok\": true, \"success\": true, \"errorMessage\": \"\", \"consoleOutput\": \"\", "
            f"\"changedFiles\": [], \"id\": \"' + call_id() + '\", ' + {extra!r} + '}}').encode()\n"
            f"send(frame(body, {blob!r}))\ntime.sleep(2)\n")
    name = publish(host.url, alice, code)
    r = requests.post(f"{host.url}/api/{name}/v1", json={}, headers=alice)
    assert r.status_code == 200 and r.json()["success"] is False, r.text
    assert "broke the protocol" in r.json()["errorMessage"] or "malformed" in r.json()["errorMessage"] \
        or "above the limit" in r.json()["errorMessage"]


def test_answering_with_the_load_call_id_cannot_stretch_a_call_past_its_timeout(host, alice):
    # A frame carrying the load's id looks like an earlier call's late reply, which earns a retry
    # on a fresh worker: the load, the call and the retry still share one timeout (3 s here).
    import time

    init = WRITE + "LOAD_ID = call_id()\nimport time\ntime.sleep(1.2)\n"
    code = "time.sleep(1.2)\nsend(forged(LOAD_ID, _blob=None, outputParameters={'y': 1}))\ntime.sleep(30)\n"
    name = publish(host.url, alice, code, initCode=init)
    start = time.monotonic()
    r = requests.post(f"{host.url}/api/{name}/v1", json={}, headers=alice)
    assert r.status_code == 200 and r.json()["success"] is False
    assert time.monotonic() - start < 4.5


def test_a_worker_that_claims_an_object_is_already_stored_cannot_save_a_workspace(host, alice):
    # User code reaches its own worker and makes it name a new object as unchanged (not sent):
    # the host keeps nothing the worker does not send or storage does not hold.
    sid = new_session(host.url, alice)
    assert execute(host.url, alice, sid, "kept = 1")["success"] is True
    lie = ("import gc, sys, cloudpickle\nsecret = 'never stored'\n"
           "w = next(o for o in gc.get_objects() if type(o).__name__ == 'Worker' and hasattr(o, 'sent'))\n"
           "fp = sys.modules[type(w).__module__]._object_fingerprint\n"
           "w.sent = dict(w.sent, **{'objects/secret': fp(secret, cloudpickle)})\n")
    r = requests.post(f"{host.url}/sessions/{sid}/execute", json={"code": lie}, headers=alice)
    assert r.status_code == 503 and "could not be saved" in r.json()["message"]
    out = execute(host.url, alice, sid, "names = sorted(k for k in globals() if not k.startswith('__'))",
                  outputParameters=["names"])
    assert out["outputParameters"] == [{"name": "names", "value": ["kept"]}]
