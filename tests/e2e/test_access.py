"""Who may see and change what, over real HTTP."""
import uuid

import pytest
import requests

from tests.e2e.helpers import execute, new_session, publish, snapshot

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]

ANY_ID = str(uuid.uuid4())
PROTECTED = [("GET", "/status"), ("POST", "/sessions"), ("GET", "/sessions"), ("DELETE", f"/sessions/{ANY_ID}"),
             ("POST", f"/sessions/{ANY_ID}/execute"), ("POST", f"/sessions/{ANY_ID}/snapshot"),
             ("GET", "/snapshots"), ("GET", f"/snapshots/{ANY_ID}"), ("DELETE", f"/snapshots/{ANY_ID}"),
             ("GET", "/services"), ("GET", "/services/x"), ("POST", "/services/x"), ("POST", "/services/x/1"),
             ("PATCH", "/services/x/1"), ("GET", "/services/x/1"), ("DELETE", "/services/x/1"),
             ("POST", "/api/x/1"), ("GET", "/api/x/1/swagger.json")]


@pytest.mark.parametrize("method, path", PROTECTED)
def test_every_endpoint_but_login_needs_a_token(base_url, method, path):
    r = requests.request(method, base_url + path, json={})
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_wrong_method_is_404_as_on_azure(base_url, alice):
    assert requests.get(f"{base_url}/login").status_code == 404


def test_routes_match_case_insensitively_and_keep_name_case(base_url, alice):
    name = publish(base_url, alice, "y = 1", outputs=[{"name": "y", "type": "numeric"}])
    r = requests.get(f"{base_url}/SERVICES/{name}/v1", headers=alice)
    assert r.status_code == 200 and r.json()[0]["name"] == name
    assert requests.get(f"{base_url}/services/{name.upper()}/v1", headers=alice).status_code == 404


def test_sessions_and_snapshots_are_invisible_to_other_users(base_url, alice, bob):
    sid = new_session(base_url, alice)
    execute(base_url, alice, sid, "secret = 42")
    snap = snapshot(base_url, alice, sid)

    for method, path in [("POST", f"/sessions/{sid}/execute"), ("POST", f"/sessions/{sid}/snapshot"),
                         ("GET", f"/sessions/{sid}/workspace"), ("GET", f"/sessions/{sid}/workspace/secret"),
                         ("DELETE", f"/sessions/{sid}/workspace/secret"), ("GET", f"/sessions/{sid}/files"),
                         ("GET", f"/sessions/{sid}/history"), ("GET", f"/sessions/{sid}/console-output"),
                         ("POST", f"/sessions/{sid}/cancel"), ("DELETE", f"/sessions/{sid}/force"),
                         ("DELETE", f"/sessions/{sid}"), ("GET", f"/snapshots/{snap}"),
                         ("DELETE", f"/snapshots/{snap}")]:
        r = requests.request(method, base_url + path, json={"code": "print(secret)"}, headers=bob)
        missing = requests.request(method, base_url + path.replace(sid, ANY_ID).replace(snap, ANY_ID),
                                   json={"code": "1"}, headers=bob)
        assert r.status_code == missing.status_code == 404, (method, path)
        assert r.json()["exceptionType"] == missing.json()["exceptionType"]
    assert sid not in {s["id"] for s in requests.get(f"{base_url}/sessions", headers=bob).json()}
    assert snap not in {s["id"] for s in requests.get(f"{base_url}/snapshots", headers=bob).json()}
    r = requests.post(f"{base_url}/services/stolen/v1", headers=bob,
                      json={"code": "x = secret", "runtimeType": "Python", "snapshotId": snap})
    assert r.status_code == 404

    # alice still has both, untouched
    assert execute(base_url, alice, sid, "", outputParameters=["secret"])["outputParameters"] == \
        [{"name": "secret", "value": 42}]
    assert requests.get(f"{base_url}/snapshots/{snap}", headers=alice).status_code == 200


def test_only_the_publisher_or_admin_may_patch_or_delete_a_service(base_url, alice, bob, admin):
    name = publish(base_url, alice, "y = 1", outputs=[{"name": "y", "type": "numeric"}], description="alice's")
    for method in ("PATCH", "DELETE"):
        r = requests.request(method, f"{base_url}/services/{name}/v1", json={"description": "bob's"}, headers=bob)
        assert r.status_code == 403
    ws = requests.get(f"{base_url}/services/{name}/v1", headers=bob).json()[0]
    assert ws["description"] == "alice's" and ws["code"] == "" and ws["myPermissionOnService"] == "read only"
    assert requests.post(f"{base_url}/api/{name}/v1", json={}, headers=bob).json()["outputParameters"] == {"y": 1.0}
    assert requests.patch(f"{base_url}/services/{name}/v1", json={"description": "admin's"},
                          headers=admin).status_code == 200
    assert requests.delete(f"{base_url}/services/{name}/v1", headers=alice).status_code == 200
    assert requests.get(f"{base_url}/services/{name}/v1", headers=alice).status_code == 404
    assert requests.delete(f"{base_url}/services/{name}/v1", headers=alice).status_code == 404


def test_a_reader_lists_and_consumes_but_cannot_publish_change_or_delete(base_url, alice, rita):
    name = publish(base_url, alice, "y = 1", outputs=[{"name": "y", "type": "numeric"}])
    assert requests.get(f"{base_url}/services/{name}", headers=rita).status_code == 200
    assert requests.post(f"{base_url}/api/{name}/v1", json={}, headers=rita).json()["outputParameters"] == {"y": 1.0}
    r = requests.post(f"{base_url}/services/ritas/v1", json={"code": "y = 1", "runtimeType": "Python"}, headers=rita)
    assert r.status_code == 403 and "Reader" in r.json()["message"]
    for method in ("PATCH", "DELETE"):
        assert requests.request(method, f"{base_url}/services/{name}/v1", json={}, headers=rita).status_code == 403
    ws = requests.get(f"{base_url}/services/{name}/v1", headers=rita).json()[0]
    assert ws["myPermissionOnService"] == "read only" and ws["code"] == ""
    # unlike ML Server, sessions (which run arbitrary code) are not for readers unless SESSION_ROLES says so
    r = requests.post(f"{base_url}/sessions", json={"runtimeType": "Python"}, headers=rita)
    assert r.status_code == 403 and "SESSION_ROLES" in r.json()["message"]
    assert requests.get(f"{base_url}/sessions", headers=rita).status_code == 403
