"""The client and the CLI against the real app served by the local host on Azurite."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.client.oidc_provider import Provider
from tests.constants import ADMIN_PASSWORD, USERS
from tests.e2e.conftest import start_host, stop_host

#: the command `pip install ./client` put beside this interpreter (make's deps install it)
O16N = Path(sys.executable).parent / "o16n"
PASSWORDS = {"admin": ADMIN_PASSWORD, **USERS}

# The Entra tenant the loopback provider plays: the API, a public client (the CLI) and a service
# with a secret; Carol has an app role, Dave none.
TENANT, API = str(uuid.uuid4()), str(uuid.uuid4())
CLI, CI, CI_SECRET = str(uuid.uuid4()), str(uuid.uuid4()), "ci-" + uuid.uuid4().hex
CAROL, DAVE = "carol@contoso.test", "dave@contoso.test"


@pytest.fixture(scope="module")
def provider():
    with Provider(tenant=TENANT, api=API, clients={CLI: None, CI: CI_SECRET},
                  users={CAROL: {"oid": str(uuid.uuid4()), "roles": ["Contributor"]},
                         DAVE: {"oid": str(uuid.uuid4()), "roles": []}},
                  app_roles={CI: ["Reader"]}) as p:
        yield p


@pytest.fixture(scope="session")
def server(azurite):
    proc, url = start_host(SPARE_WORKERS="0", BATCH_CHUNK_ROWS="5")
    yield url
    stop_host(proc)


class Cli:
    """Runs the installed `o16n` command with its own config folder."""

    def __init__(self, config: Path, extra_env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = {**os.environ, "O16N_CONFIG_DIR": str(config), "COLUMNS": "200", **(extra_env or {})}
        for key in ("O16N_PROFILE", "O16N_OUTPUT", "O16N_CLIENT_SECRET", "O16N_PASSWORD"):
            if key not in (extra_env or {}):
                self.env.pop(key, None)

    def __call__(self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> subprocess.CompletedProcess:
        assert O16N.is_file(), f"{O16N} is missing: make's deps install ./client"
        return subprocess.run([str(O16N), *args], input=stdin, capture_output=True, text=True, timeout=180,
                              env={**self.env, **(env or {})}, cwd=cwd)

    def ok(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        done = self(*args, **kwargs)
        assert done.returncode == 0, f"o16n {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def login(self, server: str, user: str, *extra: str) -> None:
        self.ok(*extra, "login", server, "--username", user, "--password-stdin", stdin=PASSWORDS[user] + "\n")


@pytest.fixture
def cli(tmp_path) -> Cli:
    return Cli(tmp_path / "config")


@pytest.fixture(scope="module")
def entra_host(azurite, provider):
    """A host that trusts the loopback tenant's tokens."""
    proc, url = start_host(SPARE_WORKERS="0", AAD_TENANT_ID=TENANT, AAD_AUDIENCE=f"{API},api://{API}",
                           AAD_JWKS_URL=provider.jwks_url)
    yield url
    stop_host(proc)
