"""Host side of the process limit. A confined worker's filter sends every fork, vfork and clone
(threads included) to the host, which counts the tasks in the worker's process group and
answers "go on" or EAGAIN. It works the same whatever the app's user is: RLIMIT_NPROC would
count every process of that user (the host's too) and does not apply to root at all.

It also remembers whether a worker started a process (not a thread) since it was last asked,
so the host sweeps and measures process groups only where there is something to find."""
from __future__ import annotations

import heapq
import logging
import os
import select
import threading
import time
from dataclasses import dataclass, field

from . import seccomp

log = logging.getLogger("o16n.sandbox")
#: an approved clone may not show in /proc yet: it counts against the limit until its caller
#: asks again (its clone is then done) or this long has passed
_IN_FLIGHT_SECONDS = 0.25
#: a refusal is answered this late, so a fork loop at its limit cannot keep the host busy
_REFUSAL_DELAY = 0.05
#: processes and threads a worker may start per second, after a burst of as many as its limit;
#: each start costs the host a look through /proc
_STARTS_PER_SECOND = 50
_CLONE_THREAD = 0x00010000


@dataclass(eq=False)
class Watched:
    """One worker's listener; the limiter closes its descriptor exactly once."""
    fd: int
    pgid: int
    limit: int
    approvals: dict[int, float] = field(default_factory=dict)  # caller pid -> when
    full_until: float = 0.0
    tokens: float = 0.0
    refilled: float = 0.0
    _started: bool = False
    _last_start: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def note_process(self) -> None:
        with self._lock:
            self._started, self._last_start = True, time.monotonic()

    def processes_started(self, *, clear: bool) -> bool:
        """Whether the worker started a process since this was last cleared. It stays set while
        a start may still be under way (approved, not yet in /proc), so a sweep cannot miss it."""
        with self._lock:
            started = self._started
            if clear and time.monotonic() - self._last_start >= _IN_FLIGHT_SECONDS:
                self._started = False
            return started


class TaskLimiter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[Watched, bool]] = []
        self._watched: dict[int, Watched] = {}
        self._later: list[tuple[float, int, int, int, bool]] = []  # a heap: due, fd, id, caller, process
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None

    def watch(self, listener: int, pgid: int, limit: int) -> Watched:
        """Take over `listener` (closed when its worker is gone or `forget` is called). The
        handle, not the descriptor number, names it from then on: numbers are reused."""
        entry = Watched(listener, pgid, limit, tokens=limit, refilled=time.monotonic())
        self._post(entry, True)
        return entry

    def forget(self, entry: Watched) -> None:
        self._post(entry, False)

    def _post(self, entry: Watched, add: bool) -> None:
        with self._lock:
            if self._thread is None:
                self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
                self._thread = threading.Thread(target=self._run, name="o16n-task-limit", daemon=True)
                self._thread.start()
            self._pending.append((entry, add))
        os.write(self._wake_w, b"x")

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        while True:
            timeout = None
            if self._later:
                timeout = max(0.0, (self._later[0][0] - time.monotonic()) * 1000)
            try:
                events = poller.poll(timeout)
                self._answer_due()
                for fd, event in events:
                    if fd == self._wake_r:
                        self._apply_pending(poller)
                    elif fd in self._watched:
                        if event & select.POLLIN:
                            self._receive(fd)
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
        for entry, add in pending:
            if add:
                self._watched[entry.fd] = entry
                poller.register(entry.fd, select.POLLIN)
            elif self._watched.get(entry.fd) is entry:
                self._drop(poller, entry.fd)

    def _drop(self, poller: select.poll, fd: int) -> None:
        if self._watched.pop(fd, None) is None:
            return
        poller.unregister(fd)
        self._later = [r for r in self._later if r[1] != fd]
        heapq.heapify(self._later)
        os.close(fd)

    def _receive(self, fd: int) -> None:
        got = seccomp.receive(fd)
        if got is None:
            return
        notification, caller, nr, flags = got
        process = nr != seccomp.NR["clone"] or not flags & _CLONE_THREAD
        entry = self._watched[fd]
        now = time.monotonic()
        entry.tokens = min(entry.limit, entry.tokens + (now - entry.refilled) * _STARTS_PER_SECOND)
        entry.refilled = now
        if entry.tokens < 1:  # answered when the rate allows, not before
            self._defer(now + (1 - entry.tokens) / _STARTS_PER_SECOND, fd, notification, caller, process)
            entry.tokens -= 1
            return
        entry.tokens -= 1
        self._decide(fd, notification, caller, process)

    def _decide(self, fd: int, notification: int, caller: int, process: bool) -> None:
        entry = self._watched[fd]
        now = time.monotonic()
        entry.approvals.pop(caller, None)
        for pid in [p for p, t in entry.approvals.items() if now - t > _IN_FLIGHT_SECONDS]:
            del entry.approvals[pid]
        if now >= entry.full_until and count(entry.pgid) + len(entry.approvals) < entry.limit:
            entry.approvals[caller] = now
            if process:
                entry.note_process()
            seccomp.respond(fd, notification, allow=True)
            return
        entry.full_until = now + _REFUSAL_DELAY  # skip recounting while a loop hammers the limit
        self._defer(now + _REFUSAL_DELAY, fd, notification, -1, process)

    def _defer(self, due: float, fd: int, notification: int, caller: int, process: bool) -> None:
        heapq.heappush(self._later, (due, fd, notification, caller, process))

    def _answer_due(self) -> None:
        now = time.monotonic()
        while self._later and self._later[0][0] <= now:
            _, fd, notification, caller, process = heapq.heappop(self._later)
            if fd not in self._watched:
                continue
            if caller < 0:  # a refusal that waited
                seccomp.respond(fd, notification, allow=False)
            else:
                self._decide(fd, notification, caller, process)


def proc_stat(pid: int | str) -> list[bytes] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, pgrp, ...] (fields 3 onwards)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    return fields if len(fields) > 17 else None


def members(pgid: int) -> list[tuple[int, int, bool]]:
    """(pid, threads, dead) of every process whose process group is `pgid`. Dead: a zombie with
    no thread left. A process whose first thread exited shows as a zombie too while its other
    threads run on: that one is alive, and must be measured and ended like any other."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and (fields := proc_stat(name)) is not None and int(fields[2]) == pgid:
            threads = int(fields[17])
            found.append((int(name), threads, fields[0] == b"Z" and threads <= 1))
    return found


def proc_dir(pid: int) -> str:
    """Where /proc shows a process's memory and descriptors: its own entry, or one of its live
    threads' once its first thread has exited (the first thread's entry then shows neither)."""
    fields = proc_stat(pid)
    if fields is not None and fields[0] == b"Z":
        try:
            tids = [t for t in os.listdir(f"/proc/{pid}/task") if t != str(pid)]
        except OSError:
            tids = []
        if tids:
            return f"/proc/{pid}/task/{tids[0]}"
    return f"/proc/{pid}"


def count(pgid: int) -> int:
    """Tasks (processes and their threads, zombies too: they hold pids) in group `pgid`."""
    return sum(threads for _, threads, _ in members(pgid))


limiter = TaskLimiter()
