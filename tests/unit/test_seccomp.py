"""The seccomp program, run by a small classic-BPF interpreter: each rule gives the action it
should, on any kernel."""
import errno
import struct

from shared.sandbox.policy import late_rules, syscall_rules
from shared.sandbox.seccomp import NR, RET_ALLOW, RET_KILL_PROCESS, RET_NOTIFY, errno_ret, program

X86_64 = 0xC000003E
EPERM, ENOSYS = errno_ret(errno.EPERM), errno_ret(errno.ENOSYS)


def run(code: bytes, nr: int, *args: int, arch: int = X86_64) -> int:
    data = struct.pack("<iIQ6Q", nr, arch, 0, *(list(args) + [0] * (6 - len(args))))
    insns = [struct.unpack("<HBBI", code[i:i + 8]) for i in range(0, len(code), 8)]
    pc, acc = 0, 0
    while True:
        op, jt, jf, k = insns[pc]
        if op == 0x20:  # ld [k]
            acc = struct.unpack_from("<I", data, k)[0]
        elif op == 0x54:  # and #k
            acc &= k
        elif op == 0x06:  # ret #k
            return k
        else:
            taken = {0x15: acc == k, 0x25: acc > k, 0x45: bool(acc & k)}[op]
            pc += jt if taken else jf
        pc += 1


def action(name: str, *args: int, network: bool = False) -> int:
    """What the filter answers `name` (read: 0, which no rule names)."""
    return run(program(syscall_rules(network=network)), NR.get(name, 0), *args)


def test_another_architecture_is_killed_and_unknown_calls_fail_with_enosys():
    code = program(syscall_rules(network=False))
    assert run(code, 0, arch=0x40000003) == RET_KILL_PROCESS
    assert run(code, max(NR.values()) + 1) == ENOSYS
    assert run(code, 0x40000000 | 1) == ENOSYS  # x32
    assert action("read") == RET_ALLOW


def test_sockets_only_with_outbound_ports_and_never_fast_open():
    assert action("socket", 2, 1, 0) == EPERM
    assert action("socket", 2, 1, 0, network=True) == RET_ALLOW
    assert action("socket", 2, 1, 132, network=True) == EPERM  # SCTP
    assert action("socket", 1, 1, 0, network=True) == EPERM  # AF_UNIX
    assert action("socketpair", 1, 1) == RET_ALLOW and action("socketpair", 1, 2) == EPERM
    assert action("sendto", 3, 0, 0, 0x20000000) == EPERM and action("sendto", 3, 0, 0, 0) == RET_ALLOW
    assert run(program(late_rules()), NR["sendmsg"]) == ENOSYS


def test_processes_go_to_the_host_and_namespaces_or_new_parents_are_refused():
    assert action("clone", 0x11) == RET_NOTIFY
    assert action("clone", 0x10000000 | 0x11) == EPERM  # CLONE_NEWUSER
    assert action("clone", 0x8000 | 0x11) == EPERM  # CLONE_PARENT
    thread = 0x100 | 0x800 | 0x10000 | 0x400 | 0x200  # VM|SIGHAND|THREAD|FILES|FS: pthread_create's
    assert action("clone", thread) == RET_NOTIFY
    assert action("clone", thread & ~0x400) == EPERM  # a thread with descriptors of its own
    assert action("clone", 0x100 | 0x4000 | 0x11) == RET_NOTIFY  # posix_spawn's CLONE_VM|CLONE_VFORK
    assert action("fork") == action("vfork") == RET_NOTIFY
    assert action("clone3") == ENOSYS
    assert action("setsid") == action("ptrace") == EPERM


def test_calls_that_reach_others_only_aim_at_the_worker_itself():
    assert action("prlimit64", 0) == RET_ALLOW and action("prlimit64", 1234) == EPERM
    assert action("setpriority", 0, 0) == RET_ALLOW and action("setpriority", 2, 0) == EPERM
    assert action("ioctl", 3, 0x5401) == RET_ALLOW and action("ioctl", 3, 0x40086602) == EPERM
    assert action("fcntl", 3, 1) == RET_ALLOW and action("fcntl", 3, 1024) == EPERM
    assert action("chmod") == action("fchmod") == action("file_setattr") == action("inotify_init1") == EPERM
