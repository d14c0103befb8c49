"""Local passwords as slow salted hashes (`hashlib.scrypt`), in one text form that settings can
hold: `scrypt$<log2 N>$<r>$<p>$<salt>$<hash>` (salt and hash base64url, no padding).

`python -m shared.passwords` prints the hash of a password typed at its prompt (or read from
stdin), for LOCAL_ADMIN_PASSWORD and LOCAL_USERS."""
from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import sys

PREFIX = "scrypt$"
MIN_LENGTH = 12
# 2^15 x 8 x 128 B = 32 MB and ~0.1 s per hash: slow for a guesser, bearable for a login.
_LOG2_N, _R, _P, _LEN = 15, 8, 1, 32
_MAX_LOG2_N = 20  # a hash from settings cannot ask for more than 1 GB of memory


def is_hash(value: str) -> bool:
    return value.startswith(PREFIX)


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = os.urandom(16) if salt is None else salt
    digest = _scrypt(password, salt, _LOG2_N, _R, _P, _LEN)
    return f"{PREFIX}{_LOG2_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def parse(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    """:raises ValueError: not a hash this module wrote."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != PREFIX[:-1]:
        raise ValueError("not a scrypt$ hash")
    log2_n, r, p = (int(x) for x in parts[1:4])
    salt, digest = _unb64(parts[4]), _unb64(parts[5])
    if not (1 <= log2_n <= _MAX_LOG2_N and 1 <= r <= 32 and 1 <= p <= 16 and len(salt) >= 8 and len(digest) >= 16):
        raise ValueError("scrypt$ hash parameters out of range")
    return log2_n, r, p, salt, digest


def standard(encoded: str) -> bool:
    """Made with this module's parameters: an unknown name is checked against a decoy made with
    them, so a hash with other costs would make real names stand out by their timing."""
    log2_n, r, p, salt, digest = parse(encoded)
    return (log2_n, r, p, len(digest)) == (_LOG2_N, _R, _P, _LEN)


def verify(encoded: str, password: str) -> bool:
    """Constant-time comparison with a hash from `hash_password`."""
    log2_n, r, p, salt, digest = parse(encoded)
    return hmac.compare_digest(_scrypt(password, salt, log2_n, r, p, len(digest)), digest)


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int, length: int) -> bytes:
    n = 1 << log2_n
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=length,
                          maxmem=130 * n * r * p + (1 << 20))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def main() -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("the two passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_LENGTH:
        print(f"a password needs at least {MIN_LENGTH} characters", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


if __name__ == "__main__":
    sys.exit(main())
