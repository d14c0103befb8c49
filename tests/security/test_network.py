"""No network by default; SANDBOX_OUTBOUND_PORTS opens outbound TCP to the listed ports only."""
import re
import socket
import threading

import pytest
import requests

from tests.e2e.conftest import start_host, stop_host
from tests.e2e.helpers import execute, new_session

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]

CONNECT = """
import socket
def connect(port):
    try:
        socket.create_connection(('127.0.0.1', port), timeout=2).close()
        return 'CONNECTED'
    except Exception as e:
        return type(e).__name__
def make(*args):
    try:
        socket.socket(*args).close()
        return 'MADE'
    except Exception as e:
        return type(e).__name__
"""


def azurite_ports(conn: str) -> list[int]:
    return [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", conn)]


def probe(url, headers, code, *outputs, inputs=()):
    sid = new_session(url, headers)
    out = execute(url, headers, sid, CONNECT + code, outputParameters=list(outputs),
                  inputParameters=[{"name": k, "value": v} for k, v in inputs])
    assert out["success"] is True, out["errorMessage"]
    return {p["name"]: p["value"] for p in out["outputParameters"]}


def test_storage_and_the_api_itself_cannot_be_reached(host, alice, azurite):
    api_port = int(host.url.rsplit(":", 1)[1])
    got = probe(host.url, alice, "results = [connect(p) for p in ports]", "results",
                inputs=[("ports", [*azurite_ports(azurite), api_port])])
    assert set(got["results"]) == {"PermissionError"}


FAST_OPEN = """
def fast_open(port):
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.sendto(b'GET / HTTP/1.0\\r\\n\\r\\n', socket.MSG_FASTOPEN, ('127.0.0.1', port))
        return 'SENT ' + repr(s.recv(100))
    except Exception as e:
        return type(e).__name__
def listen_unbound():
    try:
        s = socket.socket()
        s.listen()
        return 'LISTENING on %d' % s.getsockname()[1]
    except Exception as e:
        return type(e).__name__
"""


def test_tcp_fast_open_and_listening_without_bind_are_refused(host, alice, azurite):
    # A first sendto(MSG_FASTOPEN) connects without Landlock's connect check, and listen()
    # on an unbound socket binds without its bind check.
    ports = azurite_ports(azurite)  # blob, queue, table
    got = probe(host.url, alice, FAST_OPEN + "fo = [fast_open(p) for p in ports]\nls = listen_unbound()", "fo", "ls",
                inputs=[("ports", ports)])
    assert got == {"fo": ["PermissionError"] * len(ports), "ls": "PermissionError"}


def test_no_listening_udp_or_unix_sockets(host, alice):
    got = probe(host.url, alice, "try:\n    s = socket.socket()\n    s.bind(('127.0.0.1', 0))\n    bind = 'BOUND'\n"
                "except Exception as e:\n    bind = type(e).__name__\n"
                "udp = make(socket.AF_INET, socket.SOCK_DGRAM)\nudp6 = make(socket.AF_INET6, socket.SOCK_DGRAM)\n"
                "unix = make(socket.AF_UNIX, socket.SOCK_STREAM)\n"
                "raw = make(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\n"
                "netlink = make(socket.AF_NETLINK, socket.SOCK_RAW)\n"
                "sctp = make(socket.AF_INET, socket.SOCK_STREAM, 132)",
                "bind", "udp", "udp6", "unix", "raw", "netlink", "sctp")
    assert set(got.values()) == {"PermissionError"}, got


def test_outbound_ports_open_tcp_to_those_ports_only(azurite):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    threading.Thread(target=lambda: listener.accept()[0].close(), daemon=True).start()
    proc, url = start_host(SANDBOX_OUTBOUND_PORTS=str(port), SPARE_WORKERS="0")
    try:
        from tests.constants import USERS

        token = requests.post(f"{url}/login", json={"username": "alice", "password": USERS["alice"]}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        got = probe(url, headers, FAST_OPEN + "opened = connect(port)\nothers = [connect(p) for p in closed]\n"
                    "fo = [fast_open(p) for p in closed]\nls = listen_unbound()\n"
                    "udp = make(socket.AF_INET, socket.SOCK_DGRAM)", "opened", "others", "fo", "ls", "udp",
                    inputs=[("port", port), ("closed", azurite_ports(azurite))])
        closed = len(azurite_ports(azurite))  # blob, queue, table
        assert got == {"opened": "CONNECTED", "others": ["PermissionError"] * closed,
                       "fo": ["PermissionError"] * closed, "ls": "PermissionError", "udp": "MADE"}
        status = requests.get(f"{url}/status", headers=headers).json()["components"]["sandbox"]["details"]
        assert status["network"] == f"outbound TCP to ports {port}, and UDP"
    finally:
        stop_host(proc)
        listener.close()
