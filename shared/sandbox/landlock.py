"""Landlock, the kernel's unprivileged access control, through its three system calls.

A process restricts itself (and every process it starts later): files only beneath the paths
it was granted, TCP bind/connect only on granted ports (ABI 4+), and no signals or abstract
UNIX sockets outside its own domain (ABI 6+). Landlock also keeps it from ptrace-ing, or reading
`/proc/<pid>/environ` or `mem` of, any process outside its domain."""
from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # the same on every architecture
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2

# Filesystem rights, and the ABI that introduced each.
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_V1 = (1 << 13) - 1
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
#: rights that apply to a file (a rule on a file may grant only these)
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
READ = EXECUTE | READ_FILE | READ_DIR
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

#: the lowest ABI that confines files, TCP, signals and abstract sockets together
REQUIRED_ABI = 6

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


class LandlockError(OSError):
    pass


def abi() -> int:
    """The Landlock ABI the kernel offers; 0 when it has none (or it is disabled)."""
    version = _libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(int(version), 0)


def fs_rights(version: int) -> int:
    rights = _FS_V1
    if version >= 2:
        rights |= REFER
    if version >= 3:
        rights |= TRUNCATE
    if version >= 5:
        rights |= IOCTL_DEV
    return rights


def restrict(*, read: Iterable[str], write: Iterable[str], files: dict[str, int],
             tcp_connect: Iterable[int]) -> int:
    """Confine this thread and its future children: read (and execute) beneath `read`, anything
    beneath `write`, the given rights on single `files`, TCP connect only to `tcp_connect` ports,
    no TCP bind, signals and abstract sockets only within the domain. Paths that do not exist
    are skipped. Needs no_new_privs. Returns the ABI used. :raises LandlockError:"""
    version = abi()
    if version < REQUIRED_ABI:
        raise LandlockError(0, f"Landlock ABI {REQUIRED_ABI} or newer is needed; this kernel offers "
                               f"{version or 'none'}")
    handled = fs_rights(version)
    attr = _RulesetAttr(handled, NET_BIND_TCP | NET_CONNECT_TCP, SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL)
    ruleset = _check(_libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
                                   ctypes.c_uint32(0)), "create a ruleset")
    try:
        for path in read:
            _add_path(ruleset, path, READ)
        for path in write:
            _add_path(ruleset, path, handled)
        for path, rights in files.items():
            _add_path(ruleset, path, rights & handled & FILE_RIGHTS)
        for port in tcp_connect:
            rule = _NetPortAttr(NET_CONNECT_TCP, port)
            _check(_libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_NET_PORT, ctypes.byref(rule), ctypes.c_uint32(0)),
                   f"allow TCP port {port}")
        _check(_libc.syscall(_SYS_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)), "restrict the process")
    finally:
        os.close(ruleset)
    return version


def _add_path(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not os.path.isdir(path):
            rights &= FILE_RIGHTS
        rule = _PathBeneathAttr(rights, fd)
        _check(_libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), ctypes.c_uint32(0)),
               f"grant {path}")
    finally:
        os.close(fd)


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise LandlockError(err, f"Landlock could not {what}: {os.strerror(err)}")
    return int(result)
