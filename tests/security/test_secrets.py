"""User code, as a Contributor, cannot read any secret of the app."""
import pytest

from tests.constants import TEST_ENV
from tests.e2e.conftest import ROOT
from tests.e2e.helpers import execute, new_session, publish
from tests.security.conftest import LIMITS

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]

SECRETS = [TEST_ENV["TOKEN_SIGNING_KEY"], TEST_ENV["SNAPSHOT_SIGNING_KEY"], TEST_ENV["LOCAL_ADMIN_PASSWORD"],
           "AccountKey", "Eby8vdM02xNOcqFlq"]

# Tries each path and reports what happened: the content if it could be read, else the error.
PROBE = """
import os
def probe(path):
    try:
        with open(path, 'rb') as f:
            return 'READ ' + f.read(200000).decode('latin-1')
    except Exception as e:
        return type(e).__name__
"""


def run(host, headers, code, *outputs, inputs=()):
    sid = new_session(host.url, headers)
    out = execute(host.url, headers, sid, PROBE + code, outputParameters=list(outputs),
                  inputParameters=[{"name": k, "value": v} for k, v in inputs])
    assert out["success"] is True, out["errorMessage"]
    return {p["name"]: p["value"] for p in out["outputParameters"]}


def assert_no_secret(text):
    for secret in SECRETS:
        assert secret not in text


def test_the_api_process_environment_memory_and_command_line_are_unreadable(host, alice):
    # the API process, and the worker's parent: the template it was forked from
    got = run(host, alice, "ppid = os.getppid()\nfound = []\n"
              "for pid in (api, ppid):\n"
              "    found += [probe(f'/proc/{pid}/environ'), probe(f'/proc/{pid}/mem'), probe(f'/proc/{pid}/cmdline')]\n"
              "own = dict(os.environ)", "ppid", "found", "own", inputs=[("api", host.pid)])
    assert got["ppid"] in host.template_pids()
    assert got["found"] == ["PermissionError"] * 6
    for key in TEST_ENV:
        assert key not in got["own"]
    assert_no_secret(repr(got))


def test_no_process_of_the_app_or_the_tests_gives_its_environment_away(host, alice, azurite):
    import os

    from tests.security.conftest import processes_with

    pids = [host.pid, os.getpid(), *processes_with("azurite")]
    got = run(host, alice, "found = [probe(f'/proc/{p}/environ') for p in pids]\n"
              "try:\n    listing = os.listdir('/proc')\nexcept Exception as e:\n    listing = type(e).__name__",
              "found", "listing", inputs=[("pids", pids)])
    assert got["listing"] == "PermissionError"
    assert set(got["found"]) == {"PermissionError"}
    assert_no_secret(repr(got))


def test_the_app_folder_and_its_settings_are_unreadable_and_unwritable(host, alice, app_sentinel):
    got = run(host, alice, "sentinel = probe(path)\nhostjson = probe(root + '/host.json')\n"
              "settings = probe(root + '/local.settings.json')\n"
              "try:\n    listing = os.listdir(root)\nexcept Exception as e:\n    listing = type(e).__name__\n"
              "try:\n    open(root + '/function_app.py', 'a').write('#')\n    write = 'WROTE'\n"
              "except Exception as e:\n    write = type(e).__name__",
              "sentinel", "hostjson", "settings", "listing", "write",
              inputs=[("path", app_sentinel), ("root", str(ROOT))])
    assert got["sentinel"] == got["hostjson"] == got["listing"] == got["write"] == "PermissionError"
    assert got["settings"] in ("PermissionError", "FileNotFoundError")
    assert "#" not in (ROOT / "function_app.py").read_text()[-2:]


def test_another_users_worker_folder_and_the_system_temp_folder_are_closed(host, alice, bob):
    theirs = run(host, bob, "open('diary.txt', 'w').write('bob secret')\nhere = os.getcwd()", "here")["here"]
    got = run(host, alice, "diary = probe(folder + '/diary.txt')\n"
              "try:\n    os.listdir(os.path.dirname(os.getcwd()))\n    up = 'LISTED'\n"
              "except Exception as e:\n    up = type(e).__name__\n"
              "try:\n    open('/tmp/o16n-escape', 'w')\n    tmp = 'WROTE'\nexcept Exception as e:\n"
              "    tmp = type(e).__name__\n"
              "import tempfile\nmine = tempfile.mkstemp()[1].startswith(os.getcwd())",
              "diary", "up", "tmp", "mine", inputs=[("folder", theirs)])
    assert got == {"diary": "PermissionError", "up": "PermissionError", "tmp": "PermissionError", "mine": True}


def test_a_published_service_cannot_read_them_either(host, alice):
    import requests

    name = publish(host.url, alice, PROBE + "env = probe(f'/proc/{os.getppid()}/environ')\nhere = probe(path)",
                   inputs=[{"name": "path", "type": "character"}],
                   outputs=[{"name": "env", "type": "character"}, {"name": "here", "type": "character"}])
    r = requests.post(f"{host.url}/api/{name}/v1", json={"path": str(ROOT / "host.json")}, headers=alice)
    assert r.json()["outputParameters"] == {"env": "PermissionError", "here": "PermissionError"}


def test_workers_hold_no_capabilities_and_cannot_trace(host, alice):
    got = run(host, alice, "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
              "hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)\ndata = (ctypes.c_uint32 * 6)()\n"
              "libc.syscall(125, hdr, data)\ncaps = list(data)\n"
              "traced = []\nfor pid in (os.getppid(), api):\n"
              "    traced.append((libc.ptrace(16, pid, 0, 0), ctypes.get_errno()))",
              "caps", "traced", inputs=[("api", host.pid)])
    assert got["caps"] == [0] * 6
    assert got["traced"] == [[-1, 1]] * 2  # EPERM


def test_the_limits_in_force_are_the_configured_ones(host, alice):
    import requests

    sandbox = requests.get(f"{host.url}/status", headers=alice).json()["components"]["sandbox"]
    assert sandbox["statusCode"] == "pass"
    assert sandbox["details"]["mode"] == "strict" and sandbox["details"]["network"] == "none"
    assert sandbox["details"]["landlockAbi"] >= 6 and sandbox["details"]["seccomp"] is True
    assert sandbox["details"]["limits"]["processes"] == int(LIMITS["WORKER_MAX_PROCESSES"])
