"""The rest of ML Server's service API: development versions, PATCH semantics, output files,
operationId, and what Azure Functions does not have."""
import base64

import pytest
import requests
from openapi_spec_validator import validate

from tests.e2e.helpers import publish

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]


def test_a_development_version_is_seen_only_by_its_author(base_url, alice, bob, admin):
    r = requests.post(f"{base_url}/services/devonly", json={"code": "y = 1", "runtimeType": "Python",
                      "outputParameterDefinitions": [{"name": "y", "type": "numeric"}]}, headers=alice)
    version = r.json()
    assert requests.get(f"{base_url}/services/devonly", headers=alice).json()[-1]["version"] == version
    for other in (bob, admin):
        assert requests.get(f"{base_url}/services/devonly", headers=other).json() == []
        assert requests.get(f"{base_url}/services/devonly/{version}", headers=other).status_code == 404
        assert requests.post(f"{base_url}/api/devonly/{version}", json={}, headers=other).status_code == 404
        assert version not in {s["version"] for s in requests.get(f"{base_url}/services", headers=other).json()}
    assert requests.post(f"{base_url}/api/devonly/{version}", json={}, headers=alice).json()["outputParameters"] == \
        {"y": 1.0}


def test_patch_keeps_absent_or_null_fields_and_clears_empty_ones(base_url, alice):
    name = publish(base_url, alice, "y = x", inputs=[{"name": "x", "type": "numeric"}],
                   outputs=[{"name": "y", "type": "numeric"}], description="d", initCode="z = 1",
                   outputFileNames=["a.txt"])
    r = requests.patch(f"{base_url}/services/{name}/v1", headers=alice, json={
        "description": None, "inputParameterDefinitions": None, "outputFileNames": None, "initCode": ""})
    assert r.status_code == 200
    ws = requests.get(f"{base_url}/services/{name}/v1", headers=alice).json()[0]
    assert ws["description"] == "d" and ws["outputFileNames"] == ["a.txt"] and ws["initCode"] == ""
    assert ws["inputParameterDefinitions"] == [{"name": "x", "type": "numeric"}]
    requests.patch(f"{base_url}/services/{name}/v1", headers=alice, json={
        "code": "y = 2", "inputParameterDefinitions": [], "outputFileNames": [], "description": ""})
    ws = requests.get(f"{base_url}/services/{name}/v1", headers=alice).json()[0]
    assert ws["inputParameterDefinitions"] == [] and ws["outputFileNames"] == [] and ws["description"] == ""
    assert requests.post(f"{base_url}/api/{name}/v1", json={}, headers=alice).json()["outputParameters"] == {"y": 2.0}
    doc = requests.get(f"{base_url}/api/{name}/v1/swagger.json", headers=alice).json()
    assert doc["definitions"]["InputParameters"]["properties"] == {}


def test_output_files_come_back_base64_and_null_when_not_written(base_url, alice):
    name = publish(base_url, alice, "open('report.txt', 'w').write('hello ' + who)",
                   inputs=[{"name": "who", "type": "character"}], outputFileNames=["report.txt", "plot.png"])
    out = requests.post(f"{base_url}/api/{name}/v1", json={"who": "iris"}, headers=alice).json()
    assert out["success"] is True and out["outputParameters"] == {}
    assert base64.b64decode(out["outputFiles"]["report.txt"]) == b"hello iris"
    assert out["outputFiles"]["plot.png"] is None
    doc = requests.get(f"{base_url}/api/{name}/v1/swagger.json", headers=alice).json()
    assert "outputFiles" in doc["definitions"]["WebServiceResult"]["properties"]


def test_a_service_without_output_files_has_no_output_files_field(base_url, alice):
    name = publish(base_url, alice, "y = 1", outputs=[{"name": "y", "type": "integer"}])
    assert "outputFiles" not in requests.post(f"{base_url}/api/{name}/v1", json={}, headers=alice).json()


def test_operation_id_and_description_follow_a_patch_into_the_swagger(base_url, alice):
    name = publish(base_url, alice, "y = 1", outputs=[{"name": "y", "type": "integer"}], operationId="score")
    doc = requests.get(f"{base_url}/api/{name}/v1/swagger.json", headers=alice).json()
    assert doc["paths"][f"/api/{name}/v1"]["post"]["operationId"] == "score"
    requests.patch(f"{base_url}/services/{name}/v1", json={"operationId": "predict", "description": "new"},
                   headers=alice)
    doc = requests.get(f"{base_url}/api/{name}/v1/swagger.json", headers=alice).json()
    validate(doc)
    assert doc["paths"][f"/api/{name}/v1"]["post"]["operationId"] == "predict" and doc["info"]["description"] == "new"


def test_every_web_service_field_is_present_with_empty_defaults(base_url, alice):
    r = requests.post(f"{base_url}/services/bare/v1", json={"code": "pass", "runtimeType": "Python"}, headers=alice)
    assert r.status_code == 201
    ws = requests.get(f"{base_url}/services/bare/v1", headers=alice).json()[0]
    assert ws == {"name": "bare", "version": "v1", "versionPublishedBy": "alice", "creationTime": ws["creationTime"],
                  "snapshotId": "", "runtimeType": "Python", "initCode": "", "code": "pass", "description": "",
                  "operationId": "consume", "inputParameterDefinitions": [], "outputParameterDefinitions": [],
                  "outputFileNames": [], "myPermissionOnService": "read/write", "coPublishers": []}
    out = requests.post(f"{base_url}/api/bare/v1", json={}, headers=alice).json()
    assert out == {"success": True, "errorMessage": "", "consoleOutput": "", "changedFiles": [],
                   "outputParameters": {}}


def test_the_core_swagger_is_served(base_url, alice):
    r = requests.get(f"{base_url}/swagger.json", headers=alice)
    assert r.status_code == 200
    validate(r.json())


@pytest.mark.parametrize("method, path", [("GET", "/computenodes"), ("PUT", "/computenodes"),
                                          ("POST", "/services/a/b/pool"), ("GET", "/services/a/b/pool")])
def test_ml_server_administration_endpoints_answer_501_saying_why(base_url, alice, method, path):
    r = requests.request(method, base_url + path, headers=alice)
    assert r.status_code == 501 and len(r.json()["message"]) > 20
