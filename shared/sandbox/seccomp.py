"""seccomp-BPF filters, built by hand (no libseccomp needed), and the user-notification calls
the host uses to decide, from outside, whether a worker may start another process or thread.

A filter is a list of `Rule`s; `program` turns them into classic BPF for this architecture.
Syscalls without a rule are allowed: the filter closes what Landlock and rlimits leave open."""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from dataclasses import dataclass

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int
_libc.ioctl.restype = ctypes.c_int
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]

PR_SET_NO_NEW_PRIVS = 38
_SET_MODE_FILTER, _GET_ACTION_AVAIL, _GET_NOTIF_SIZES = 1, 2, 3
_FLAG_NEW_LISTENER = 1 << 3

RET_ALLOW, RET_NOTIFY, RET_KILL_PROCESS = 0x7FFF0000, 0x7FC00000, 0x80000000
_RET_ERRNO = 0x00050000

# x86_64 only: these are the machines Azure Functions runs Python on. Another architecture gets
# no filter, and strict mode then refuses to run user code (see `supported`).
_ARCH = {"x86_64": 0xC000003E}
_SYS_SECCOMP = {"x86_64": 317}
NR = {  # x86_64 numbers
    "shmget": 29, "shmat": 30, "shmctl": 31, "sendto": 44, "sendmsg": 46, "listen": 50, "semget": 64,
    "semop": 65, "semctl": 66, "shmdt": 67, "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71,
    "semtimedop": 220, "mq_open": 240, "mq_unlink": 241, "mq_timedsend": 242, "mq_timedreceive": 243,
    "mq_notify": 244, "mq_getsetattr": 245, "sendmmsg": 307, "memfd_create": 319, "memfd_secret": 447,
    "socket": 41, "ioctl": 16, "socketpair": 53, "setsockopt": 54, "prctl": 157, "chmod": 90, "fchmod": 91, "chown": 92, "fchown": 93,
    "lchown": 94, "utime": 132, "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190, "removexattr": 197,
    "lremovexattr": 198, "fremovexattr": 199, "utimes": 235, "fchownat": 260, "futimesat": 261, "fchmodat": 268,
    "utimensat": 280, "fchmodat2": 452, "setxattrat": 463, "removexattrat": 466, "fcntl": 72, "sync": 162,
    "syncfs": 306, "inotify_init": 253, "inotify_add_watch": 254, "inotify_init1": 294, "getxattr": 191,
    "lgetxattr": 192, "fgetxattr": 193, "listxattr": 194, "llistxattr": 195, "flistxattr": 196,
    "getxattrat": 464, "listxattrat": 465, "open_tree_attr": 467, "file_getattr": 468, "file_setattr": 469, "clone": 56, "fork": 57, "vfork": 58, "ptrace": 101, "syslog": 103, "setpgid": 109,
    "setsid": 112, "uselib": 134, "setpriority": 141, "sched_setparam": 142, "sched_setscheduler": 144,
    "vhangup": 153, "pivot_root": 155, "adjtimex": 159, "chroot": 161, "acct": 163, "settimeofday": 164,
    "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169, "iopl": 172, "ioperm": 173,
    "init_module": 175, "delete_module": 176, "quotactl": 179, "sched_setaffinity": 203, "lookup_dcookie": 212,
    "clock_settime": 227, "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250,
    "ioprio_set": 251, "migrate_pages": 256, "unshare": 272, "move_pages": 279, "perf_event_open": 298,
    "fanotify_init": 300, "prlimit64": 302, "name_to_handle_at": 303, "open_by_handle_at": 304,
    "clock_adjtime": 305, "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "finit_module": 313, "sched_setattr": 314, "seccomp": 317, "kexec_file_load": 320, "bpf": 321,
    "userfaultfd": 323, "io_setup": 206, "io_destroy": 207, "io_getevents": 208, "io_submit": 209, "io_cancel": 210,
    "io_pgetevents": 333, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "clone3": 435, "pidfd_getfd": 438, "process_madvise": 440, "mount_setattr": 442, "quotactl_fd": 443,
    "landlock_create_ruleset": 444, "landlock_add_rule": 445, "landlock_restrict_self": 446,
    "process_mrelease": 448,
}

# Classic BPF opcodes used here.
_LD_ABS, _JEQ, _JGT, _JSET, _AND, _RET = 0x20, 0x15, 0x25, 0x45, 0x54, 0x06


def errno_ret(code: int) -> int:
    return _RET_ERRNO | code


@dataclass(frozen=True)
class Rule:
    """What a syscall gets: `action` always, or, with `args`, `action` only when every
    (index, allowed values) holds and `otherwise` when one does not. `mask` is ANDed with an
    argument before the comparison (one mask per index, 0 for none); `flags_denied` sends the
    call to `otherwise` when argument `flags_arg` has any of those bits set, `denied` when
    argument `denied[0]` is one of the values `denied[1]`."""
    name: str
    action: int
    args: tuple[tuple[int, tuple[int, ...], int], ...] = ()
    otherwise: int = errno_ret(errno.EPERM)
    flags_denied: int = 0
    flags_arg: int = 0
    denied: tuple[int, tuple[int, ...]] | None = None


def supported() -> str | None:
    """None when filters can be installed here, else why not."""
    machine = platform.machine()
    if machine not in _ARCH:
        return f"no seccomp syscall table for {machine}"
    action = ctypes.c_uint32(RET_NOTIFY)
    if _libc.syscall(_SYS_SECCOMP[machine], _GET_ACTION_AVAIL, 0, ctypes.byref(action)) != 0:
        return f"seccomp user notification is unavailable ({os.strerror(ctypes.get_errno())})"
    return None


def program(rules: list[Rule]) -> bytes:
    """The BPF program: wrong architecture kills; x32 calls, and calls newer than this table
    (kernels add some every release, unreviewed), fail with ENOSYS; each rule; then allow."""
    machine = platform.machine()
    newest = max(NR.values())
    out: list[tuple[int, int, int, int]] = [
        (_LD_ABS, 0, 0, 4), (_JEQ, 1, 0, _ARCH[machine]), (_RET, 0, 0, RET_KILL_PROCESS),
        (_LD_ABS, 0, 0, 0), (_JGT, 0, 1, newest), (_RET, 0, 0, errno_ret(errno.ENOSYS)),
    ]
    for rule in rules:
        body = _body(rule)
        out += [(_LD_ABS, 0, 0, 0), (_JEQ, 0, len(body), NR[rule.name])] + body
    out.append((_RET, 0, 0, RET_ALLOW))
    if len(out) > 4096:
        raise ValueError("seccomp program too long")
    return b"".join(struct.pack("<HBBI", *ins) for ins in out)


def _body(rule: Rule) -> list[tuple[int, int, int, int]]:
    """Instructions that end in a return on every path (jumps are relative, forward only)."""
    body: list[tuple[int, int, int, int]] = []
    if rule.flags_denied:
        body += [(_LD_ABS, 0, 0, 16 + 8 * rule.flags_arg), (_JSET, 0, 1, rule.flags_denied),
                 (_RET, 0, 0, rule.otherwise)]
    if rule.denied:
        index, values = rule.denied
        body.append((_LD_ABS, 0, 0, 16 + 8 * index))
        for i, value in enumerate(values):
            body.append((_JEQ, len(values) - i, 0, value))  # match: jump to the deny after the allow
        return body + [(_RET, 0, 0, rule.action), (_RET, 0, 0, rule.otherwise)]
    for index, allowed, mask in rule.args:
        # load the low 32 bits of the argument; if it is one of `allowed`, go on, else deny
        body.append((_LD_ABS, 0, 0, 16 + 8 * index))
        if mask:
            body.append((_AND, 0, 0, mask))
        for i, value in enumerate(allowed):
            left = len(allowed) - i - 1
            body.append((_JEQ, left + 1, 0, value))  # match: skip the rest and the deny
        body.append((_RET, 0, 0, rule.otherwise))
    body.append((_RET, 0, 0, rule.action))
    return body


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def no_new_privs() -> None:
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")


def install(rules: list[Rule], *, listener: bool) -> int | None:
    """Apply the filter to this thread and its future children (needs no_new_privs).
    With `listener`, returns the fd on which RET_NOTIFY calls are reported."""
    code = program(rules)
    buf = ctypes.create_string_buffer(code, len(code))
    prog = _SockFprog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))
    flags = _FLAG_NEW_LISTENER if listener else 0
    result = _libc.syscall(_SYS_SECCOMP[platform.machine()], _SET_MODE_FILTER, flags, ctypes.byref(prog))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp filter refused: {os.strerror(err)}")
    return int(result) if listener else None


# --- user notification (host side) -------------------------------------------------------------
_NOTIF = struct.Struct("<QII iI Q 6Q")  # id, pid, flags, then seccomp_data: nr, arch, ip, args
_RESP = struct.Struct("<QqiI")  # id, val, error, flags
_IOCTL_RECV, _IOCTL_SEND = 0xC0502100, 0xC0182101
_FLAG_CONTINUE = 1


def check_notif_sizes() -> None:
    sizes = (ctypes.c_uint16 * 3)()
    if _libc.syscall(_SYS_SECCOMP[platform.machine()], _GET_NOTIF_SIZES, 0, sizes) != 0:
        raise OSError(ctypes.get_errno(), "seccomp notification sizes unavailable")
    if sizes[0] != _NOTIF.size or sizes[1] != _RESP.size:
        raise OSError(errno.EINVAL, f"unexpected seccomp notification sizes {tuple(sizes)}")


def receive(fd: int) -> tuple[int, int, int, int] | None:
    """(notification id, calling pid, syscall number, first argument), or None when the call
    went away before it was read."""
    buf = ctypes.create_string_buffer(_NOTIF.size)
    if _libc.ioctl(fd, _IOCTL_RECV, buf) != 0:
        err = ctypes.get_errno()
        if err in (errno.ENOENT, errno.EINTR):
            return None
        raise OSError(err, os.strerror(err))
    fields = _NOTIF.unpack(buf.raw)
    return fields[0], fields[1], fields[3], fields[6]


def respond(fd: int, notification: int, *, allow: bool, error: int = errno.EAGAIN) -> None:
    resp = _RESP.pack(notification, 0, 0, _FLAG_CONTINUE) if allow else _RESP.pack(notification, 0, -error, 0)
    buf = ctypes.create_string_buffer(resp, len(resp))
    if _libc.ioctl(fd, _IOCTL_SEND, buf) != 0 and ctypes.get_errno() != errno.ENOENT:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
