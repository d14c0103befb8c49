"""The sandbox's rules, in one place. A worker runs user code (session code, a service's code and
initCode, unpickling) under all of them, applied by `confine` before any user byte is read:

- files: read and execute only the interpreter, the import path, system libraries and the
  app's `shared/` package; read-write only the worker's own folder. Nothing else: not the app
  folder (local.settings.json, .azurite/), other workers' folders, the system temp directory.
- network: no sockets but UNIX stream socket pairs by default (connected to each other only;
  no sendmsg, so no descriptors passed through them). With SANDBOX_OUTBOUND_PORTS, TCP sockets
  that may connect to those ports only, and UDP to any address (DNS needs it); never bind,
  listen or TCP Fast Open (whose first send connects without the connect check).
- processes: no signals, ptrace, /proc/<pid>/environ or mem of anything outside the worker's
  own domain; the worker and its children stay in one process group (setsid and setpgid fail)
  and below the worker (no CLONE_PARENT), so killing the group ends them all; at most
  WORKER_MAX_PROCESSES processes and threads.
- files' metadata: no chmod, chown, utime, leases or extended attributes anywhere, no inotify
  or dnotify. Landlock does not govern them, and the worker runs as the app's user, which owns
  the app's files.
- privileges: no_new_privs, every capability dropped, no namespaces, mounts, BPF, keyrings,
  perf, io_uring or kernel modules; no memory outside the address-space limit that outlives a
  process (memfd, System V shared memory, semaphores and message queues, POSIX queues).
- limits: address space (WORKER_MEMORY_MB), file size and folder size (WORKER_DISK_MB), no core
  dumps, console output (MAX_CONSOLE_BYTES), reply size and workspace size (MAX_WORKSPACE_MB).
"""
from __future__ import annotations

import errno
import json
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..config import get_settings
from . import landlock, seccomp
from .seccomp import RET_ALLOW, RET_NOTIFY, Rule, errno_ret
from .template import templates

APP_ROOT = Path(__file__).resolve().parents[2]
SHARED = APP_ROOT / "shared"

_SYSTEM_DIRS = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc/ssl", "/etc/ca-certificates",
                "/sys/devices/system/cpu")
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf",
                 "/etc/hosts", "/etc/resolv.conf", "/etc/host.conf", "/etc/gai.conf", "/etc/mime.types",
                 "/proc/cpuinfo", "/proc/meminfo", "/dev/zero", "/dev/urandom", "/dev/random")
_DEVICES_RW = ("/dev/null",)

_AF_UNIX, _AF_INET, _AF_INET6 = 1, 2, 10
_SOCK_STREAM, _SOCK_DGRAM = 1, 2
_TCP, _UDP = 6, 17
_MSG_FASTOPEN = 0x20000000
_CLONE_NEWNS, _CLONE_NEWCGROUP, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x02000000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET, _CLONE_NEWTIME = 0x10000000, 0x20000000, 0x40000000, 0x00000080
_CLONE_PARENT = 0x00008000
_CLONE_FILES, _CLONE_THREAD = 0x00000400, 0x00010000
# namespaces would escape the rest of the rules; CLONE_PARENT would make the new process a
# child of the host instead of the worker
_CLONE_DENIED = (_CLONE_NEWNS | _CLONE_NEWCGROUP | _CLONE_NEWUTS | _CLONE_NEWIPC | _CLONE_NEWUSER | _CLONE_NEWPID
                 | _CLONE_NEWNET | _CLONE_NEWTIME | _CLONE_PARENT)

#: syscalls refused outright (EPERM): escape hatches, other processes' memory, kernel state,
#: leaving the process group that is killed as one
DENIED = ("ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "process_mrelease", "pidfd_getfd",
          "kcmp", "move_pages", "migrate_pages", "setsid", "setpgid", "unshare", "setns", "mount", "umount2",
          "pivot_root", "chroot", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick",
          "mount_setattr", "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
          "io_uring_setup", "io_uring_enter", "io_uring_register", "init_module", "finit_module",
          # kernel AIO: its contexts draw on one quota for the whole machine (aio-max-nr)
          "io_setup", "io_destroy", "io_getevents", "io_submit", "io_cancel", "io_pgetevents",
          "delete_module", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "syslog", "acct",
          "quotactl", "quotactl_fd", "name_to_handle_at", "open_by_handle_at", "fanotify_init", "uselib",
          "lookup_dcookie", "vhangup", "iopl", "ioperm", "settimeofday", "clock_settime", "clock_adjtime",
          "adjtimex", "listen", "memfd_create", "memfd_secret", "shmget", "shmat", "shmctl", "shmdt", "semget",
          "semop", "semctl", "semtimedop", "msgget", "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink",
          "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
          "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat", "utime", "utimes",
          "futimesat", "utimensat", "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr",
          "fremovexattr", "setxattrat", "removexattrat",
          # reads Landlock does not govern: attributes of files it may not read, and watching
          # folders it may not list (other users' file names as they are made)
          "getxattr", "lgetxattr", "fgetxattr", "listxattr", "llistxattr", "flistxattr", "getxattrat",
          "listxattrat", "inotify_init", "inotify_init1", "inotify_add_watch", "file_getattr", "file_setattr",
          "open_tree_attr",
          # flushes every file system of the machine
          "sync", "syncfs")
#: ioctls that change a file's inode flags or attributes (chattr), which an owner may do on a
#: file open only for reading
_FS_IOC_SETFLAGS, _FS_IOC32_SETFLAGS, _FS_IOC_FSSETXATTR = 0x40086602, 0x40046602, 0x401C5820
_FS_IOC_SETVERSION, _FS_IOC32_SETVERSION, _FS_IOC_ENABLE_VERITY = 0x40087602, 0x40047602, 0x40806685
_IOCTL_DENIED = (_FS_IOC_SETFLAGS, _FS_IOC32_SETFLAGS, _FS_IOC_FSSETXATTR, _FS_IOC_SETVERSION, _FS_IOC32_SETVERSION,
                 _FS_IOC_ENABLE_VERITY)
#: fcntl F_SETLEASE (an owner's lease stalls everyone who opens the file for 45 s), F_NOTIFY
#: (watching a folder it may not list), F_SETPIPE_SZ and byte-range locks (kernel memory outside
#: every limit: nothing bounds how many locks a process holds; flock, one per open file, stays)
_F_SETLEASE, _F_NOTIFY, _F_SETPIPE_SZ = 1024, 1026, 1031
_F_SETLK, _F_SETLKW, _F_OFD_SETLK, _F_OFD_SETLKW = 6, 7, 37, 38
_FCNTL_DENIED = (_F_SETLEASE, _F_NOTIFY, _F_SETPIPE_SZ, _F_SETLK, _F_SETLKW, _F_OFD_SETLK, _F_OFD_SETLKW)
#: setsockopt SO_SNDBUF, SO_RCVBUF and their FORCE forms: buffers are kernel memory outside the
#: address-space limit, which the host charges each socket at the default size
_SOCKET_BUFFERS = (7, 8, 32, 33)
_PR_SET_PDEATHSIG = 1
#: calls that may only name the worker itself (pid 0) as their target
SELF_ONLY = (("prlimit64", 0), ("sched_setaffinity", 0), ("sched_setscheduler", 0), ("sched_setparam", 0),
             ("sched_setattr", 0))


def syscall_rules(*, network: bool) -> list[Rule]:
    """The seccomp filter. New processes and threads go to the host, which counts them."""
    # no family at all without outbound ports: nothing to connect, bind or listen with
    families = (_AF_INET, _AF_INET6) if network else (-1 & 0xFFFFFFFF,)
    types, protocols = (_SOCK_STREAM, _SOCK_DGRAM), (0, _TCP, _UDP)
    rules = [Rule(name, errno_ret(errno.EPERM)) for name in DENIED]
    rules += [Rule(name, RET_ALLOW, args=((index, (0,), 0),)) for name, index in SELF_ONLY]
    rules += [
        # its own process or group only: "every process of this user" would reach the host
        Rule("setpriority", RET_ALLOW, args=((0, (0, 1), 0), (1, (0,), 0))),
        Rule("ioprio_set", RET_ALLOW, args=((0, (1, 2), 0), (1, (0,), 0))),
        Rule("socket", RET_ALLOW, args=((0, families, 0), (1, types, 0xF), (2, protocols, 0))),
        Rule("sendto", RET_ALLOW, flags_denied=_MSG_FASTOPEN, flags_arg=3),
        # stream pairs only: a datagram socket could send to any pathname socket on the machine
        Rule("socketpair", RET_ALLOW, args=((0, (_AF_UNIX,), 0), (1, (_SOCK_STREAM,), 0xF))),
        Rule("ioctl", RET_ALLOW, denied=(1, _IOCTL_DENIED)),
        Rule("fcntl", RET_ALLOW, denied=(1, _FCNTL_DENIED)),
        Rule("setsockopt", RET_ALLOW, denied=(2, _SOCKET_BUFFERS)),
        # the signal a worker gets when the host dies: user code must not take it away
        Rule("prctl", RET_ALLOW, denied=(0, (_PR_SET_PDEATHSIG,))),
        # a thread shares its process's descriptors: one with a table of its own would hide
        # descriptors from the host, which looks at them per process
        Rule("clone", RET_NOTIFY, flags_denied=_CLONE_DENIED,
             args=((0, (0, _CLONE_FILES, _CLONE_THREAD | _CLONE_FILES), _CLONE_THREAD | _CLONE_FILES),)),
        Rule("clone3", errno_ret(errno.ENOSYS)),  # its flags sit behind a pointer: libc falls back to clone
        Rule("fork", RET_NOTIFY),
        Rule("vfork", RET_NOTIFY),
    ]
    return rules


def late_rules() -> list[Rule]:
    """A second filter, stacked once the worker has handed its listener to the host (which
    takes sendmsg): sendmsg carries descriptors (SCM_RIGHTS), which would hide deleted files
    from the disk measurement. ENOSYS, because glibc's resolver then falls back to send."""
    return [Rule("sendmsg", errno_ret(errno.ENOSYS)), Rule("sendmmsg", errno_ret(errno.ENOSYS))]


def strict() -> bool:
    return get_settings().sandbox == "strict"


@lru_cache(maxsize=1)
def kernel() -> dict[str, Any]:
    """What this kernel offers the sandbox (probed once, from the host)."""
    missing = []
    abi = landlock.abi()
    if abi < landlock.REQUIRED_ABI:
        missing.append(f"Landlock ABI {landlock.REQUIRED_ABI}+ (this kernel offers {abi or 'none'})")
    why = seccomp.supported()
    if why is None:
        try:
            seccomp.check_notif_sizes()
        except OSError as exc:
            why = str(exc)
    if why:
        missing.append(f"seccomp ({why})")
    return {"landlockAbi": abi, "seccomp": why is None, "missing": missing}


def refusal() -> str | None:
    """Why user code may not run here, or None."""
    k = kernel()
    if strict() and k["missing"]:
        return ("user code is not run: SANDBOX=strict needs " + " and ".join(k["missing"]) +
                "; run on a newer kernel, or set SANDBOX=process and accept the risks README states")
    return None


def for_worker(workdir: str) -> dict[str, Any]:
    """The rules a worker applies to itself (given on its command line: nothing here is secret)."""
    s = get_settings()
    ports = get_settings().outbound_port_list
    return {
        "confine": strict(),
        "read": readable(workdir),
        "write": [workdir],
        "files": {**{f: landlock.READ_FILE for f in _SYSTEM_FILES},
                  **{f: landlock.READ_FILE | landlock.WRITE_FILE for f in _DEVICES_RW}},
        "tcpConnect": ports,
        "network": bool(ports),
        "memoryBytes": s.worker_memory_mb * 1024 * 1024,
        "fileBytes": s.worker_disk_mb * 1024 * 1024,
        "consoleBytes": s.max_console_bytes,
        "workspaceBytes": s.max_workspace_mb * 1024 * 1024,
        # a reply's JSON: outputs as large as a request may be, and console output
        "replyJsonBytes": s.max_request_bytes + 4 * s.max_console_bytes + 2**20,
        "maxProcesses": s.worker_max_processes,
        "shared": str(SHARED),
        "host": os.getpid(),
        "importPath": import_path(workdir),
    }


def for_template(folder: str) -> dict[str, Any]:
    """The template's rules: a worker's, but it may write in the folder of all this host's
    workers' folders (each child it forks narrows that to its own) and it imports PRELOAD_MODULES."""
    rules = for_worker(os.path.join(folder, "template"))  # a place among the workers' folders
    rules["write"] = [folder]
    rules["preload"] = [m.strip() for m in get_settings().preload_modules.split(",") if m.strip()]
    return rules


def readable(workdir: str) -> list[str]:
    """Read-only paths: system directories, the interpreter, the import path and `shared/`."""
    return _outside_guarded([*_SYSTEM_DIRS, sys.prefix, sys.base_prefix,
                             os.path.dirname(os.path.realpath(sys.executable)), *sys.path, str(SHARED)], workdir)


def import_path(workdir: str) -> list[str]:
    """The host's import path for the worker (Azure Functions installs the app's packages on
    PYTHONPATH, which `python -I` ignores), without the app folder: `shared` is loaded by path."""
    return _outside_guarded(sys.path, workdir)


def _outside_guarded(paths: list[str], workdir: str) -> list[str]:
    """Existing folders that neither hold the app folder (local.settings.json, .azurite/) nor
    touch the folder of all workers' folders (neither above nor inside it)."""
    workers = Path(workdir).resolve().parents[1]
    out: list[str] = []
    for p in paths:
        if not p or not os.path.isdir(p):
            continue
        real = Path(p).resolve()
        if real == APP_ROOT or real in APP_ROOT.parents or real == workers or real in workers.parents \
                or workers in real.parents:
            continue
        if str(real) not in out:
            out.append(str(real))
    return out


def to_json(rules: dict[str, Any]) -> str:
    return json.dumps(rules, separators=(",", ":"))


def describe() -> dict[str, Any]:
    """For /status: the level in force and why."""
    s = get_settings()
    k = kernel()
    ports = get_settings().outbound_port_list
    details: dict[str, Any] = {
        "mode": s.sandbox, "landlockAbi": k["landlockAbi"], "seccomp": k["seccomp"],
        "network": f"outbound TCP to ports {', '.join(map(str, ports))}, and UDP" if ports else "none",
        "templates": {**templates.state(), "max": s.worker_templates},
        "limits": {"memoryMb": s.worker_memory_mb, "diskMb": s.worker_disk_mb,
                   "processes": s.worker_max_processes, "executionSeconds": s.execution_timeout_seconds,
                   "workspaceMb": s.max_workspace_mb},
    }
    why = refusal()
    if why:
        details["error"] = why
        return {"statusCode": "fail", "details": details}
    if not strict():
        details["warning"] = ("SANDBOX=process: user code runs with the app's user and can read what it can "
                              "read, reach the network and signal its processes")
        return {"statusCode": "warn", "details": details}
    return {"statusCode": "pass", "details": details}
