"""Local passwords are kept only as scrypt hashes; the command prints one."""
import subprocess
import sys
from pathlib import Path

import pytest

from shared import accounts, passwords

ROOT = Path(__file__).resolve().parents[2]


def test_a_hash_verifies_its_password_and_nothing_else():
    encoded = passwords.hash_password("correct horse battery")
    assert encoded.startswith("scrypt$15$8$1$") and "correct" not in encoded
    assert passwords.verify(encoded, "correct horse battery")
    assert not passwords.verify(encoded, "correct horse batterY")
    assert passwords.hash_password("correct horse battery") != encoded  # a fresh salt each time


@pytest.mark.parametrize("bad", ["scrypt$", "scrypt$15$8$1$c2FsdHNhbHQ", "scrypt$99$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
                                 "scrypt$x$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "bcrypt$2b$..."])
def test_malformed_or_costly_hashes_are_refused(bad):
    with pytest.raises(ValueError):
        passwords.parse(bad)


def test_the_command_prints_a_hash_that_verifies():
    out = subprocess.run([sys.executable, "-m", "shared.passwords"], input="a long enough password\n", cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    encoded = out.stdout.strip()
    assert passwords.verify(encoded, "a long enough password") and "long enough" not in out.stdout


def test_the_command_refuses_a_short_password():
    out = subprocess.run([sys.executable, "-m", "shared.passwords"], input="short\n", cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "at least 12" in out.stderr and not out.stdout


def test_accounts_keep_hashes_and_a_credential_version_that_follows_the_password(monkeypatch):
    from shared.config import get_settings

    monkeypatch.setenv("LOCAL_USERS", "alice:alice-password-1")
    monkeypatch.setenv("LOCAL_ROLES", "")
    get_settings.cache_clear()
    alice = accounts.find("alice")
    assert alice.credential.startswith("scrypt$") and "alice-password-1" not in repr(alice)
    assert accounts.check_password("alice", "alice-password-1") == alice
    assert accounts.check_password("alice", "wrong-password-1") is None
    assert accounts.check_password("mallory", "alice-password-1") is None
    before = accounts.credential_version(alice, "k" * 40, 0)
    assert before == accounts.credential_version(accounts.find("alice"), "k" * 40, 0)  # stable for one setting
    monkeypatch.setenv("LOCAL_USERS", "alice:alice-password-2")
    get_settings.cache_clear()
    assert accounts.credential_version(accounts.find("alice"), "k" * 40, 0) != before
    assert accounts.credential_version(alice, "k" * 40, 1) != before  # a new epoch, the same password
    monkeypatch.undo()
    get_settings.cache_clear()
