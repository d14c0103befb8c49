import pytest

from shared import passwords
from shared.config import Settings
from shared.errors import ConfigError

GOOD = {"TOKEN_SIGNING_KEY": "k" * 40, "SNAPSHOT_SIGNING_KEY": "s" * 40,
        "STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true"}


def test_settings_are_read_and_cast_from_the_environment():
    s = Settings.from_env({**GOOD, "EXECUTION_TIMEOUT_SECONDS": "12.5", "MAX_WARM_SERVICES": "3"})
    assert s.execution_timeout_seconds == 12.5 and s.max_warm_services == 3


@pytest.mark.parametrize("env, fragment", [
    ({**GOOD, "TOKEN_SIGNING_KEY": "change-me"}, "TOKEN_SIGNING_KEY"),
    ({**GOOD, "SNAPSHOT_SIGNING_KEY": "short"}, "SNAPSHOT_SIGNING_KEY"),
    ({**GOOD, "STORAGE_CONNECTION_STRING": ""}, "STORAGE_CONNECTION_STRING"),
    ({**GOOD, "EXECUTION_TIMEOUT_SECONDS": "500"}, "EXECUTION_TIMEOUT_SECONDS"),
    ({**GOOD, "STORAGE_TIMEOUT_SECONDS": "230"}, "STORAGE_TIMEOUT_SECONDS"),
    ({**GOOD, "STORAGE_TIMEOUT_SECONDS": "0"}, "STORAGE_TIMEOUT_SECONDS"),
    ({**GOOD, "MAX_WARM_SERVICES": "many"}, "MAX_WARM_SERVICES"),
    ({**GOOD, "STORAGE_PREFIX": "o16n-x"}, "STORAGE_PREFIX"),
    ({**GOOD, "WORKER_TEMPLATES": "-1"}, "WORKER_TEMPLATES"),
])
def test_bad_settings_stop_start_up_naming_the_setting(env, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Settings.from_env(env)


def test_local_accounts_come_from_local_users_and_the_admin_password():
    hashed = passwords.hash_password("bob-password-12")
    s = Settings.from_env({**GOOD, "LOCAL_USERS": f"alice:alice-password;bob:{hashed}",
                           "LOCAL_ADMIN_PASSWORD": "admin-password"})
    assert s.accounts() == {"alice": "alice-password", "bob": hashed, "admin": "admin-password"}
    with pytest.raises(ConfigError, match="LOCAL_USERS"):
        Settings.from_env({**GOOD, "LOCAL_USERS": "alice"}).accounts()


@pytest.mark.parametrize("key,value", [("LOCAL_ADMIN_PASSWORD", "a"), ("LOCAL_ADMIN_PASSWORD", "elevenchars"),
                                       ("LOCAL_USERS", "alice:short")])
def test_passwords_shorter_than_12_characters_stop_the_start(key, value):
    with pytest.raises(ConfigError, match="at least 12 characters"):
        Settings.from_env({**GOOD, key: value})


def test_a_mangled_hash_stops_the_start():
    with pytest.raises(ConfigError, match="not a hash"):
        Settings.from_env({**GOOD, "LOCAL_ADMIN_PASSWORD": "scrypt$15$8$1$abc"})


def test_a_hash_with_other_costs_stops_the_start():
    # Its timing would tell real names from unknown ones (those are checked against a standard decoy).
    cheap = passwords.hash_password("admin-password").replace("scrypt$15$", "scrypt$14$")
    with pytest.raises(ConfigError, match="other scrypt parameters"):
        Settings.from_env({**GOOD, "LOCAL_ADMIN_PASSWORD": cheap})


def test_a_previous_key_must_be_a_real_secret_too():
    with pytest.raises(ConfigError, match="TOKEN_SIGNING_KEY_PREVIOUS"):
        Settings.from_env({**GOOD, "TOKEN_SIGNING_KEY_PREVIOUS": "short"})


def test_local_roles_default_to_contributor_and_admin_is_owner():
    users = {"LOCAL_USERS": "rita:rita-password;olga:olga-password;carl:carl-password"}
    s = Settings.from_env({**GOOD, **users, "LOCAL_ROLES": "rita:Reader;olga:Owner"})
    assert s.roles() == {"rita": "Reader", "olga": "Owner", "admin": "Owner"}
    with pytest.raises(ConfigError, match="LOCAL_ROLES"):
        Settings.from_env({**GOOD, **users, "LOCAL_ROLES": "rita:Boss"})


@pytest.mark.parametrize("roles", ["Rita:Reader", "rita :Reader", "nobody:Reader"])
def test_a_role_for_a_name_that_is_no_account_stops_the_start(roles):
    with pytest.raises(ConfigError, match="an account that is not in LOCAL_USERS"):
        Settings.from_env({**GOOD, "LOCAL_USERS": "rita:rita-password", "LOCAL_ROLES": roles})


def test_sample_settings_name_every_setting():
    import json
    from dataclasses import fields
    from pathlib import Path

    sample = json.loads((Path(__file__).parents[2] / "local.settings.sample.json").read_text())["Values"]
    assert {f.name.upper() for f in fields(Settings)} <= set(sample)


@pytest.mark.parametrize("setting", ["TOKEN_SIGNING_KEY", "SNAPSHOT_SIGNING_KEY", "LOCAL_ADMIN_PASSWORD",
                                     "TOKEN_SIGNING_KEY_PREVIOUS", "AAD_AUDIENCE"])
def test_a_key_vault_reference_app_service_did_not_resolve_is_refused(setting):
    """App Service hands an unresolved reference on as the value: predictable text (the vault's
    name follows the app's) that passed as a 32-character key and a 12-character password."""
    reference = "@Microsoft.KeyVault(SecretUri=https://kv-abc123.vault.azure.net/secrets/token-signing-key)"
    with pytest.raises(ConfigError, match=f"{setting} is a Key Vault or App Configuration reference") as caught:
        Settings.from_env({**GOOD, setting: reference})
    assert "kv-abc123" not in str(caught.value)
    with pytest.raises(ConfigError, match="did not resolve"):
        Settings.from_env({**GOOD, setting: " @microsoft.appconfiguration(Endpoint=https://x.azconfig.io; Key=k)"})
