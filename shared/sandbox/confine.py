"""Run by a worker on itself, before it reads a byte of user code or data: the limits, then
(when confining) capabilities, no_new_privs, Landlock and seccomp, in that order. Each step
either holds or raises: a worker that cannot confine itself never runs user code."""
from __future__ import annotations

import ctypes
import os
import resource
from typing import Any

from . import landlock, seccomp
from .policy import late_rules, syscall_rules

_PR_CAPBSET_DROP, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4
_SYS_CAPGET, _SYS_CAPSET = 125, 126
_CAP_V3 = 0x20080522
#: descriptors per process: each pins kernel memory, and the host looks through them
_MAX_OPEN_FILES = 4096
#: signals queued and POSIX timers: the kernel compares this with the count of the whole user
#: (the API and every worker), so workers together may take only this much of its quota
_MAX_PENDING_SIGNALS = 1024
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def apply(policy: dict[str, Any], *, forked: bool = False) -> int | None:
    """Returns the seccomp listener fd the host must watch (None when not confining). A worker
    `forked` from the template adds its own layer to the template's (Landlock layers only
    narrow), so its folder is the only one it may write."""
    layer(policy, forked=forked)
    if not policy["confine"]:
        return None
    return seccomp.install(syscall_rules(network=policy["network"]), listener=True)


def layer(policy: dict[str, Any], *, forked: bool = False) -> None:
    """Limits, capabilities, no_new_privs and Landlock: all of the template's confinement.
    It has no seccomp filter: it forks and its children setsid, and a task's filters may hold
    one listener, which each child installs for the host."""
    limits(policy)
    if not policy["confine"]:
        return
    # Landlock and seccomp bind the calling thread only. A forked child has one thread (fork
    # copies only the caller), and the template's layer hides /proc/self/task from it.
    if not forked and len(os.listdir("/proc/self/task")) != 1:
        raise OSError(0, "a thread started before the worker confined itself")
    drop_capabilities()
    seccomp.no_new_privs()
    landlock.restrict(read=policy["read"], write=policy["write"], files=policy["files"],
                      tcp_connect=policy["tcpConnect"])


def seal(policy: dict[str, Any]) -> None:
    """After the listener is in the host's hands: the rules that would have kept it from
    getting there."""
    if policy["confine"]:
        seccomp.install(late_rules(), listener=False)


def limits(policy: dict[str, Any]) -> None:
    for which, value in ((resource.RLIMIT_AS, policy["memoryBytes"]), (resource.RLIMIT_FSIZE, policy["fileBytes"]),
                         (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NOFILE, _MAX_OPEN_FILES),
                         (resource.RLIMIT_SIGPENDING, _MAX_PENDING_SIGNALS)):
        hard = resource.getrlimit(which)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> None:
    """Empty the bounding, ambient, effective, permitted and inheritable sets (a root host's
    workers would otherwise keep root's powers; a non-root host's have none to drop)."""
    header, data = _CapHeader(_CAP_V3, 0), (_CapData * 2)()
    if _libc.syscall(_SYS_CAPGET, ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    if any(d.effective or d.permitted for d in data):
        cap = 0
        while _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
            cap += 1
        if cap == 0:
            raise OSError(ctypes.get_errno(), "could not drop capabilities from the bounding set")
    _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    empty = (_CapData * 2)()
    if _libc.syscall(_SYS_CAPSET, ctypes.byref(_CapHeader(_CAP_V3, 0)), empty) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    _libc.syscall(_SYS_CAPGET, ctypes.byref(header), data)
    if any(d.effective or d.permitted or d.inheritable for d in data):
        raise OSError(0, "capabilities are still held after dropping them")
