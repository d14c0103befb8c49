"""Files that hold tokens: written owner-only (0600, in a 0700 folder) and atomically, and
refused when someone else could have read them."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from .errors import O16nError


def base_name(name: str) -> str:
    """The last part of a name a server may have chosen, to write in a folder the user picked.
    :raises ValueError: a name that would be hidden, or empty"""
    base = Path(name.replace("\\", "/")).name
    if not base or base.startswith("."):
        raise ValueError(f"{name!r} is not a file name to write")
    return base


def config_dir() -> Path:
    """O16N_CONFIG_DIR, else $XDG_CONFIG_HOME/o16n, else ~/.config/o16n."""
    explicit = os.environ.get("O16N_CONFIG_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "o16n"


def _private_dir(path: Path) -> None:
    old = os.umask(0o077)  # folders made here (parents too) are the owner's alone
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    finally:
        os.umask(old)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise O16nError(f"{path} belongs to another user: tokens are not kept there")
    if info.st_mode & 0o077:  # a folder others may open: not changed behind its owner's back
        raise O16nError(f"{path} is open to other users: tokens are not kept there "
                        f"(chmod 700 it, or set O16N_CONFIG_DIR to a folder of your own)")


def read_private(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise O16nError(f"cannot read {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            # someone else may have read it already: make the owner sign in again rather than use it
            raise O16nError(f"{path} is readable by others (or not the owner's file): delete it and sign in again")
        return f.read()


def read_json(path: Path) -> dict:
    """A private JSON file's object ({} when there is none). :raises O16nError: unreadable"""
    raw = read_private(path)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise O16nError(f"{path} cannot be read (cut short?): sign in again (o16n login)") from None
    return value if isinstance(value, dict) else {}


def write_private(path: Path, data: bytes) -> None:
    _private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Held while tokens are renewed, so two processes never both spend one refresh token."""
    _private_dir(path.parent)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
