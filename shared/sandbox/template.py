"""Host side of the template: one process per host with PRELOAD_MODULES imported, which forks
new workers on request (`worker.template`). A forked worker starts in milliseconds instead of
the seconds scikit-learn takes to import, and shares the imported modules' memory with the
template and its siblings until it writes to it.

The template runs no user code and reads no user data: it is told what to fork and hands over
a channel end. Its children confine themselves before they read either. The template is their
parent and reaps one only when the host asks (`Forked.poll`), so a worker's pid, and with it
its process group id, is not reused before the host has seen it end: the same guarantee the
host has for a worker it started itself."""
from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .protocol import HEADER, decode, encode

log = logging.getLogger("o16n.sandbox")
WORKER = Path(__file__).with_name("worker.py")
#: how long the template may take to import PRELOAD_MODULES, and to answer a request
_START_SECONDS = 120
_ANSWER_SECONDS = 5
#: after the template failed, workers start the cold way for this long before it is tried again
_RETRY_SECONDS = 60


class Forked:
    """A worker forked by the template, with Popen's pid, poll, wait and returncode."""

    def __init__(self, template: "Template", pid: int, proc: subprocess.Popen) -> None:
        self.pid = pid
        self._template, self._proc = template, proc
        self._pidfd = os.pidfd_open(pid)
        self._code: int | None = None
        self._reaping = threading.RLock()

    @property
    def returncode(self) -> int | None:
        """None while the pid is its own: it runs, or has ended and is not reaped."""
        with self._reaping:
            return self._returncode()

    def _returncode(self) -> int | None:
        if self._code is None and self._proc.poll() is not None:
            # The template died: init reaps its orphans, so this pid is no longer held. Its
            # pidfd still names this very process: end it (its group is swept by member).
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except OSError:
                pass
            self._code = -9
            self._close()
        return self._code

    def poll(self) -> int | None:
        with self._reaping:
            if self.returncode is None and self._ended(0):
                code = self._template.reap(self.pid, self._proc)
                self._code = -9 if code is None else code
                self._close()
            return self._code

    def wait(self) -> int:
        while self.poll() is None:
            self._ended(1000)
        return self._code  # type: ignore[return-value]

    def _ended(self, timeout_ms: int) -> bool:
        """Its pidfd is readable once it has exited (a poll object per call: they are not
        for concurrent use, and calls come from many threads)."""
        poller = select.poll()
        fd = self._pidfd
        if fd < 0:
            return True
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(timeout_ms))

    def _close(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1

    def __del__(self) -> None:
        self._close()


class Template:
    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._chan: socket.socket | None = None
        self._lock = threading.Lock()  # one request at a time on its channel
        self._failed_at = -_RETRY_SECONDS
        self._starting = False

    def state(self) -> str:
        """For /status: ready, starting, failed (workers start cold meanwhile) or none yet."""
        if self.ready:
            return "ready"
        if self._starting:
            return "starting"
        return "failed" if self._failed_at >= 0 else "none"

    @property
    def ready(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def due(self) -> bool:
        """Not running, and not failed recently: worth starting."""
        return not self.ready and time.monotonic() - self._failed_at >= _RETRY_SECONDS

    def start(self, rules: dict[str, Any], env: dict[str, str], folder: str) -> None:
        """Start it and wait until it has imported its modules (seconds; from a background thread)."""
        from .policy import to_json  # policy reads this module's state for /status

        self.stop()
        self._starting = True
        chan, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with theirs:
                proc = subprocess.Popen(
                    [sys.executable, "-I", str(WORKER), "--template", to_json(rules), str(theirs.fileno())],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=folder,
                    env=env, start_new_session=True, pass_fds=(theirs.fileno(),))
            chan.settimeout(_START_SECONDS)
            hello = _read(chan)
        except (OSError, ValueError) as exc:
            hello = {"ok": False, "error": str(exc)}
            proc = locals().get("proc")
        self._starting = False
        if not isinstance(hello, dict) or not hello.get("ok"):
            log.warning("no worker template; workers start without one: %s",
                        hello.get("error") if isinstance(hello, dict) else "no answer")
            if proc is not None:
                proc.kill()
                proc.wait()
            chan.close()
            self._failed_at = time.monotonic()
            return
        if hello.get("missing"):
            log.info("PRELOAD_MODULES not installed: %s", ", ".join(map(str, hello["missing"])))
        chan.settimeout(_ANSWER_SECONDS)
        with self._lock:
            self._proc, self._chan = proc, chan

    def fork(self, rules: dict[str, Any], theirs: socket.socket) -> Forked | None:
        """A worker forked with `rules` on its channel end `theirs`; None when there is no template."""
        if not self.ready:
            return None
        with self._lock:
            proc, chan = self._proc, self._chan
            if proc is None or chan is None:
                return None
            try:
                socket.send_fds(chan, encode({"op": "fork", "policy": rules}), [theirs.fileno()])
                reply = _read(chan)
                if not (isinstance(reply, dict) and reply.get("ok") and isinstance(reply.get("pid"), int)):
                    raise ValueError(f"an answer that is not a pid: {reply!r:.200}")
                return Forked(self, reply["pid"], proc)
            except (OSError, ValueError) as exc:
                log.warning("the worker template failed (%s); workers start without it for now", exc)
                self._end()
                return None

    def reap(self, pid: int, proc: subprocess.Popen) -> int | None:
        """The exit code of its child `pid`, which has ended; None if the template is gone."""
        with self._lock:
            if proc is not self._proc or self._chan is None:
                return None
            try:
                self._chan.sendall(encode({"op": "reap", "pid": pid})[0])
                reply = _read(self._chan)
            except (OSError, ValueError):
                self._end()
                return None
            code = reply.get("code") if isinstance(reply, dict) else None
            return code if isinstance(code, int) else None

    def stop(self) -> None:
        with self._lock:
            self._end()

    def _end(self) -> None:
        """(lock held) Its children end with it: it kills their groups when its channel closes
        (and each ends itself within a second once its parent is gone)."""
        if self._chan is not None:
            self._chan.close()
        if self._proc is not None:
            try:
                self._proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._failed_at = time.monotonic()
        self._proc, self._chan = None, None


def _read(chan: socket.socket) -> Any:
    head = _exactly(chan, HEADER.size)
    size, blob = HEADER.unpack(head)
    if size > 2**16 or blob:
        raise ValueError("an oversized answer")
    return decode(_exactly(chan, size), reply=True)


def _exactly(chan: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = chan.recv(n - len(buf))
        if not chunk:
            raise OSError("the template closed its channel")
        buf += chunk
    return buf


template = Template()
