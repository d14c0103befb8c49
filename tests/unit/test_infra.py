"""The Bicep template parses and wires what the app reads (the Bicep CLI is not available here)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pycep
import pytest
import yaml

from shared.config import Settings

ROOT = Path(__file__).parents[2]
INFRA = ROOT / "infra"
TEMPLATE = INFRA / "main.bicep"
APP_PRINCIPAL = "app.identity.principalId"
ROLE_IDS = {
    "blobDataContributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "tableDataContributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "queueDataContributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "keyVaultSecretsUser": "4633458b-17de-408a-b874-0445c86b69e6",
    "metricsPublisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}
SECRET_SETTINGS = {
    "TOKEN_SIGNING_KEY": "tokenKeySecret",
    "SNAPSHOT_SIGNING_KEY": "snapshotKeySecret",
    "TOKEN_SIGNING_KEY_PREVIOUS": "tokenKeyPreviousSecret",
    "SNAPSHOT_SIGNING_KEY_PREVIOUS": "snapshotKeyPreviousSecret",
    "LOCAL_ADMIN_PASSWORD": "adminPasswordSecret",
}
HOST_MB, TEMPLATE_MB, WORKER_MB = 300, 110, 160


def _text(expr) -> str:
    """A pycep expression back as Bicep-like text (enough to compare references)."""
    if isinstance(expr, str):
        return expr
    if isinstance(expr, dict) and "operator" in expr:
        op = expr["operator"]
        a, b = op["operands"].get("operand_1"), op["operands"].get("operand_2")
        if op["type"] == "property_accessor":
            return f"{_text(a)}.{_text(b)}"
        if op["type"] == "nested_resource_accessor":
            return f"{_text(a)}::{_text(b)}"
    return json.dumps(expr, sort_keys=True)


@pytest.fixture(scope="module")
def doc():
    return pycep.BicepParser().parse(file_path=TEMPLATE)


@pytest.fixture(scope="module")
def res(doc):
    return {name: r["config"].get("config", r["config"]) | {"_type": r["type"], "_if": r["config"].get("condition")}
            for name, r in doc["resources"].items()}


@pytest.fixture(scope="module")
def settings(res):
    return {s["name"]: s["value"] for s in res["app"]["properties"]["siteConfig"]["appSettings"]}


@pytest.mark.parametrize("path", sorted(INFRA.rglob("*.bicep")), ids=lambda p: p.name)
def test_every_bicep_file_parses(path):
    assert pycep.BicepParser().parse(file_path=path)["resources"]


def test_the_app_runs_python_3_11_on_flex_consumption(res):
    assert res["plan"]["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    config = res["app"]["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    assert res["app"]["identity"]["type"] == "SystemAssigned"
    assert res["app"]["tags"]  # union(tags, azd-service-name)
    assert "'azd-service-name': 'api'" in TEMPLATE.read_text()


def test_the_package_has_its_own_account(res):
    storage = res["app"]["properties"]["functionAppConfig"]["deployment"]["storage"]
    assert storage["type"] == "blobContainer" and storage["authentication"] == {"type": "SystemAssignedIdentity"}
    assert storage["value"].startswith("${packages.properties.primaryEndpoints.blob}")
    assert res["packages"]["name"] != res["storage"]["name"]


@pytest.mark.parametrize("account", ["storage", "packages"])
def test_storage_is_reached_by_identity_only(res, account):
    props = res[account]["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2" and props["supportsHttpsTrafficOnly"] is True


def test_the_site_refuses_plain_http_ftp_and_basic_credentials(res):
    assert res["app"]["properties"]["httpsOnly"] is True
    site = res["app"]["properties"]["siteConfig"]
    assert site["minTlsVersion"] == "1.2" and site["ftpsState"] == "Disabled"
    policies = {r["name"]: r for r in res.values() if r["_type"] == "Microsoft.Web/sites/basicPublishingCredentialsPolicies"}
    assert set(policies) == {"ftp", "scm"}
    assert all(p["parent"] == "app" and p["properties"] == {"allow": False} and p["_if"] is None
               for p in policies.values())


def test_the_vault_uses_rbac_and_cannot_be_purged(res):
    vault = res["vault"]
    assert vault["_type"] == "Microsoft.KeyVault/vaults"
    props = vault["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enableSoftDelete"] is True and props["enablePurgeProtection"] is True
    assert "accessPolicies" not in props


def test_secrets_are_read_as_key_vault_references(doc, res, settings):
    assert doc["variables"]["kvRef"]["value"] == "@Microsoft.KeyVault(SecretUri="
    for setting, secret in SECRET_SETTINGS.items():
        value = settings[setting]
        if isinstance(value, dict):  # optional: '' when its parameter is empty
            operands = value["operator"]["operands"]
            assert operands["true_value"] == ""
            value = operands["false_value"]
        assert value == f"${{kvRef}}${{{secret}.properties.secretUri}})", setting
        assert res[secret]["_type"] == "Microsoft.KeyVault/vaults/secrets" and res[secret]["parent"] == "vault"
        param = res[secret]["properties"]["value"]
        assert {"type": "secure"} in doc["parameters"][param]["decorators"], param
    # a secret parameter reaches the site and the outputs only as "is it empty?"
    exposed = json.dumps([settings, doc["outputs"]])
    for param in ("tokenSigningKey", "snapshotSigningKey", "tokenSigningKeyPrevious", "snapshotSigningKeyPrevious",
                  "localAdminPassword"):
        assert exposed.count(f'"{param}"') == exposed.count(f'"item_to_test": "{param}"'), param


def test_the_signing_keys_are_generated_long_enough(doc):
    for name in ("tokenSigningKey", "snapshotSigningKey"):
        decorators = doc["parameters"][name]["decorators"]
        assert {"type": "secure"} in decorators and {"type": "min_length", "argument": 32} in decorators
        azd = next(d["argument"]["azd"] for d in decorators if d["type"] == "metadata")
        assert azd["type"] == "generate" and azd["config"]["length"] >= 32


def test_the_identity_has_exactly_the_listed_roles(res):
    granted = set()
    for name, r in res.items():
        if r["_type"] != "Microsoft.Authorization/roleAssignments":
            continue
        props = r["properties"]
        role = _text(props["roleDefinitionId"]["function"]["parameters"]["resource_name_1"])
        if _text(props["principalId"]) == APP_PRINCIPAL:
            assert props["principalType"] == "ServicePrincipal" and r["_if"] is None, name
            granted.add((_text(r["scope"]), role))
        else:  # the deployer may read the admin password, nothing else (not the signing keys)
            assert (_text(r["scope"]), role, props["principalId"]) == (
                "adminPasswordSecret", "roles.keyVaultSecretsUser", "deployerPrincipalId"), name
    assert granted == {
        ("storage", "roles.blobDataContributor"),
        ("storage", "roles.tableDataContributor"),
        ("storage", "roles.queueDataContributor"),
        ("packages::blobs::deployments", "roles.blobDataContributor"),
        ("vault", "roles.keyVaultSecretsUser"),
        ("insights", "roles.metricsPublisher"),
    }


def test_role_ids_are_the_built_in_ones(doc):
    assert doc["variables"]["roles"]["value"] == ROLE_IDS


def _env(settings: dict, pools: dict, variables: dict) -> dict[str, str]:
    """The app settings as the app would see them in Azure (references resolved to plausible values)."""
    env = {}
    for name, value in settings.items():
        if name in SECRET_SETTINGS:
            env[name] = "" if isinstance(value, dict) else "k" * 48  # optional ones unset
        elif isinstance(value, dict) and value.get("function", {}).get("type") == "string":
            env[name] = str(pools[_text(value["function"]["parameters"]["value_to_convert"]).split(".")[1]])
        elif isinstance(value, str) and value.startswith("${storage.properties.primaryEndpoints."):
            env[name] = "https://stexample.%s.core.windows.net/" % value.split(".")[-1].rstrip("}")
        elif isinstance(value, str) and value in variables:
            env[name] = variables[value]["value"]
        elif isinstance(value, str) and "${" not in value:
            env[name] = value
        else:
            env[name] = "x"  # resource names, telemetry, Entra parameters
    return env


@pytest.mark.parametrize("size", [2048, 4096])
def test_every_setting_the_app_requires_is_set(doc, settings, size):
    pools = doc["variables"]["poolsBySize"]["value"][f"'{size}'"]
    env = _env(settings, pools, doc["variables"])
    env["AAD_TENANT_ID"] = env["AAD_AUDIENCE"] = ""  # empty Entra: local accounts only
    configured = Settings.from_env(env)  # raises when something required is missing or invalid
    assert configured.aad_default_role == "none" and configured.sandbox == "strict"
    assert configured.queue_name == env["BATCH_QUEUE"] == "o16n-batch"
    assert {"AzureWebJobsStorage__accountName", "STORAGE_QUEUE_ENDPOINT", "BATCH_QUEUE",
            "APPLICATIONINSIGHTS_CONNECTION_STRING", "EXECUTION_TIMEOUT_SECONDS"} <= set(settings)
    # Flex Consumption refuses these as app settings
    assert not set(settings) & {"FUNCTIONS_WORKER_RUNTIME", "WEBSITE_RUN_FROM_PACKAGE", "FUNCTIONS_EXTENSION_VERSION"}


@pytest.mark.parametrize("size", [2048, 4096])
def test_worker_pools_fit_the_instance(doc, size):
    assert {"type": "allowed", "argument": [2048, 4096]} in doc["parameters"]["instanceMemoryMB"]["decorators"]
    p = doc["variables"]["poolsBySize"]["value"][f"'{size}'"]
    used = (HOST_MB + p["workerTemplates"] * TEMPLATE_MB + p["warmServicesMB"]
            + (p["maxWarmSessions"] + p["spareWorkers"]) * WORKER_MB)
    assert used <= size * 0.85, used  # room for a service worker passing the budget during a call
    assert p["warmServicesMB"] >= p["maxWarmServices"] * WORKER_MB
    assert p["workerMemoryMB"] <= size // 2
    assert 1 <= p["httpConcurrency"] <= 16
    # a thread per HTTP request taken at once, and per queue message an instance runs (host.json)
    queues = json.loads((INFRA.parent / "host.json").read_text())["extensions"]["queues"]
    assert p["pythonThreads"] >= p["httpConcurrency"] + queues["batchSize"] + queues["newBatchThreshold"]


def test_the_parameters_file_holds_no_secret(doc):
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(params) <= set(doc["parameters"])
    for name, entry in params.items():
        value = entry["value"]
        assert re.fullmatch(r"(\$\{[A-Z_]+=?[0-9]*\}|\$\(secretOrRandomPassword \$\{AZURE_KEY_VAULT_NAME\} [a-z-]+\))",
                            value), (name, value)
    assert params["aadTenantId"]["value"] == "${AAD_TENANT_ID=}" and params["aadAudience"]["value"] == "${AAD_AUDIENCE=}"
    assert params["localAdminPassword"]["value"].startswith("$(secretOrRandomPassword")
    # azd generates the signing keys itself (metadata in main.bicep): never in this file
    assert not {"tokenSigningKey", "snapshotSigningKey"} & set(params)
    assert {o for o in doc["outputs"]} >= {"AZURE_KEY_VAULT_NAME", "API_URL"}


def test_azure_yaml_names_the_service_and_the_infra_folder():
    spec = yaml.safe_load((ROOT / "azure.yaml").read_text())
    assert spec["infra"]["path"] == "infra" and spec["infra"].get("provider", "bicep") == "bicep"
    assert spec["services"] == {"api": {"project": ".", "language": "python", "host": "function"}}
