"""Issue 2's workflow, steps 1-8, as a data scientist and an application would drive it."""
from __future__ import annotations

import io
import zipfile

import pytest
import requests
from openapi_spec_validator import validate

from tests.constants import ADMIN_PASSWORD

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]


def test_iris_workflow_end_to_end(base_url):
    s = requests.Session()

    # 1. log in; status
    r = s.post(f"{base_url}/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 200
    tok = r.json()
    assert tok["token_type"] == "Bearer" and tok["expires_in"] == 3600
    assert {"access_token", "expires_on", "refresh_token"} <= set(tok)
    s.headers["Authorization"] = f"Bearer {tok['access_token']}"
    r = s.get(f"{base_url}/status")
    assert r.status_code == 200 and r.json()["statusCode"] == "pass"
    assert "components" in r.json()

    # 2. a Python session; R or no runtime is refused
    for body in ({"name": "R one", "runtimeType": "R"}, {"name": "no runtime"}):
        r = s.post(f"{base_url}/sessions", json=body)
        assert r.status_code == 400 and "Python" in r.json()["message"]
    r = s.post(f"{base_url}/sessions", json={"name": "Session 1", "runtimeType": "Python"})
    assert r.status_code == 201
    sid = r.json()["sessionId"]

    # 3. execute three blocks; the workspace persists between them
    def execute(code, **extra):
        r = s.post(f"{base_url}/sessions/{sid}/execute", json={"code": code, **extra})
        assert r.status_code == 200, r.text
        return r.json()

    out = execute("from sklearn import svm\nfrom sklearn import datasets")
    assert out["success"] is True, out
    out = execute("clf=svm.SVC()\niris=datasets.load_iris()\n"
                  "names={0:'I. setosa',1:'I. versicolor',2:'I. virginica'}\nprint('loaded', len(iris.data))")
    assert out["success"] is True and out["consoleOutput"] == "loaded 150\n"
    out = execute("clf.fit(iris.data, iris.target)\nresult=clf.predict([species_1])",
                  inputParameters=[{"name": "species_1", "value": [7, 3.2, 4.7, 1.4]}],
                  outputParameters=["result"])
    assert out["success"] is True, out
    assert out["outputParameters"] == [{"name": "result", "value": [1]}]
    assert out["errorMessage"] == "" and out["changedFiles"] == []
    failed = execute("raise ValueError('boom')")
    assert failed["success"] is False and "ValueError: boom" in failed["errorMessage"]

    # 4. snapshot it
    r = s.post(f"{base_url}/sessions/{sid}/snapshot", json={"name": "Iris Snapshot"})
    assert r.status_code == 201
    snap = r.json()["snapshotId"]
    listed = s.get(f"{base_url}/snapshots").json()
    assert [x["name"] for x in listed if x["id"] == snap] == ["Iris Snapshot"]
    r = s.get(f"{base_url}/snapshots/{snap}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert "objects/clf" in zipfile.ZipFile(io.BytesIO(r.content)).namelist()

    # 5. publish V1.0; a second publish of it is a conflict
    publish = {"code": "iris_species = [names[x] for x in clf.predict([flower_data])]",
               "inputParameterDefinitions": [{"name": "flower_data", "type": "vector"}],
               "outputParameterDefinitions": [{"name": "iris_species", "type": "vector"}],
               "runtimeType": "Python", "snapshotId": snap, "description": "Iris species"}
    r = s.post(f"{base_url}/services/Iris/V1.0", json=publish)
    assert r.status_code == 201 and r.json() == "V1.0"
    r = s.post(f"{base_url}/services/Iris/V1.0", json=publish)
    assert r.status_code == 409 and "PATCH" in r.json()["message"]

    # 6. consume over plain REST; its swagger
    r = s.post(f"{base_url}/api/Iris/V1.0", json={"flower_data": [7, 3.2, 4.7, 1.4]})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["success"] is True and res["outputParameters"] == {"iris_species": ["I. versicolor"]}
    assert {"errorMessage", "consoleOutput", "changedFiles"} <= set(res)
    r = s.post(f"{base_url}/api/Iris/V1.0", json={"flower_data": [5.1, 3.5, 1.4, 0.2]})
    assert r.json()["outputParameters"] == {"iris_species": ["I. setosa"]}
    r = s.post(f"{base_url}/api/Iris/V1.0", json={"flower_data": "not a vector"})
    assert r.status_code == 400 and "flower_data" in r.json()["message"]
    doc = s.get(f"{base_url}/api/Iris/V1.0/swagger.json").json()
    validate(doc)
    assert doc["swagger"] == "2.0" and "/api/Iris/V1.0" in doc["paths"]
    assert {"InputParameters", "WebServiceResult"} <= set(doc["definitions"])

    # 7. patch only the description; publish V2.0 returning a plain string; list
    before = s.get(f"{base_url}/services/Iris/V1.0").json()[0]
    r = s.patch(f"{base_url}/services/Iris/V1.0", json={"description": "Iris, patched"})
    assert r.status_code == 200
    after = s.get(f"{base_url}/services/Iris/V1.0").json()[0]
    assert after["description"] == "Iris, patched"
    assert {k: v for k, v in after.items() if k != "description"} == \
           {k: v for k, v in before.items() if k != "description"}
    v2 = {**publish, "code": publish["code"] + "[0]",
          "outputParameterDefinitions": [{"name": "iris_species", "type": "character"}]}
    assert s.post(f"{base_url}/services/Iris/V2.0", json=v2).status_code == 201
    r = s.post(f"{base_url}/api/Iris/V2.0", json={"flower_data": [7, 3.2, 4.7, 1.4]})
    assert r.json()["outputParameters"] == {"iris_species": "I. versicolor"}
    all_services = s.get(f"{base_url}/services").json()
    assert {("Iris", "V1.0"), ("Iris", "V2.0")} <= {(x["name"], x["version"]) for x in all_services}
    by_name = s.get(f"{base_url}/services/Iris").json()
    assert [x["version"] for x in by_name] == ["V1.0", "V2.0"]
    one = s.get(f"{base_url}/services/Iris/V2.0").json()
    assert len(one) == 1
    ws = one[0]
    assert ws["versionPublishedBy"] == "admin" and ws["runtimeType"] == "Python"
    assert ws["snapshotId"] == snap and ws["creationTime"]
    assert ws["inputParameterDefinitions"] == [{"name": "flower_data", "type": "vector"}]
    assert ws["outputParameterDefinitions"] == [{"name": "iris_species", "type": "character"}]

    # 8. delete V2.0; delete the snapshot and V1.0 keeps working
    assert s.delete(f"{base_url}/services/Iris/V2.0").status_code == 200
    r = s.post(f"{base_url}/api/Iris/V2.0", json={"flower_data": [7, 3.2, 4.7, 1.4]})
    assert r.status_code == 404
    assert s.delete(f"{base_url}/snapshots/{snap}").status_code == 200
    assert s.get(f"{base_url}/snapshots/{snap}").status_code == 404
    r = s.post(f"{base_url}/api/Iris/V1.0", json={"flower_data": [7, 3.2, 4.7, 1.4]})
    assert r.json()["outputParameters"] == {"iris_species": ["I. versicolor"]}
