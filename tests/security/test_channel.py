"""User code that writes into its worker's channel to the host: forged, stray, oversized and
malformed frames cost that worker (stopped, clear error), never the host or another call."""
import pytest
import requests

from tests.e2e.helpers import execute, new_session, publish

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]

# The channel's descriptor is on the worker's command line: user code can always find it.
WRITE = """
import json, os, struct, sys
def send(frame):
    os.write(int(sys.argv[2]), frame)
def forged(call_id):
    body = json.dumps({"ok": True, "success": True, "errorMessage": "", "consoleOutput": "FORGED",
                       "outputParameters": [], "changedFiles": [], "id": call_id}).encode()
    return struct.pack('>I', len(body)) + body
"""


def test_a_forged_reply_is_not_taken_for_the_answer(host, alice):
    sid = new_session(host.url, alice)
    execute(host.url, alice, sid, "kept = 'before'")
    out = execute(host.url, alice, sid, WRITE + "kept = 'during'\nsend(forged('0' * 16))")
    assert out["success"] is False and "broke the protocol" in out["errorMessage"]
    assert "FORGED" not in out["consoleOutput"]
    out = execute(host.url, alice, sid, "", outputParameters=["kept"])
    assert out["success"] is True and out["outputParameters"] == [{"name": "kept", "value": "before"}]


def test_a_reply_forged_with_the_calls_own_id_answers_that_call_only(host, alice):
    # In-process, user code can read the call's id from memory: the most it gets is to choose
    # the answer to its own call, which its code decides anyway. The real reply then arrives
    # as a stray frame, and the next call gets a fresh worker.
    sid = new_session(host.url, alice)
    execute(host.url, alice, sid, "kept = 'before'")
    out = execute(host.url, alice, sid, WRITE + "f = sys._getframe()\n"
                  "while 'msg' not in f.f_locals:\n    f = f.f_back\nsend(forged(f.f_locals['msg']['id']))")
    assert out["consoleOutput"] == "FORGED"
    out = execute(host.url, alice, sid, "", outputParameters=["kept"])
    assert out["success"] is True and out["consoleOutput"] == ""
    assert out["outputParameters"] == [{"name": "kept", "value": "before"}]


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
    assert r.json()["success"] is True and r.json()["consoleOutput"] == ""
    assert r.json()["outputParameters"] == {"y": 0}


def test_an_oversized_frame_stops_the_worker_without_the_host_allocating_it(host, alice):
    sid = new_session(host.url, alice)
    before = host.rss_mb()
    out = execute(host.url, alice, sid, WRITE + "send(struct.pack('>I', 400 * 2**20) + b'x' * 2**20)\n"
                  "import time\ntime.sleep(1)")
    assert out["success"] is False and "above the limit" in out["errorMessage"]
    assert host.rss_mb() - before < 50
    assert execute(host.url, alice, sid, "x = 1")["success"] is True


def test_a_malformed_frame_stops_the_worker(host, alice):
    sid = new_session(host.url, alice)
    out = execute(host.url, alice, sid, WRITE + "send(struct.pack('>I', 9) + b'not json!')")
    assert out["success"] is False and "malformed" in out["errorMessage"]
    assert execute(host.url, alice, sid, "x = 1")["success"] is True
    assert host.healthy(alice)
