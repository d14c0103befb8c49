"""Host side of the workers: start one with a scrubbed environment, talk to it with a
deadline, kill its whole process group when it overruns, and keep warm ones in an LRU."""
from __future__ import annotations

import atexit
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import get_settings
from .protocol import HEADER, decode, encode

log = logging.getLogger("o16n.sandbox")
ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker.py")
# Only these reach user code; storage strings, signing keys and identity endpoints do not.
_PASSED = ("PATH", "LANG", "LC_ALL", "TZ", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


# `-I` keeps PYTHONPATH and friends from reaching the worker, but Azure Functions installs the
# app's packages on PYTHONPATH (.python_packages): hand the host's import path over explicitly.
_IMPORT_PATH = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))


class WorkerTimeout(Exception):
    pass


class WorkerDied(Exception):
    pass


class Worker:
    def __init__(self) -> None:
        s = get_settings()
        self.dir = tempfile.mkdtemp(prefix="o16n-work-")
        env = {k: os.environ[k] for k in _PASSED if k in os.environ}
        env.update({"HOME": self.dir, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                    "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"})
        env.setdefault("LANG", "C.UTF-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(WORKER), str(ROOT), str(s.worker_memory_mb), str(s.max_console_bytes),
             _IMPORT_PATH],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=self.dir, env=env,
            start_new_session=True, close_fds=True)
        self._poll = select.poll()  # made once: a selector per read costs more than the read
        self._poll.register(self.proc.stdout.fileno(), select.POLLIN)
        self.lock = threading.Lock()
        self.tag: Any = None  # what the worker holds (a state hash or an entity ETag)

    def call(self, message: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """:raises WorkerTimeout: (the worker is killed) :raises WorkerDied:"""
        with self.lock:
            if self.proc.poll() is not None:
                raise WorkerDied("the worker process has exited")
            try:
                self.proc.stdin.write(encode(message))
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self.kill()
                raise WorkerDied("the worker process has exited") from None
            deadline = time.monotonic() + timeout
            header = self._read(HEADER.size, deadline)
            return decode(self._read(HEADER.unpack(header)[0], deadline))

    def _read(self, n: int, deadline: float) -> bytes:
        fd = self.proc.stdout.fileno()
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not self._poll.poll(left * 1000):
                self.kill()
                raise WorkerTimeout()
            chunk = os.read(fd, min(n - len(buf), 1 << 20))
            if not chunk:
                self.kill()
                raise WorkerDied("the worker process exited (it may have run out of memory)")
            buf += chunk
        return bytes(buf)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


class WarmPool:
    """Workers by key, most recently used last; beyond `size` the oldest is retired."""

    def __init__(self, size: Callable[[], int]) -> None:
        self._size = size
        self._workers: OrderedDict[Any, Worker] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Any, threading.Lock] = {}

    def key_lock(self, key: Any) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def checkout(self, key: Any, tag: Any, start: Callable[[Worker], None]) -> Worker:
        """A live worker for `key` holding `tag`; otherwise a new one prepared by `start`."""
        with self._lock:
            worker = self._workers.get(key)
            if worker is not None and worker.alive and worker.tag == tag:
                self._workers.move_to_end(key)
                return worker
        with self.key_lock(key):
            with self._lock:
                worker = self._workers.get(key)
                if worker is not None and worker.alive and worker.tag == tag:
                    return worker
            self.retire(key)
            worker = spares.take()
            try:
                start(worker)
            except BaseException:
                worker.kill()
                raise
            worker.tag = tag
            with self._lock:
                self._workers[key] = worker
                old = []
                while len(self._workers) > max(1, self._size()):
                    old.append(self._workers.popitem(last=False)[1])
            for w in old:
                w.close()
            return worker

    def retire(self, key: Any) -> None:
        with self._lock:
            worker = self._workers.pop(key, None)
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
    """Workers started ahead of need with the usual libraries already imported, so a service
    or session that needs a new worker does not wait seconds for scikit-learn to import. Refilled
    in the background after each take; the first take on an instance starts the refilling."""

    def __init__(self) -> None:
        self._ready: list[Worker] = []
        self._lock = threading.Lock()
        self._filling = False

    def take(self) -> Worker:
        """A ready spare, or else a cold worker at once (waiting for the spare in preparation
        would make light sessions pay for an import of scikit-learn they may never need)."""
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
            if self._filling or len(self._ready) >= get_settings().spare_workers:
                return
            self._filling = True
        threading.Thread(target=self._fill, name="o16n-spares", daemon=True).start()

    def _fill(self) -> None:
        try:
            while True:
                with self._lock:
                    if len(self._ready) >= get_settings().spare_workers:
                        return
                worker = Worker()
                try:
                    worker.call({"op": "preload", "modules": get_settings().preload_modules.split(",")},
                                timeout=_PRELOAD_SECONDS)
                except (WorkerTimeout, WorkerDied):
                    worker.kill()
                    log.warning("a spare worker could not preload its modules; spares are off")
                    return
                with self._lock:
                    self._ready.append(worker)
        finally:
            with self._lock:
                self._filling = False

    def close_all(self) -> None:
        with self._lock:
            workers, self._ready = self._ready, []
        for w in workers:
            w.close()


_PRELOAD_SECONDS = 120
spares = Spares()
services = WarmPool(lambda: get_settings().max_warm_services)
sessions = WarmPool(lambda: get_settings().max_warm_sessions)


@atexit.register
def _close_all() -> None:
    spares.close_all()
    services.close_all()
    sessions.close_all()
