"""The host's process limiter keeps its listeners by handle: descriptor numbers are reused."""
import os
import subprocess
import sys
import time
from pathlib import Path

from shared.sandbox.tasks import TaskLimiter


def wait_for(condition, seconds=2.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def _pipe_numbered(number):
    """A pipe whose read end has `number` (other threads of the test process may take the
    lowest free number for a moment)."""
    spare = []
    try:
        for _ in range(200):
            read, write = os.pipe()
            if read == number:
                return read, write
            spare.append((read, write))
            if len(spare) > 20:
                for fds in spare:
                    os.close(fds[0]), os.close(fds[1])
                spare.clear()
                time.sleep(0.01)
        raise AssertionError(f"descriptor {number} never came back")
    finally:
        for r, w in spare:
            os.close(r), os.close(w)


def test_forgetting_a_listener_that_hung_up_never_closes_the_one_that_reused_its_number():
    # In a fresh interpreter: threads left by other tests can take the number being reused.
    done = subprocess.run([sys.executable, "-c", "import tests.unit.test_tasks as t; t._reused_number()"],
                          cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def _reused_number():
    limiter = TaskLimiter()
    read1, write1 = os.pipe()  # a pipe stands in for a worker's seccomp listener
    first = limiter.watch(read1, pgid=0, limit=1)
    assert wait_for(lambda: read1 in limiter._watched)
    os.close(write1)  # the worker is gone: its listener hangs up and the limiter closes it
    assert wait_for(lambda: read1 not in limiter._watched)
    read2, write2 = _pipe_numbered(read1)  # the lowest free number comes back
    second = limiter.watch(read2, pgid=0, limit=1)
    assert wait_for(lambda: limiter._watched.get(read2) is second)
    limiter.forget(first)
    time.sleep(0.2)
    assert limiter._watched.get(read2) is second
    os.fstat(read2)  # still open
    limiter.forget(second)
    assert wait_for(lambda: read2 not in limiter._watched)
    os.close(write2)
