"""Host side of the workers: start one confined by `policy`, talk to it over a private socket
with a deadline and a size cap, watch its folder, kill its whole process group when it
overruns, and keep warm ones in an LRU."""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import copy
import errno
import fcntl
import logging
import os
import secrets
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..config import get_settings
from ..errors import Unavailable
from . import policy
from .protocol import HEADER, check_reply, decode, encode
from .tasks import Watched, limiter, members, proc_dir, proc_stat
from .template import WORKER, Forked, Template, templates

log = logging.getLogger("o16n.sandbox")
# Only these reach user code; storage strings, signing keys and identity endpoints do not.
_PASSED = ("PATH", "LANG", "LC_ALL", "TZ", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
#: while code runs, its folder is measured this often
_DISK_CHECK_SECONDS = 0.2
#: a call shorter than this, soon after a measurement, is not followed by one
_QUICK_CALL_SECONDS = 0.005
#: how long a call waits for a worker busy with others before it is answered "busy": a slow
#: service must not hold the API's threads in a queue
_QUEUE_SECONDS = 2.0
#: a worker that failed to load is not tried again for the same definition this soon
_FAILURE_SECONDS = 5.0
#: between calls a worker may use this share of a CPU (threads user code left running)
_IDLE_CPU_SHARE = 0.25
_IDLE_CHECK_SECONDS = 1.0
#: files and folders allowed per MB of WORKER_DISK_MB (empty files fill a disk's inodes too)
_ENTRIES_PER_MB = 16


class WorkerTimeout(Exception):
    pass


_PENDING = object()  # a reply not (wholly) there yet
_ASYNC_WAIT_SECONDS = 0.2  # how long a call waits on the event loop before a thread takes over
_DECODE_ON_LOOP = 256 * 1024  # larger replies are decoded in a thread: decoding holds the loop


class WorkerDied(Exception):
    def __init__(self, message: str, *, limit: bool = False, earlier: bool = False) -> None:
        super().__init__(message)
        #: it was stopped for going past a limit (not worth retrying as is)
        self.limit = limit
        #: what broke it was left by an earlier call (a late reply after a forged one): this
        #: call never ran on a trustworthy worker and may be retried on a fresh one
        self.earlier = earlier


class WorkerBusy(Exception):
    """Other calls kept the worker busy for _QUEUE_SECONDS."""


class Worker:
    def __init__(self, template: Template | None = None) -> None:
        """Forked from `template`, or else started as a fresh interpreter. :raises Unavailable:
        (also once the host is stopping)"""
        with _starting():
            self._start(template)

    def _start(self, template: Template | None) -> None:
        why = policy.refusal()
        if why:
            raise Unavailable(why, retry_after=3600)
        self.dir = tempfile.mkdtemp(prefix="w-", dir=host_dir())
        os.mkdir(os.path.join(self.dir, ".tmp"))
        rules = policy.for_worker(self.dir)
        self.chan, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with theirs:
                self.proc: subprocess.Popen | Forked | None = template.fork(rules, theirs) if template else None
            if self.proc is None:
                self.chan.close()  # a failed fork may have handed the old end to a child
                self.chan, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                with theirs:
                    self.proc = _spawner.submit(
                        subprocess.Popen, [sys.executable, "-I", str(WORKER), policy.to_json(rules),
                                           str(theirs.fileno())],
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        cwd=self.dir, env=worker_env(self.dir), start_new_session=True,
                        pass_fds=(theirs.fileno(),)).result()
        except BaseException:
            self.chan.close()
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self.chan.setblocking(False)
        self._fd = self.chan.fileno()
        self._poll = select.poll()  # made once: a selector per read costs more than the read
        self._poll.register(self._fd, select.POLLIN)
        self._out_poll = select.poll()
        self._out_poll.register(self._fd, select.POLLOUT)
        self._buf = bytearray()  # bytes read past the frame being parsed
        self._max_json = rules["replyJsonBytes"]
        self._max_blob = rules["workspaceBytes"] + 2**20
        self._disk = rules["fileBytes"]
        self._memory = rules["memoryBytes"]
        self._max_processes = rules["maxProcesses"]
        self._disk_checked = 0.0
        self._call_started = 0.0
        self._deleted_open = 0  # bytes of deleted files its processes held open at the last look
        self._buffers = 0  # kernel buffers its processes' pipes and sockets may hold, at the last look
        self._watch: Watched | None = None  # the host's side of its process limit
        self._greeted = False
        self._dead = False
        self._doomed = False  # to be stopped as soon as no call holds it
        self._last_id: str | None = None  # the previous call's id: a late frame with it is its fault
        self._reaping = threading.Lock()
        self.lock = threading.Lock()
        self.tag: Any = None  # what the worker holds (a state hash or an entity ETag)
        self._in_calls = 0.0  # seconds spent in calls, so idle CPU can be told from call CPU
        #: the memory it holds (PSS of its leader), measured after it loads and between calls
        self.resident = 0
        self._blob_limit = 0
        self._queues: dict[int, asyncio.Lock] = {}  # callers waiting on an event loop, per loop
        self._waiting = 0  # callers waiting in threads (so a batch lane can let them go first)
        self._waiting_lock = threading.Lock()
        self._cpu_mark: tuple[float, int, float] | None = None
        _live.add(self)
        _start_watcher()

    # --- calls --------------------------------------------------------------------------------
    def call(self, message: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """One request, one reply (bytes values travel raw). :raises WorkerBusy: (other calls
        kept it busy for _QUEUE_SECONDS) :raises WorkerTimeout: (the worker is killed) :raises
        WorkerDied: (also for a reply that breaks the protocol, or a limit breached)"""
        with self._waiting_lock:
            self._waiting += 1
        try:
            acquired = self.lock.acquire(timeout=min(timeout, _QUEUE_SECONDS))
        finally:
            with self._waiting_lock:
                self._waiting -= 1
        if not acquired:
            raise WorkerBusy()
        started = time.monotonic()
        deadline = started + timeout
        try:
            call_id = self._open(deadline, message["op"])
            self._send(encode({**message, "id": call_id}), deadline)
            return self._close(message, call_id, self._reply(deadline), started)
        finally:
            self._in_calls += time.monotonic() - started
            self._unlock()

    async def call_async(self, message: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """The same call, waiting on the event loop instead of a thread: callers on the loop
        queue for the worker there. Whatever would block (a thread holding the worker, a worker
        not yet greeted, a request that does not fit the socket at once, a reply not there
        whole within _ASYNC_WAIT_SECONDS) goes on in a thread with the code above, so a worker
        can never hold the loop."""
        loop = id(asyncio.get_running_loop())
        queue = self._queues.get(loop) or self._queues.setdefault(loop, asyncio.Lock())
        try:
            await asyncio.wait_for(queue.acquire(), min(timeout, _QUEUE_SECONDS))
        except TimeoutError:
            raise WorkerBusy() from None
        try:
            return await self._call_on_loop(message, timeout)
        finally:
            queue.release()

    async def _call_on_loop(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        if not self._greeted or not self.lock.acquire(blocking=False):
            return await asyncio.to_thread(self.call, message, timeout=timeout)
        started = time.monotonic()
        deadline = started + timeout
        handed_over = False
        try:
            call_id = self._open(deadline, message["op"])
            rest = self._send_now(encode({**message, "id": call_id}))
            reply = _PENDING if rest else await self._reply_now(deadline)
            if reply is _PENDING:
                handed_over = True
                return await asyncio.to_thread(self._finish, message, call_id, rest, deadline, started)
            if self._checks_due(started):  # they read the folder and /proc: not on the loop
                return await asyncio.to_thread(self._close, message, call_id, reply, started)
            return self._close(message, call_id, reply, started)
        finally:
            if not handed_over:
                self._in_calls += time.monotonic() - started
                self._unlock()

    def _finish(self, message: dict[str, Any], call_id: str, rest: list[bytes], deadline: float,
                started: float) -> dict[str, Any]:
        """The rest of a call begun on the event loop (the lock is held for it)."""
        try:
            self._send(rest, deadline)
            return self._close(message, call_id, self._reply(deadline), started)
        finally:
            self._in_calls += time.monotonic() - started
            self._unlock()

    def _open(self, deadline: float, op: str) -> str:
        """Checks before a call (the lock is held); returns the call's id."""
        if self._dead:  # retired or evicted since it was handed out: this call never reached it
            raise WorkerDied("the worker was stopped", earlier=True)
        # A consume reply goes to the caller as JSON: it has no business carrying raw bytes.
        self._blob_limit = 0 if op == "consume" else self._max_blob
        self._call_started = time.monotonic()
        if not self._greeted:
            self._greet(deadline)
        if self.proc.poll() is not None or self._stray():
            self._stop()  # it exited, or wrote when nobody asked: nothing it says can be trusted
            raise WorkerDied("the worker process has exited", earlier=True)
        return secrets.token_hex(8)

    def _close(self, message: dict[str, Any], call_id: str, reply: Any, started: float) -> dict[str, Any]:
        """Checks after a call: the reply answers it, and the worker is within its limits."""
        answered = reply.pop("id", None) if isinstance(reply, dict) else None
        if answered == call_id:
            why = check_reply(message["op"], reply)
        else:
            why = "a reply that does not answer this call"
        if why:
            self._stop()
            raise WorkerDied(f"the worker broke the protocol ({why}) and was stopped",
                             earlier=answered is not None and answered == self._last_id)
        self._last_id = call_id
        now = time.monotonic()
        # A call measures the folder after it, unless it was too short to write much and the
        # folder was measured moments ago: the bound is the one code has while it runs.
        if now - started >= _QUICK_CALL_SECONDS or now - self._disk_checked >= _DISK_CHECK_SECONDS:
            self._check_disk()
        if self._watch is not None and self._watch.processes_started(clear=True):
            self._sweep()
        return reply

    def _checks_due(self, started: float) -> bool:
        """Whether _close will measure the folder or sweep processes."""
        now = time.monotonic()
        return (now - started >= _QUICK_CALL_SECONDS or now - self._disk_checked >= _DISK_CHECK_SECONDS
                or (self._watch is not None and self._watch.processes_started(clear=False)))

    def _send_now(self, buffers: list[bytes]) -> list[bytes]:
        """Writes what the socket takes at once; returns what is left."""
        for i, buf in enumerate(buffers):
            view = memoryview(buf)
            while view:
                try:
                    view = view[os.write(self._fd, view):]
                except (BlockingIOError, OSError):
                    return [bytes(view), *buffers[i + 1:]]
        return []

    async def _reply_now(self, deadline: float) -> Any:
        """The reply, if it arrives whole within _ASYNC_WAIT_SECONDS; else _PENDING (and what
        arrived stays in the buffer for the thread that goes on)."""
        if not self._buf and not self._poll.poll(0):
            loop = asyncio.get_running_loop()
            ready = loop.create_future()
            loop.add_reader(self._fd, lambda: ready.done() or ready.set_result(None))
            try:
                await asyncio.wait_for(ready, max(0.0, min(deadline - time.monotonic(), _ASYNC_WAIT_SECONDS)))
            except TimeoutError:
                return _PENDING
            finally:
                loop.remove_reader(self._fd)
        limit = HEADER.size + self._max_json + self._blob_limit
        while len(self._buf) <= limit:
            try:
                chunk = os.read(self._fd, 1 << 16)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                return _PENDING  # it exited: the thread finds that out and says so
            self._buf += chunk
        if len(self._buf) < HEADER.size:
            return _PENDING
        size, blob_size = HEADER.unpack(self._buf[:HEADER.size])
        if size > _DECODE_ON_LOOP or blob_size or len(self._buf) < HEADER.size + size:
            return _PENDING  # large (decoded in the thread, or refused there) or not all there yet
        return self._reply(deadline)  # all of it is in the buffer: this does not wait

    def _greet(self, deadline: float) -> None:
        """The worker's first frame says whether it confined itself and hands over the seccomp
        listener through which it asks to start processes."""
        while True:
            self._wait(deadline)
            try:
                data, fds, _, _ = socket.recv_fds(self.chan, HEADER.size, 1, socket.MSG_CMSG_CLOEXEC)
                break
            except BlockingIOError:
                continue
            except OSError:
                data, fds = b"", []
                break
        if fds:
            self._watch = limiter.watch(fds[0], self.proc.pid, self._max_processes)
        hello = self._reply(deadline, data)
        self._greeted = True
        if not isinstance(hello, dict) or not hello.get("ok"):
            self._stop()
            why = hello.get("error") if isinstance(hello, dict) else None
            log.error("a worker could not confine itself: %s", why)
            raise Unavailable(f"user code is not run: {why or 'the sandbox could not be set up'}")

    def _send(self, buffers: list[bytes], deadline: float) -> None:
        """Within the deadline: a worker that stops reading must not hold the caller forever."""
        for buf in buffers:
            view = memoryview(buf)
            while view:
                try:
                    view = view[os.write(self._fd, view):]
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._out_poll.poll(left * 1000):
                        self._stop()
                        raise WorkerTimeout() from None
                except OSError:
                    self._stop()
                    raise WorkerDied("the worker process has exited") from None

    def _reply(self, deadline: float, head: bytes = b"") -> Any:
        head += self._read(HEADER.size - len(head), deadline)
        size, blob_size = HEADER.unpack(head)
        if size > self._max_json or blob_size > self._blob_limit:
            self._stop()
            raise WorkerDied(f"the worker sent a reply of {size + blob_size} bytes, above the limit of "
                             f"{self._max_json} bytes of JSON and {self._max_blob} of data (MAX_REQUEST_BYTES and "
                             "MAX_WORKSPACE_MB set them), and was stopped", limit=True)
        body = self._read(size, deadline)
        blob = bytes(self._read(blob_size, deadline)) if blob_size else None
        try:
            return decode(body, blob, reply=True)
        except ValueError as exc:
            self._stop()
            raise WorkerDied(f"the worker sent a malformed reply ({exc}) and was stopped") from None

    def _read(self, n: int, deadline: float) -> bytearray:
        """Exactly `n` bytes, grown as they arrive: a length a worker claims is never allocated
        ahead. Reads take what is there (a whole small reply at once); the rest waits in _buf."""
        buf = self._buf
        while len(buf) < n:
            self._wait(deadline)
            try:
                chunk = os.read(self._fd, max(n - len(buf), 1 << 16))
            except BlockingIOError:
                continue
            except OSError:  # ECONNRESET: it died with our request unread
                chunk = b""
            if not chunk:
                self._stop()
                raise WorkerDied("the worker process exited (it may have run out of memory)")
            buf += chunk
        out, self._buf = (buf, bytearray()) if len(buf) == n else (buf[:n], buf[n:])
        return out

    def _wait(self, deadline: float) -> None:
        """Until the worker has something to say; its folder and memory are measured every
        _DISK_CHECK_SECONDS while it runs, also while it sends (a reply dribbled out a byte at a
        time must not put the measurement off)."""
        while True:
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                self._stop()
                raise WorkerTimeout()
            due = max(self._disk_checked, self._call_started) + _DISK_CHECK_SECONDS - now
            if due <= 0:
                self._check_disk()
                self._check_memory()
                continue
            if self._poll.poll(min(left, due) * 1000):
                return

    def _stray(self) -> bool:
        """Bytes from the worker beyond its last reply (call with the lock held)."""
        return self._greeted and bool(self._buf or self._poll.poll(0))

    # --- limits ---------------------------------------------------------------------------------
    def _check_disk(self) -> None:
        """Its folder, and files it deleted but holds open (they fill the disk as much); the
        same look at its processes' descriptors counts their pipes and sockets (_check_memory)."""
        self._disk_checked = time.monotonic()
        used = folder_usage(self.dir, self._disk, max(1000, self._disk // 2**20 * _ENTRIES_PER_MB))
        self._deleted_open, self._buffers, watches = open_file_costs(self._pids(), os.path.realpath(self.dir))
        if watches > _MAX_WATCHES:
            self._stop()
            raise WorkerDied(f"the worker's processes could hold {watches} epoll watches, more than the "
                             f"{_MAX_WATCHES} a worker may (the kernel's quota of them is shared with the API), "
                             "and the worker was stopped", limit=True)
        if used + self._deleted_open > self._disk:
            self._stop()
            raise WorkerDied(f"the working directory, with the files it deleted but holds open or mapped, grew "
                             f"past the limit of {self._disk // 2**20} MB, or {_ENTRIES_PER_MB} files per MB "
                             "(WORKER_DISK_MB), and the worker was stopped", limit=True)

    def _check_memory(self) -> None:
        """RLIMIT_AS bounds each process; this bounds all of them together, with the kernel
        buffers their pipes and sockets may hold (outside any address space)."""
        if sum(_charged_memory(proc_dir(pid)) for pid in self._pids()) + self._buffers > self._memory:
            self._stop()
            raise WorkerDied(f"the worker's processes, with their pipes' and sockets' buffers, used more than "
                             f"{self._memory // 2**20} MB (WORKER_MEMORY_MB) and were stopped", limit=True)

    def _pids(self) -> list[int]:
        if self._watch is not None and self._watch.processes_started(clear=False):
            return [pid for pid, _, dead in members(self.proc.pid) if not dead]
        return [self.proc.pid]

    def idle_check(self) -> None:
        """From the watcher, between calls: a worker that died, whose leftover threads use more
        than _IDLE_CPU_SHARE of a CPU outside calls, or whose leftover processes or files grow
        past its limits, is stopped."""
        if self._dead or not self._greeted or not self.lock.acquire(blocking=False):
            return
        try:
            if self._dead:
                return
            if self.proc.poll() is not None:
                self._stop()
                return
            if self._watch is not None and self._watch.processes_started(clear=False):
                self._sweep()
            try:
                self._check_disk()
                self._check_memory()
            except WorkerDied as exc:
                log.warning("worker %s stopped between calls: %s", self.proc.pid, exc)
                return
            self.resident = proportional_memory(self.proc.pid)
            now, ticks = time.monotonic(), cpu_ticks(self.proc.pid)
            if self._cpu_mark is None or now - self._cpu_mark[0] < 2 * _IDLE_CHECK_SECONDS:
                self._cpu_mark = self._cpu_mark or (now, ticks, self._in_calls)
                return
            since, used, in_calls = self._cpu_mark
            outside = (ticks - used) / _TICKS - (self._in_calls - in_calls)
            if outside > _IDLE_CPU_SHARE * (now - since):
                log.warning("worker %s stopped: threads its code left running used a CPU between calls",
                            self.proc.pid)
                self._stop()
                return
            self._cpu_mark = (now, ticks, self._in_calls)
        finally:
            self._unlock()

    # --- the end ----------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """In a call, or callers queue for it on an event loop."""
        return self.lock.locked() or self._waiting > 0 or any(q.locked() for q in list(self._queues.values()))

    @property
    def alive(self) -> bool:
        """Running, and (when idle) silent since its last reply: a stray frame means it cannot
        be trusted. A worker in a call is alive; its reply is on the way."""
        if self._dead or self._doomed or self.proc.poll() is not None:
            return False
        if not self.lock.acquire(blocking=False):
            return True
        try:
            return not self._dead and not self._stray()
        finally:
            self._unlock()

    def kill(self) -> None:
        """End the worker and everything it started, now (from any thread). A call in progress
        sees the worker's end; its channel and folder are released once no call holds it:
        closing the channel under a call could hand its descriptor number to another connection."""
        self._doomed = True
        self._signal()
        self._stop_if_idle()

    close = kill  # nothing in a worker needs a graceful end: what matters is saved by the host

    def close_when_idle(self) -> None:
        """Stop it once the call it may be in has answered (an evicted worker's caller keeps its answer)."""
        self._doomed = True
        self._stop_if_idle()

    def _stop_if_idle(self) -> None:
        if self.lock.acquire(blocking=False):
            try:
                self._stop()
            finally:
                self.lock.release()

    def _unlock(self) -> None:
        """Release the lock; a worker doomed while it was held is stopped now (the doomer set the
        flag before trying the lock, the holder looks after releasing it: one of them stops it)."""
        self.lock.release()
        if self._doomed and not self._dead:
            self._stop_if_idle()

    def _stop(self) -> None:
        """kill(), from the thread that holds the lock."""
        self._signal()
        self._release()

    def _signal(self) -> None:
        # setsid and setpgid are refused to user code, so its whole family is in this group.
        # Once the leader is reaped the group id is safe only while members hold it: then
        # each member is ended by pidfd instead.
        with self._reaping:
            if isinstance(self.proc, Forked):
                self.proc.kill()  # by pidfd: its template, not we, reaps it
            elif self.proc.returncode is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                return
        self._sweep()

    def _release(self) -> None:
        if self._dead:
            return
        self._dead = True
        with self._reaping:
            self.proc.wait()
        self._sweep()  # a leader reaped earlier (it exited) may have left its group behind
        _live.discard(self)
        if self._watch is not None:
            limiter.forget(self._watch)
            self._watch = None
        self.chan.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _sweep(self) -> None:
        """Processes a call started end with it (the worker reaps them before its next call);
        only threads live on in the worker. Repeated until none is left: one may have been
        forking while the group was listed. Zombies are dead already (the worker reaps them)."""
        for _ in range(_SWEEP_ROUNDS):
            others = [pid for pid, _, dead in members(self.proc.pid) if pid != self.proc.pid and not dead]
            if not others:
                return
            for pid in others:
                _kill_member(pid, self.proc.pid)
            time.sleep(0.001)
        log.warning("worker %s: processes kept appearing while its group was ended", self.proc.pid)


#: starts fresh workers: one thread for the host's life, since a worker's parent-death signal
#: fires when the thread that started it ends
_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="o16n-spawner")
_SWEEP_ROUNDS = 20
_TICKS = os.sysconf("SC_CLK_TCK")
_live: "weakref.WeakSet[Worker]" = weakref.WeakSet()


def _kill_member(pid: int, pgid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:  # the pidfd pins the process: check it is still the one listed in the group
        fields = proc_stat(pid)
        if fields is not None and int(fields[2]) == pgid:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(fd)


def cpu_ticks(pid: int) -> int:
    """CPU time the process (all its threads) has used, in clock ticks."""
    fields = proc_stat(pid)
    return int(fields[11]) + int(fields[12]) if fields is not None else 0


def _watch_idle_workers() -> None:
    while True:
        time.sleep(_IDLE_CHECK_SECONDS)
        for worker in list(_live):
            try:
                worker.idle_check()
            except Exception:  # one worker's trouble must not end the watching
                log.exception("checking an idle worker failed")
        services.trim()  # workers grow between calls too


_watcher_lock = threading.Lock()
_watcher: list[threading.Thread] = []


def _start_watcher() -> None:
    with _watcher_lock:
        if not _watcher:
            _watcher.append(threading.Thread(target=_watch_idle_workers, name="o16n-idle-watch", daemon=True))
            _watcher[0].start()


def folder_usage(path: str, budget: int, max_entries: int) -> int:
    """Bytes allocated beneath `path` (counting stops once past `budget` or `max_entries`)."""
    total, entries, stack = 0, 0, [path]
    while stack and total <= budget:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    entries += 1
                    if entries > max_entries:
                        return budget + 1
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return total


def open_file_costs(pids: list[int], folder: str) -> tuple[int, int, int]:
    """Bytes of deleted files these processes still hold open or mapped (a mapped one, whose
    size cannot be seen without privileges, counts as `_UNSEEN_FILE`), bytes of kernel buffers
    their pipes and sockets may hold (their sizes cannot be raised: see policy), and the epoll
    watches they could hold (each epoll instance may watch every descriptor of its process)."""
    deleted = buffers = watches = 0
    for pid in pids:
        where = proc_dir(pid)
        epolls = descriptors = 0
        try:
            with os.scandir(f"{where}/fd") as it:
                for entry in it:
                    descriptors += 1
                    try:
                        st = os.stat(entry.path)
                    except OSError:
                        continue
                    if stat.S_ISREG(st.st_mode) and st.st_nlink == 0:
                        deleted += st.st_blocks * 512
                    elif stat.S_ISSOCK(st.st_mode):
                        buffers += _SOCKET_BYTES
                    elif stat.S_ISFIFO(st.st_mode):
                        buffers += _PIPE_BYTES
                    elif stat.S_IFMT(st.st_mode) == 0 and _readlink(entry.path) == "anon_inode:[eventpoll]":
                        epolls += 1
            deleted += _UNSEEN_FILE * _deleted_mappings(where, folder)
        except OSError:
            continue
        watches += epolls * descriptors
    return deleted, buffers + watches * _WATCH_BYTES, watches


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _deleted_mappings(where: str, folder: str) -> int:
    """Files from `folder` (the only place a worker may write) mapped into the process after
    they were deleted: they keep their disk space outside the folder and the descriptors."""
    files, prefix = set(), (folder.rstrip("/") + "/").encode()
    with open(f"{where}/maps", "rb") as f:
        for line in f:
            if line.endswith(b" (deleted)\n"):
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].startswith(prefix):
                    files.add((fields[3], fields[4]))
    return len(files)


def _default_socket_buffer() -> int:
    try:
        with open("/proc/sys/net/core/wmem_default") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 212992


#: what one socket's queue may hold (its send buffer with the kernel's overhead; measured
#: ~233 KB a socket with the default 208 KB), and one pipe's (16 pages)
_SOCKET_BYTES = _default_socket_buffer() * 5 // 4
_PIPE_BYTES = 16 * 4096
#: kernel memory of one epoll watch, and the most a worker's processes may hold: the kernel's
#: quota of watches is per user, shared with the API process
_WATCH_BYTES, _MAX_WATCHES = 160, 65536
#: what a deleted file that is only mapped counts as: its size cannot be seen
_UNSEEN_FILE = 2**40


def proportional_memory(pid: int | str) -> int:
    """The process's share of the memory it uses (PSS: pages shared after fork count once);
    `pid` or its /proc folder."""
    try:
        with open(f"{pid if isinstance(pid, str) else f'/proc/{pid}'}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _charged_memory(where: str) -> int:
    """What a process holds: its share of memory (PSS) and its page tables, kernel memory that
    PSS leaves out (a page mapped every GB costs 8 KB of them and nothing of PSS)."""
    tables = 0
    try:
        with open(f"{where}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmPTE:"):
                    tables = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        pass
    return proportional_memory(where) + tables


def worker_env(home: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in _PASSED if k in os.environ}
    env.update({"HOME": home, "TMPDIR": os.path.join(home, ".tmp"), "OMP_NUM_THREADS": "1",
                "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",
                # /dev/shm is shared by every worker, so it stays closed: joblib runs serially, quietly
                "JOBLIB_MULTIPROCESSING": "0"})
    env.setdefault("LANG", "C.UTF-8")
    return env


def host_dir() -> str:
    """This host's folder for its workers' folders, locked for as long as the host lives.
    Folders of hosts that died (their lock is free) are removed first."""
    with _host_dir_lock:  # lru_cache alone may run it twice at once: two folders, and the
        return _host_dir()  # template's Landlock layer would cover only one


_host_dir_lock = threading.Lock()


@lru_cache(maxsize=1)
def _host_dir() -> str:
    base = Path(tempfile.gettempdir()) / f"o16n-{os.getuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    st = base.lstat()
    if not base.is_dir() or base.is_symlink() or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise Unavailable(f"the workers' folder {base} is not a private folder of this user")
    for old in base.iterdir():
        _remove_if_orphaned(old)
    mine = Path(tempfile.mkdtemp(prefix="host-", dir=base))
    # Locked before it is named .lock: another host starting now must never find it free.
    lock = os.open(mine / ".lock.new", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)  # held (never closed) until the process ends
    os.rename(mine / ".lock.new", mine / ".lock")
    return str(mine)


def _remove_if_orphaned(folder: Path) -> None:
    try:
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        try:
            if time.time() - folder.stat().st_mtime > 60:  # a host that died while creating it
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass  # another host removed it first
        return
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            log.warning("cannot tell whether %s is in use: %s", folder, exc)
        return  # a live host holds it
    finally:
        os.close(fd)
    shutil.rmtree(folder, ignore_errors=True)


class WarmPool:
    """Workers by key, most recently used last; beyond `size` workers, or `budget` bytes of
    memory they hold together, the least recently used idle ones are retired. A key may have
    up to `replicas` workers (a hot service: calls need not queue behind one process); each
    is kept under (key, replica)."""

    def __init__(self, size: Callable[[], int], budget: Callable[[], int] = lambda: 0,
                 replicas: Callable[[], int] = lambda: 1) -> None:
        self._size = size
        self._budget = budget
        self._replicas = replicas
        self._workers: OrderedDict[tuple[Any, int], Worker] = OrderedDict()
        self._failures: dict[Any, tuple[Any, float, Exception]] = {}
        self._growing: set[tuple[Any, int]] = set()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[Any, int], threading.Lock] = {}
        #: what /status shows: calls served by a warm worker, workers loaded, loads that failed,
        #: workers evicted to stay within the size
        self.counts = {"hits": 0, "loads": 0, "loadFailures": 0, "evictions": 0}

    def key_lock(self, key: Any, replica: int = 0) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault((key, replica), threading.Lock())

    def warm(self, key: Any, tag: Any) -> Worker | None:
        """A live worker for `key` holding `tag`, an idle one if there is (nothing is started)."""
        with self._lock:
            found = [(k, w) for k, w in self._replicas_of(key) if w.alive and w.tag == tag]
            if not found:
                return None
            k, worker = next(((k, w) for k, w in found if not w.busy), found[0])
            self._workers.move_to_end(k)
            self.counts["hits"] += 1
            return worker

    def all_busy(self, key: Any, tag: Any) -> bool:
        """Whether every live worker for `key` holding `tag` is in a call (False with none)."""
        with self._lock:
            found = [w for _, w in self._replicas_of(key) if w.alive and w.tag == tag]
        return bool(found) and all(w.busy for w in found)

    def _replicas_of(self, key: Any) -> list[tuple[tuple[Any, int], Worker]]:
        return [((key, i), w) for i in range(max(1, self._replicas()))
                if (w := self._workers.get((key, i))) is not None]

    def growth(self, key: Any, tag: Any) -> int | None:
        """The replica to start for `key` now: when all its workers are busy, it may have more,
        and the count and memory budget have room for one more of them. It is then marked as
        growing until `grow` with it is done. Workers of `key` that died or hold another tag
        go first."""
        if self._replicas() <= 1:  # asked on every busy call: nothing to do while replicas are off
            return None
        with self._lock:
            stale = [k for k, w in self._replicas_of(key) if not w.alive or w.tag != tag]
            dropped = [self._workers.pop(k) for k in stale]
            present = self._replicas_of(key)
            free = [i for i in range(max(1, self._replicas())) if (key, i) not in self._workers
                    and (key, i) not in self._growing]
            budget = self._budget()
            total = sum(w.resident for w in self._workers.values())
            room = (len(self._workers) < max(1, self._size())
                    and (not budget or not present or total + max(w.resident for _, w in present) <= budget))
            replica = None
            if present and free and room and all(w.busy for _, w in present):
                replica = free[0]
                self._growing.add((key, replica))
        for worker in dropped:
            worker.close()
        return replica

    def checkout(self, key: Any, tag: Any, start: Callable[[Worker], None], group: str | None = None) -> Worker:
        """A live worker for `key` holding `tag`; otherwise a new one prepared by `start` (forked
        from `group`'s template: who the code it runs belongs to). :raises WorkerBusy: another
        call has been preparing one for _QUEUE_SECONDS"""
        worker = self.warm(key, tag)
        if worker is not None:
            return worker
        return self._load(key, tag, start, 0, group)

    def grow(self, key: Any, tag: Any, start: Callable[[Worker], None], replica: int, group: str | None = None
             ) -> None:
        """Load `replica` (from `growth`) for `key`; a failure is not remembered for the key's
        own loads (the calls go on with the workers there are)."""
        try:
            self._load(key, tag, start, replica, group, remember_failure=False)
        finally:
            with self._lock:
                self._growing.discard((key, replica))

    def _load(self, key: Any, tag: Any, start: Callable[[Worker], None], replica: int, group: str | None, *,
              remember_failure: bool = True) -> Worker:
        slot = (key, replica)
        lock = self.key_lock(key, replica)
        if not lock.acquire(timeout=_QUEUE_SECONDS):
            raise WorkerBusy()
        try:
            with self._lock:
                worker = self._workers.get(slot)
                if worker is not None and worker.alive and worker.tag == tag:
                    self.counts["hits"] += 1
                    return worker
                failed = self._failures.get(key)
            if failed is not None and failed[0] == tag and time.monotonic() - failed[1] < _FAILURE_SECONDS:
                raise copy.copy(failed[2])  # the same load failing again would hold a thread for nothing
            if replica == 0 and remember_failure:
                self.retire(key, when_idle=True)  # nothing there holds this tag alive (warm() looked first)
            else:
                self._drop(slot)
            worker = spares.take(group)
            try:
                start(worker)
            except BaseException as exc:
                worker.kill()
                if isinstance(exc, Exception) and remember_failure:
                    with self._lock:
                        self._failures[key] = (tag, time.monotonic(), exc)
                        self.counts["loadFailures"] += 1
                raise
            worker.tag = tag
            worker.resident = proportional_memory(worker.proc.pid)
            with self._lock:
                self._failures.pop(key, None)
                self._workers[slot] = worker
                evicted = self._over_limits(keep=slot)
                self.counts["loads"] += 1
                self.counts["evictions"] += len(evicted)
            for w in evicted:
                w.close_when_idle()
            return worker
        finally:
            lock.release()

    def _over_limits(self, keep: Any) -> list[Worker]:
        """Taken out (lock held): the least recently used idle workers beyond the count or the
        memory budget. One in a call finishes it first; `keep` was just loaded for a caller."""
        count, budget = max(1, self._size()), self._budget()
        total = sum(w.resident for w in self._workers.values())
        evicted = []
        for k in [k for k, w in self._workers.items() if k != keep and not w.lock.locked()]:
            if len(self._workers) <= count and (not budget or total <= budget):
                break
            worker = self._workers.pop(k)
            total -= worker.resident
            evicted.append(worker)
        return evicted

    def trim(self) -> None:
        """Retire what is over the limits now (the watcher calls it: resident sizes grow)."""
        with self._lock:
            evicted = self._over_limits(keep=None)
            self.counts["evictions"] += len(evicted)
        for w in evicted:
            w.close_when_idle()

    def retire(self, key: Any, *, when_idle: bool = False) -> None:
        """Every worker of `key`: no new call reaches them; `when_idle`, the calls they are in
        still answer (a service changed meanwhile: those calls began before the change)."""
        with self._lock:
            workers = [self._workers.pop(k) for k in [k for k in self._workers if k[0] == key]]
        for worker in workers:
            if when_idle:
                worker.close_when_idle()
            else:
                worker.close()

    def retire_worker(self, key: Any, worker: Worker) -> None:
        """That one worker of `key` (it failed a call); its siblings go on serving theirs."""
        with self._lock:
            slots = [k for k, w in self._workers.items() if k[0] == key and w is worker]
            for k in slots:
                del self._workers[k]
        worker.close()

    def _drop(self, slot: tuple[Any, int]) -> None:
        with self._lock:
            worker = self._workers.pop(slot, None)
        if worker is not None:
            worker.close()

    def size(self) -> int:
        with self._lock:
            return len(self._workers)

    def close_all(self) -> None:
        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
        for w in workers:
            w.close()


class Spares:
    """Fresh workers started ahead of need with the usual libraries already imported, for when
    no template of the right group is ready, so a service or session that needs a new worker
    does not wait seconds for scikit-learn to import. Refilled in the background after each
    take."""

    def __init__(self) -> None:
        self._ready: list[Worker] = []
        self._lock = threading.Lock()
        self._filling: threading.Thread | None = None

    def take(self, group: str | None = None) -> Worker:
        """A worker forked from `group`'s template; or else a ready spare, or else a fresh
        worker at once (waiting for a template or a spare in preparation would make light
        sessions pay for an import of scikit-learn they may never need)."""
        template = templates.get(group, _template_start) if not _stopping else None
        if template is not None:
            return Worker(template)
        with self._lock:
            worker = None
            while self._ready and worker is None:
                candidate = self._ready.pop()
                if candidate.alive:
                    worker = candidate
                else:
                    candidate.kill()
        self.fill()
        return worker if worker is not None else Worker()

    def fill(self) -> None:
        """Start topping up to SPARE_WORKERS in the background (at most one filler at a time)."""
        with self._lock:
            if self._filling or _stopping or len(self._ready) >= get_settings().spare_workers:
                return
            self._filling = threading.Thread(target=self._fill, name="o16n-spares", daemon=True)
            self._filling.start()

    def _fill(self) -> None:
        try:
            while True:
                with self._lock:
                    if len(self._ready) >= get_settings().spare_workers:
                        return
                try:
                    worker = Worker()
                except Unavailable as exc:
                    if not _stopping:
                        log.warning("no spare workers: %s", exc.message)
                    return
                try:
                    worker.call({"op": "preload", "modules": get_settings().preload_modules.split(",")},
                                timeout=_PRELOAD_SECONDS)
                except (WorkerTimeout, WorkerDied, WorkerBusy, Unavailable):
                    worker.kill()
                    if not _stopping:  # else shutdown() ended it
                        log.warning("a spare worker could not preload its modules; spares are off")
                    return
                with self._lock:
                    self._ready.append(worker)
        finally:
            with self._lock:
                self._filling = None

    def close_all(self) -> None:
        with self._lock:
            workers, self._ready = self._ready, []
        for w in workers:
            w.close()

    def filler(self) -> threading.Thread | None:
        with self._lock:
            return self._filling


def _template_start() -> tuple[dict[str, Any], dict[str, str], str]:
    folder = host_dir()
    return policy.for_template(folder), worker_env(folder), folder


_PRELOAD_SECONDS = 120
spares = Spares()
services = WarmPool(lambda: get_settings().max_warm_services, lambda: get_settings().warm_services_mb * 2**20,
                    lambda: get_settings().max_workers_per_service)
sessions = WarmPool(lambda: get_settings().max_warm_sessions)


_stopping = False
_under_way = 0  # workers whose folder and process are being made
_starts = threading.Condition()
_STOP_SECONDS = 10  # how long shutdown() waits for what is under way


@contextlib.contextmanager
def _starting() -> Iterator[None]:
    global _under_way
    with _starts:
        if _stopping:
            raise Unavailable("the host is stopping", retry_after=5)
        _under_way += 1
    try:
        yield
    finally:
        with _starts:
            _under_way -= 1
            _starts.notify_all()


@atexit.register
def shutdown() -> None:
    """End every worker and template, for good. First nothing new starts (a background thread
    may be preparing a spare), then the workers being made are waited for, then all are ended
    and the calls holding them given the time to remove their folders. (A template still
    importing its modules ends by itself when it finds the host gone; it has no folder.)"""
    global _stopping
    deadline = time.monotonic() + _STOP_SECONDS
    with _starts:
        _stopping = True
        _starts.wait_for(lambda: _under_way == 0, timeout=_STOP_SECONDS)
    spares.close_all()
    templates.stop_all()
    services.close_all()
    sessions.close_all()
    for worker in list(_live):  # a spare being prepared, or one a call still holds
        worker.kill()
    filler = spares.filler()
    if filler is not None:
        filler.join(max(0.0, deadline - time.monotonic()))
    while _live and time.monotonic() < deadline:  # a call that holds one releases it as it ends
        time.sleep(0.02)
