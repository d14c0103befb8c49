"""The Bicep template parses and wires what the app reads (the Bicep CLI is not available here)."""
from pathlib import Path

import json

import pycep
import pytest

TEMPLATE = Path(__file__).parents[2] / "infra" / "main.bicep"


@pytest.fixture(scope="module")
def doc():
    return pycep.BicepParser().parse(file_path=TEMPLATE)


def test_the_app_runs_python_3_11_on_flex_consumption(doc):
    res = doc["resources"]
    assert res["plan"]["config"]["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    runtime = res["app"]["config"]["properties"]["functionAppConfig"]["runtime"]
    assert runtime == {"name": "python", "version": "3.11"}
    assert res["app"]["config"]["identity"]["type"] == "SystemAssigned"


def test_storage_is_reached_by_identity_only(doc):
    storage = doc["resources"]["storage"]["config"]["properties"]
    assert storage["allowSharedKeyAccess"] is False and storage["allowBlobPublicAccess"] is False
    assignments = json.dumps([r["config"] for r in doc["resources"].values()
                              if r["type"] == "Microsoft.Authorization/roleAssignments"])
    assert "blobDataOwner" in assignments and "tableDataContributor" in assignments
    assert "b7e6dc6d-f1e8-4753-8033-0f276bb0955b" in json.dumps(doc["variables"])


def test_every_setting_without_a_default_is_set(doc):
    settings = {s["name"] for s in doc["resources"]["app"]["config"]["properties"]["siteConfig"]["appSettings"]}
    assert {"TOKEN_SIGNING_KEY", "SNAPSHOT_SIGNING_KEY", "STORAGE_BLOB_ENDPOINT", "STORAGE_TABLE_ENDPOINT",
            "STORAGE_QUEUE_ENDPOINT", "BATCH_QUEUE",
            "AzureWebJobsStorage__accountName"} <= settings
    # Flex Consumption refuses these as app settings
    assert not settings & {"FUNCTIONS_WORKER_RUNTIME", "WEBSITE_RUN_FROM_PACKAGE", "FUNCTIONS_EXTENSION_VERSION"}
