"""Entra ID sign-in through msal, as the client and the CLI do it, against the loopback OpenID
provider (keys and CA made here) and an o16n host that trusts its tokens."""
from __future__ import annotations

import json
import re
import stat
import subprocess
import threading
import uuid

import pytest

from o16n import ClientAuthenticationError, ClientSecretCredential, DeviceCodeCredential, HttpResponseError, O16nClient
from o16n._http import TrustingSession
from tests.client.conftest import API, CAROL, CI, CI_SECRET, CLI, DAVE, O16N, Cli
from tests.client.oidc_provider import Provider

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]

def entra_args(provider, *, client_id=CLI):
    return ["--authority", provider.authority, "--client-id", client_id, "--api", API, "--ca-bundle", provider.ca_file]


def device_login(cli: Cli, host: str, provider: Provider, user: str) -> subprocess.CompletedProcess:
    """`o16n login --device-code`, with a person approving the code it shows."""
    proc = subprocess.Popen([str(O16N), "login", host, "--device-code", *entra_args(provider)], env=cli.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    shown = []
    for line in proc.stderr:  # msal's instructions: a URL and a code
        shown.append(line)
        match = re.search(r"enter the code (\S+)", line)
        if match:
            provider.approve(match.group(1), user)
            break
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, "".join(shown) + stderr)


def test_the_cli_signs_a_person_in_with_a_device_code_and_renews_silently(entra_host, provider, tmp_path, monkeypatch):
    monkeypatch.setattr(provider, "token_lifetime", 60)  # msal renews tokens with under 5 minutes left
    cli = Cli(tmp_path / "config")
    done = device_login(cli, entra_host, provider, CAROL)
    assert done.returncode == 0, done.stderr
    assert "/devicelogin" in done.stderr and "(device-code)" in done.stdout
    for path in cli.config.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o700

    refreshes = sum(r["grant_type"] == "refresh_token" for r in provider.token_requests)
    assert json.loads(cli.ok("services", "list", "--json").stdout) is not None  # no prompt: from the cache
    assert sum(r["grant_type"] == "refresh_token" for r in provider.token_requests) == refreshes + 1
    status = json.loads(cli.ok("status", "--json").stdout)
    assert status["method"] == "device-code" and status["user"] == CLI

    cli.ok("logout")
    assert not (cli.config / "default.tokens.json").exists()
    after = cli("services", "list")
    assert after.returncode == 1 and "sign in again" in after.stderr


def test_a_person_without_an_app_role_is_not_signed_in(entra_host, provider, tmp_path):
    cli = Cli(tmp_path / "config")
    done = device_login(cli, entra_host, provider, DAVE)
    assert done.returncode == 1 and "(403)" in done.stderr and "app roles" in done.stderr
    assert not (cli.config / "default.json").exists() and not (cli.config / "default.tokens.json").exists()


def test_the_cli_signs_a_service_in_with_client_credentials(entra_host, provider, tmp_path):
    cli = Cli(tmp_path / "config")
    cli.ok("login", entra_host, "--client-credentials", *entra_args(provider, client_id=CI),
           env={"O16N_CLIENT_SECRET": CI_SECRET})
    for path in cli.config.iterdir():
        assert CI_SECRET not in path.read_text() and stat.S_IMODE(path.stat().st_mode) == 0o600
    requests_before = len(provider.token_requests)
    assert json.loads(cli.ok("services", "list", "--json").stdout) is not None  # the cached app token, no secret
    assert len(provider.token_requests) == requests_before
    (tmp_path / "f.py").write_text("def f():\n    return 1\n")
    refused = cli("publish", "Nope", "1", "--code", str(tmp_path / "f.py"), "--function", "f", "--outputs", "y=float")
    assert refused.returncode == 1 and "(403)" in refused.stderr  # a Reader app

    wrong = Cli(tmp_path / "wrong")("login", entra_host, "--client-credentials", *entra_args(provider, client_id=CI),
                                    env={"O16N_CLIENT_SECRET": "not-the-secret"})
    assert wrong.returncode == 1 and "invalid_client" in wrong.stderr and "not-the-secret" not in wrong.stderr
    missing = Cli(tmp_path / "missing")("login", entra_host, "--client-credentials", *entra_args(provider, client_id=CI))
    assert missing.returncode == 2 and "O16N_CLIENT_SECRET" in missing.stderr


def test_the_client_signs_in_with_both_msal_flows(entra_host, provider, tmp_path):
    http = TrustingSession(provider.ca_file)

    def approve(message):  # the person at the browser, after msal has shown the code
        code = re.search(r"enter the code (\S+)", message).group(1)
        threading.Timer(0.2, provider.approve, (code, CAROL)).start()

    person = DeviceCodeCredential(CLI, authority=provider.authority, scopes=[f"api://{API}/user_impersonation"],
                                  cache_path=tmp_path / "msal.json", prompt=approve, http_client=http)
    carol = O16nClient(entra_host, person)
    svc = carol.service(f"Entra{uuid.uuid4().hex[:6]}").version("1").code_str("y = x + 1").inputs(x=float) \
        .outputs(y=float).deploy()
    assert svc.published_by.startswith("aad:") and svc.consume(x=1).output("y") == 2.0
    # another process, no prompt: the cached sign-in carries on
    again = DeviceCodeCredential(CLI, authority=provider.authority, scopes=[f"api://{API}/user_impersonation"],
                                 cache_path=tmp_path / "msal.json", http_client=http)
    assert O16nClient(entra_host, again).get_service(svc.name, version="1").name == svc.name
    again.sign_out()
    with pytest.raises(ClientAuthenticationError, match="sign in again"):
        O16nClient(entra_host, DeviceCodeCredential(CLI, authority=provider.authority,
                                                    scopes=[f"api://{API}/user_impersonation"],
                                                    cache_path=tmp_path / "msal.json", http_client=http)).list_services()

    app = O16nClient(entra_host, ClientSecretCredential(CI, CI_SECRET, authority=provider.authority,
                                                        scopes=[f"api://{API}/.default"], http_client=http))
    assert svc.name in {s.name for s in app.list_services()}
    with pytest.raises(HttpResponseError) as caught:
        app.delete_service(svc.name, version="1")
    assert caught.value.status_code == 403
    with pytest.raises(ClientAuthenticationError, match="invalid_client|client credentials"):
        O16nClient(entra_host, ClientSecretCredential(CI, "wrong", authority=provider.authority,
                                                      scopes=[f"api://{API}/.default"], http_client=http)).list_services()
