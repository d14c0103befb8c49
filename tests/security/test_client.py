"""The o16n client and CLI facing a hostile server, another local user, or a lost network: what
the client/CLI attacker round found, each kept fixed. A fake server (`Hostile`) plays the
server's part where the real one would never misbehave."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from o16n import AccessTokenCredential, O16nClient, O16nError
from o16n.services import Batch, Service
from o16n import _files
from tests.client.conftest import O16N, Cli

SERVICE = {"name": "Add", "version": "1.0", "operationId": "add", "runtimeType": "Python",
           "inputParameterDefinitions": [{"name": "x", "type": "numeric"}], "outputParameterDefinitions": []}


class Hostile:
    """A server answering each (method, path) with what a test sets; it records every request."""

    def __init__(self, routes):
        self.routes, self.seen = routes, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.seen.append((self.command, self.path, dict(self.headers), body))
                answer = outer.routes.get((self.command, self.path.split("?")[0]))
                if answer is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                answer(self) if callable(answer) else self._json(*answer)

            def _json(self, status, value, headers=None):
                data = json.dumps(value).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = _any  # noqa: N815

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.http.server_port}"

    def close(self):
        self.http.shutdown()


@pytest.fixture
def hostile():
    made = []

    def make(routes):
        made.append(Hostile(routes))
        return made[-1]
    yield make
    for h in made:
        h.close()


def trickled_headers(lines: int, *, then_answer: bool = False):
    """A handler sending a status line, then a header line every 0.5 s (each read is quick, the
    answer never is); `then_answer`: it ends the headers afterwards, with an empty body."""
    def send(handler):
        handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(lines):
            handler.wfile.write(f"X-Slow-{i}: 1\r\n".encode())
            handler.wfile.flush()
            time.sleep(0.5)
        if then_answer:
            handler.wfile.write(b"Content-Length: 0\r\n\r\n")
        else:
            handler.close_connection = True
    return send


def login_as(cli: Cli, url: str) -> None:
    """A profile signed in to `url` with a token (no server call needed to write it by hand)."""
    cli.config.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name, value in (("default.json", {"name": "default", "server": url, "method": "token"}),
                        ("default.tokens.json", {"access_token": "token-for-" + url})):
        path = cli.config / name
        path.write_text(json.dumps(value))
        os.chmod(path, 0o600)


def test_a_failed_sign_in_keeps_the_previous_one_and_writes_nothing(server, hostile, cli):
    cli.login(server, "bob")
    before = {p.name: p.read_bytes() for p in cli.config.iterdir()}
    other = hostile({("GET", "/status"): (401, {"message": "no"})})
    done = cli("login", other.url, "--token-stdin", stdin="a-token-for-the-other-server\n")
    assert done.returncode == 1
    assert {p.name: p.read_bytes() for p in cli.config.iterdir()} == before
    assert b"a-token-for-the-other-server" not in b"".join(before.values())
    cli.ok("services", "list")  # still bob, on the first server
    wrong = cli("login", server, "--username", "bob", "--password-stdin", stdin="wrong password\n")
    assert wrong.returncode == 1 and {p.name: p.read_bytes() for p in cli.config.iterdir()} == before


def test_signing_in_again_revokes_the_previous_sign_in(server, cli):
    cli.login(server, "bob")
    first = json.loads((cli.config / "default.tokens.json").read_text())["refresh_token"]
    cli.login(server, "alice")
    assert requests.post(f"{server}/login/refreshToken", json={"refreshToken": first}).status_code == 401


def test_logout_keeps_the_tokens_when_the_server_cannot_be_told(server, cli):
    cli.login(server, "bob")
    kept = json.loads((cli.config / "default.tokens.json").read_text())
    profile = json.loads((cli.config / "default.json").read_text())
    (cli.config / "default.json").write_text(json.dumps({**profile, "server": "http://127.0.0.1:9"}))
    done = cli("logout")
    assert done.returncode == 1 and "could not reach" in done.stderr
    assert json.loads((cli.config / "default.tokens.json").read_text())["refresh_token"] == kept["refresh_token"]
    (cli.config / "default.json").write_text(json.dumps(profile))
    cli.ok("logout")  # retried once the server answers: now revoked
    assert requests.post(f"{server}/login/refreshToken", json={"refreshToken": kept["refresh_token"]}).status_code == 401


def test_a_redirect_never_carries_a_password_elsewhere(hostile, cli):
    catcher = hostile({("POST", "/login"): (200, {"access_token": "x", "refresh_token": "y", "expires_in": 3600})})

    def redirect(handler):
        handler.send_response(307)
        handler.send_header("Location", catcher.url + "/login")
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    front = hostile({("POST", "/login"): redirect})
    done = cli("login", front.url, "--username", "alice", "--password-stdin", stdin="S3cret-PW\n")
    assert done.returncode == 1 and "redirect" in done.stderr
    assert catcher.seen == [] and "S3cret-PW" not in done.stderr + done.stdout


def test_a_batch_progress_bar_shows_server_text_inert(hostile, cli, tmp_path):
    evil = "b1\x1b]0;PWNED\x07\x1b[2J[link=https://evil.example]x[/link][/]"
    api = "/api/Add/1.0/batch"
    h = hostile({("GET", "/services/Add/1.0"): (200, [SERVICE]),
                 ("POST", api): (202, {"batchExecutionId": evil}),
                 ("GET", f"{api}/b1%1B%5D0%3BPWNED%07%1B%5B2J%5Blink%3Dhttps%3A%2F%2Fevil.example%5Dx%5B%2Flink%5D%5B%2F%5D"):
                     (200, {"state": "Complete", "completedItemCount": 1, "totalItemCount": 1,
                            "batchExecutionResults": [{"success": True, "outputParameters": {"y": "\x1b[31m"}}]})})
    login_as(cli, h.url)
    (tmp_path / "r.jsonl").write_text('{"x": 1}\n')
    done = cli("batch", "start", "Add", "1.0", str(tmp_path / "r.jsonl"), "--wait", env={"O16N_PROGRESS": "1"})
    assert done.returncode == 0, done.stderr
    for stream in (done.stdout, done.stderr):
        assert "\x1b]0;PWNED" not in stream and "\x1b[2J" not in stream and "\x1b[31m" not in stream
    assert "[link=https://evil.example]" in done.stderr  # shown, not parsed


def test_an_operation_id_adds_a_method_and_never_replaces_a_field(hostile):
    h = hostile({})
    client = O16nClient(h.url, None)
    for op in ("name", "version", "raw", "inputs", "consume", "swagger", "_client", "batch"):
        svc = Service(client, {**SERVICE, "operationId": op})
        assert (svc.name, svc.version, svc.inputs[0].name) == ("Add", "1.0", "x") and callable(svc.consume)
        assert getattr(type(svc), op, None) is None or getattr(svc, op).__func__ is getattr(type(svc), op)
    assert callable(Service(client, SERVICE).add)


def test_exit_codes_do_not_hide_a_refusal_or_blame_the_user_for_the_server(server, hostile, tmp_path):
    bob, alice = Cli(tmp_path / "bob"), Cli(tmp_path / "alice")
    bob.login(server, "bob")
    alice.login(server, "alice")
    sid = alice.ok("sessions", "create").stdout.strip()
    closed = bob("sessions", "close", sid)  # not bob's: the server says 404
    assert closed.returncode == 1 and "(404)" in closed.stderr
    assert sid in alice.ok("sessions", "list").stdout
    assert bob("services", "delete", "NoSuchService", "1.0", "--yes").returncode == 1
    assert bob("snapshots", "delete", "no-such-snapshot").returncode == 1

    (tmp_path / "fail.py").write_text("def fail(x):\n    raise ValueError('every record fails')\n")
    alice.ok("publish", "FailAll", "1", "--code", str(tmp_path / "fail.py"), "--function", "fail",
             "--inputs", "x=float", "--outputs", "y=float")
    (tmp_path / "r.jsonl").write_text('{"x": 1}\n{"x": 2}\n')
    done = alice("batch", "start", "FailAll", "1", str(tmp_path / "r.jsonl"), "--wait")
    assert done.returncode == 1 and "2 of 2 records failed" in done.stderr

    h = hostile({("GET", "/snapshots"): (200, [{"id": "s1", "contentSize": "big"}]),
                 ("GET", "/services/Add/1.0"): (503, {"message": "busy"}, {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"})})
    login_as(cli := Cli(tmp_path / "h"), h.url)
    assert cli("snapshots", "list").returncode == 0
    busy = cli("services", "show", "Add", "1.0")
    assert busy.returncode == 1 and "(503) busy" in busy.stderr


def test_downloads_stay_where_the_user_asked(hostile, tmp_path):
    evil_id = "../../planted/evil"
    h = hostile({("GET", "/snapshots/..%2F..%2Fplanted%2Fevil"): (200, "zip")})
    cli = Cli(tmp_path / "cfg")
    login_as(cli, h.url)
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    done = cli("snapshots", "download", evil_id, cwd=work)  # an id taken from the server's list, say
    assert done.returncode == 0 and (work / "evil.zip").exists() and not (tmp_path / "planted").exists()
    hidden = cli("snapshots", "download", "x/..", cwd=work)
    assert hidden.returncode == 2 and "--output" in hidden.stderr

    client = O16nClient(h.url, AccessTokenCredential("t"))
    batch = Batch(Service(client, SERVICE), None, None, execution_id="b1")
    h.routes[("GET", "/api/Add/1.0/batch/b1/0/files/.bashrc")] = (200, "x")
    h.routes[("GET", "/api/Add/1.0/batch/b1/0/files/out.txt")] = (200, "new")
    with pytest.raises(ValueError):
        batch.download(0, ".bashrc", tmp_path)
    (tmp_path / "out.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        batch.download(0, "out.txt", tmp_path)
    assert (tmp_path / "out.txt").read_text() == "mine"
    assert batch.download(0, "out.txt", tmp_path, overwrite=True).read_text() == '"new"'


def test_a_trickling_server_cannot_hold_a_call(hostile):
    def trickle(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()
        for _ in range(40):
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(0.25)
    h = hostile({("GET", "/status"): trickle})
    start = time.monotonic()
    with pytest.raises(O16nError, match="longer than 2 s"):
        O16nClient(h.url, None, timeout=2).status()
    assert time.monotonic() - start < 5


def test_token_folders_open_to_others_are_refused_and_new_ones_are_private(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o775)
    os.chmod(shared, 0o2775)
    with pytest.raises(O16nError, match="open to other users"):
        _files.write_private(shared / "t.json", b"{}")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o2775 and not (shared / "t.json").exists()
    old = os.umask(0)
    try:
        _files.write_private(tmp_path / "new" / "parent" / "o16n" / "t.json", b"{}")
    finally:
        os.umask(old)
    for folder in ("new", "new/parent", "new/parent/o16n"):
        assert stat.S_IMODE((tmp_path / folder).stat().st_mode) == 0o700, folder


def test_a_batch_that_never_ends_can_be_given_up_on(hostile, cli, tmp_path):
    h = hostile({("GET", "/services/Add/1.0"): (200, [SERVICE]),
                 ("POST", "/api/Add/1.0/batch"): (202, {"batchExecutionId": "b1"}),
                 ("GET", "/api/Add/1.0/batch/b1"): (200, {"state": "InProgress", "totalItemCount": 1})})
    login_as(cli, h.url)
    (tmp_path / "r.jsonl").write_text('{"x": 1}\n')
    done = cli("batch", "start", "Add", "1.0", str(tmp_path / "r.jsonl"), "--wait", "--timeout", "1")
    assert done.returncode == 1 and "still InProgress" in done.stderr


# ---- the second attacker round --------------------------------------------------------------

def signed_in_with_password(cli: Cli, url: str) -> None:
    cli.config.mkdir(mode=0o700, parents=True, exist_ok=True)
    tokens = {"username": "bob", "access_token": "a", "refresh_token": "r.secret", "expires_in": 3600,
              "expires_on": int(time.time()) + 3600}
    for name, value in (("default.json", {"name": "default", "server": url, "method": "password", "username": "bob"}),
                        ("default.tokens.json", tokens)):
        (cli.config / name).write_text(json.dumps(value))
        os.chmod(cli.config / name, 0o600)


def test_a_revoke_that_never_reached_the_server_is_not_a_sign_out(hostile, cli):
    h = hostile({("DELETE", "/login/refreshToken"): (400, {"message": "send the refresh token as 'refreshToken'"})})
    signed_in_with_password(cli, h.url)
    done = cli("logout")
    assert done.returncode == 1 and "(400)" in done.stderr
    assert json.loads((cli.config / "default.tokens.json").read_text())["refresh_token"] == "r.secret"


def test_a_compressed_answer_is_refused_unread(hostile):
    import gzip

    bomb = gzip.compress(b"[" + b"0," * 5_000_000 + b"0]")

    def send(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Content-Length", str(len(bomb)))
        handler.end_headers()
        handler.wfile.write(bomb)
    h = hostile({("GET", "/status"): send})
    with pytest.raises(O16nError, match="compressed"):
        O16nClient(h.url, None).status()
    assert h.seen[-1][2].get("Accept-Encoding") == "identity"


def test_headers_sent_a_line_at_a_time_cannot_hold_a_call(hostile):
    h = hostile({("GET", "/status"): trickled_headers(30)})
    start = time.monotonic()
    with pytest.raises(O16nError, match="longer than 2 s"):
        O16nClient(h.url, None, timeout=2).status()
    assert time.monotonic() - start < 4


def test_odd_answers_are_the_servers_fault_never_a_usage_error(hostile, cli, tmp_path):
    h = hostile({("GET", "/services/Add/1.0"): (200, [SERVICE]),
                 ("POST", "/api/Add/1.0/batch"): (202, {}),
                 ("GET", "/services/Odd/1.0"): (200, [{**SERVICE, "name": "Odd", "version": ""}])})
    h.routes[("GET", "/sessions")] = lambda handler: (  # nested past what Python's json parses
        handler.send_response(200), handler.send_header("Content-Type", "application/json"), handler.end_headers(),
        handler.wfile.write(b"[" * 200_000 + b"]" * 200_000))
    login_as(cli, h.url)
    (tmp_path / "r.jsonl").write_text('{"x": 1}\n')
    for args in (("batch", "start", "Add", "1.0", str(tmp_path / "r.jsonl")), ("call", "Odd", "1.0"),
                 ("sessions", "list")):
        done = cli(*args)
        assert done.returncode == 1 and "Traceback" not in done.stderr, (args, done.stderr[-500:])


def test_a_server_address_holding_credentials_is_refused(cli):
    done = cli("login", "http://bob:hunter2@127.0.0.1:9", "--username", "alice", "--password-stdin", stdin="pw\n")
    assert done.returncode == 2 and "hunter2" not in done.stderr + done.stdout
    with pytest.raises(ValueError, match="user name or password"):
        O16nClient("http://bob:hunter2@127.0.0.1:9", None)


# ---- the third attacker round ---------------------------------------------------------------

def test_signing_in_while_another_command_renews_keeps_the_new_sign_in(hostile, cli):
    def slow_renew(handler):
        time.sleep(3)
        handler._json(200, {"access_token": "bob-renewed", "refresh_token": "bob-r2", "expires_in": 3600})
    h = hostile({("POST", "/login/refreshToken"): slow_renew, ("GET", "/services"): (200, []),
                 ("POST", "/login"): (200, {"access_token": "alice-a", "refresh_token": "alice-r", "expires_in": 3600}),
                 ("GET", "/status"): (200, {"statusCode": "pass"}), ("DELETE", "/login/refreshToken"): (200, {})})
    signed_in_with_password(cli, h.url)
    tokens = json.loads((cli.config / "default.tokens.json").read_text())
    (cli.config / "default.tokens.json").write_text(json.dumps({**tokens, "expires_on": 0}))  # due for renewal
    renewing = subprocess.Popen([str(O16N), "services", "list"], env=cli.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    cli.login(h.url, "alice")
    renewing.communicate(timeout=60)
    kept = json.loads((cli.config / "default.tokens.json").read_text())
    assert kept["username"] == "alice" and kept["refresh_token"] == "alice-r"
    revoked = [json.loads(body) for method, path, _, body in h.seen if method == "DELETE"]
    assert revoked == [{"refreshToken": "bob-r2"}]  # the previous sign-in, as renewed, was revoked


def test_an_unreadable_previous_sign_in_does_not_stop_a_new_one(server, cli):
    cli.login(server, "bob")
    (cli.config / "default.tokens.json").write_text('{"username": "bob", "access_token": ')  # cut short
    broken = cli("services", "list")
    assert broken.returncode == 1 and "sign in again" in broken.stderr
    cli.login(server, "alice")
    assert json.loads(cli.ok("status", "--json").stdout)["user"] == "alice"


def test_a_call_given_up_on_leaves_no_thread_behind_once_the_server_stops(hostile):
    h = hostile({("GET", "/status"): trickled_headers(6, then_answer=True)})
    client = O16nClient(h.url, None, timeout=1)
    for _ in range(5):
        with pytest.raises(O16nError, match="longer than 1 s"):
            client.status()
    deadline = time.monotonic() + 10
    while any(t.name == "o16n-request" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "request threads outlived the server's answers"
        time.sleep(0.2)
