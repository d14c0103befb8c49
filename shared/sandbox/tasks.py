"""Host side of the process limit. A confined worker's filter sends every fork, vfork and clone
(threads included) to the host, which counts the tasks in the worker's process group and
answers "go on" or EAGAIN. It works the same whatever the app's user is: RLIMIT_NPROC would
count every process of that user (the host's too) and does not apply to root at all."""
from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from . import seccomp

log = logging.getLogger("o16n.sandbox")
#: an approved clone may not show in /proc yet: it counts against the limit until its caller
#: asks again (its clone is then done) or this long has passed
_IN_FLIGHT_SECONDS = 0.25
#: a refusal is answered this late, so a fork loop at its limit cannot keep the host busy
_REFUSAL_DELAY = 0.05


@dataclass
class _Watched:
    pgid: int
    limit: int
    approvals: dict[int, float] = field(default_factory=dict)  # caller pid -> when
    full_until: float = 0.0


class TaskLimiter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[int, _Watched | None]] = []
        self._watched: dict[int, _Watched] = {}
        self._refusals: deque[tuple[float, int, int]] = deque()
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None

    def watch(self, listener: int, pgid: int, limit: int) -> None:
        """Take over `listener` (closed when its worker is gone or `forget` is called)."""
        self._post(listener, _Watched(pgid, limit))

    def forget(self, listener: int) -> None:
        self._post(listener, None)

    def _post(self, fd: int, entry: _Watched | None) -> None:
        with self._lock:
            if self._thread is None:
                self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
                self._thread = threading.Thread(target=self._run, name="o16n-task-limit", daemon=True)
                self._thread.start()
            self._pending.append((fd, entry))
        os.write(self._wake_w, b"x")

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        while True:
            timeout = None
            if self._refusals:
                timeout = max(0.0, (self._refusals[0][0] - time.monotonic()) * 1000)
            try:
                events = poller.poll(timeout)
                self._answer_due_refusals()
                for fd, event in events:
                    if fd == self._wake_r:
                        self._apply_pending(poller)
                    elif fd in self._watched:
                        if event & select.POLLIN:
                            self._decide(fd)
                        if event & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                            self._drop(poller, fd)
            except Exception:  # the thread must outlive any one worker's trouble
                log.exception("the task limiter failed to answer a worker")

    def _apply_pending(self, poller: select.poll) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            pending, self._pending = self._pending, []
        for fd, entry in pending:
            if entry is None:
                self._drop(poller, fd)
            else:
                self._watched[fd] = entry
                poller.register(fd, select.POLLIN)

    def _drop(self, poller: select.poll, fd: int) -> None:
        if self._watched.pop(fd, None) is None:
            return
        poller.unregister(fd)
        self._refusals = deque(r for r in self._refusals if r[1] != fd)
        os.close(fd)

    def _decide(self, fd: int) -> None:
        got = seccomp.receive(fd)
        if got is None:
            return
        notification, caller = got
        entry = self._watched[fd]
        now = time.monotonic()
        entry.approvals.pop(caller, None)
        for pid in [p for p, t in entry.approvals.items() if now - t > _IN_FLIGHT_SECONDS]:
            del entry.approvals[pid]
        if now >= entry.full_until and count(entry.pgid) + len(entry.approvals) < entry.limit:
            entry.approvals[caller] = now
            seccomp.respond(fd, notification, allow=True)
            return
        entry.full_until = now + _REFUSAL_DELAY  # skip recounting while a loop hammers the limit
        self._refusals.append((now + _REFUSAL_DELAY, fd, notification))

    def _answer_due_refusals(self) -> None:
        now = time.monotonic()
        while self._refusals and self._refusals[0][0] <= now:
            _, fd, notification = self._refusals.popleft()
            if fd in self._watched:
                seccomp.respond(fd, notification, allow=False)


def count(pgid: int) -> int:
    """Tasks (processes and their threads, zombies included) whose process group is `pgid`."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 17 and int(fields[2]) == pgid:
            total += int(fields[17])
    return total


limiter = TaskLimiter()
