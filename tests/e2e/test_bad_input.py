"""Input that once reached a 500 or a restarted worker gets a 4xx naming the problem."""
from urllib.parse import quote, unquote

import pytest
import requests

from tests.e2e.helpers import execute, new_session, publish

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]
JSON = {"Content-Type": "application/json"}


def test_a_number_beyond_a_float_is_400_for_execute_and_consume(base_url, alice):
    sid = new_session(base_url, alice)
    raw = b'{"code": "y = x", "inputParameters": [{"name": "x", "value": 1e999}], "outputParameters": ["y"]}'
    r = requests.post(f"{base_url}/sessions/{sid}/execute", data=raw, headers={**alice, **JSON})
    assert r.status_code == 400 and "1e999" in r.json()["message"]
    name = publish(base_url, alice, "z = x", inputs=[{"name": "x", "type": "numeric"}],
                   outputs=[{"name": "z", "type": "numeric"}])
    r = requests.post(f"{base_url}/api/{name}/v1", data=b'{"x": 1e999}', headers={**alice, **JSON})
    assert r.status_code == 400 and "too large" in r.json()["message"]


def test_an_input_parameter_without_a_value_is_400_and_the_session_goes_on(base_url, alice):
    sid = new_session(base_url, alice)
    execute(base_url, alice, sid, "kept = 7")
    r = requests.post(f"{base_url}/sessions/{sid}/execute", json={"code": "y = x", "inputParameters": [{"name": "x"}]},
                      headers=alice)
    assert r.status_code == 400 and "'x' has no 'value'" in r.json()["message"]
    assert execute(base_url, alice, sid, "", outputParameters=["kept"])["outputParameters"] == [
        {"name": "kept", "value": 7}]


def test_any_object_name_downloads_with_an_encoded_header(base_url, alice):
    sid = new_session(base_url, alice)
    assert execute(base_url, alice, sid, "Ωmega = [1, 2]")["success"]
    r = requests.get(f"{base_url}/sessions/{sid}/workspace/{quote('Ωmega')}", headers=alice)
    assert r.status_code == 200 and r.content
    header = r.headers["Content-Disposition"]
    assert unquote(header.split("filename*=UTF-8''")[1]) == "Ωmega.dill"


@pytest.mark.parametrize("headers", [{"Content-Type": "text/plain"}, {"Content-Type": "text/plain;charset=UTF-8"},
                                     {"Content-Type": "application/x-www-form-urlencoded"}, {}])
def test_json_bodies_a_page_on_another_site_could_send_without_a_preflight_are_refused(base_url, headers):
    from tests.constants import ADMIN_PASSWORD

    body = f'{{"username": "admin", "password": "{ADMIN_PASSWORD}"}}'.encode()
    r = requests.post(f"{base_url}/login", data=body, headers=headers)
    assert r.status_code == 415 and "application/json" in r.json()["message"]


def test_a_malformed_idempotency_key_is_400_naming_the_header(base_url, alice):
    body = {"code": "y = 1", "runtimeType": "Python"}
    for key in ("a b", "x" * 201, "", "é"):
        r = requests.post(f"{base_url}/services/idem{len(key)}/v1", json=body,
                          headers={**alice, "Idempotency-Key": key.encode("utf-8").decode("latin-1")})
        assert r.status_code == 400 and "Idempotency-Key" in r.json()["message"], (key, r.text)
    sid = new_session(base_url, alice)
    r = requests.post(f"{base_url}/sessions/{sid}/snapshot", json={}, headers={**alice, "Idempotency-Key": "a b"})
    assert r.status_code == 400
    name = publish(base_url, alice, "y = 1")
    assert requests.post(f"{base_url}/services/{name}/v2", json=body,
                         headers={**alice, "Idempotency-Key": "K-" + "x" * 198}).status_code == 201


def test_a_name_that_cannot_exist_is_400_when_listing_its_versions(base_url, alice):
    r = requests.get(f"{base_url}/services/{quote('a b')}", headers=alice)
    assert r.status_code == 400 and "service name 'a b' is not allowed" in r.json()["message"]
    assert requests.get(f"{base_url}/services/nosuchname", headers=alice).json() == []


@pytest.mark.parametrize("field, value", [("outputFileNames", {}), ("outputFileNames", ""),
                                          ("inputParameterDefinitions", {}), ("snapshotId", [])])
def test_a_service_field_of_another_type_is_400_not_taken_as_empty(base_url, alice, field, value):
    name = publish(base_url, alice, "y = 1")
    r = requests.patch(f"{base_url}/services/{name}/v1", json={field: value}, headers=alice)
    assert r.status_code == 400 and field in r.json()["message"], r.text


@pytest.mark.parametrize("field, value", [("inputParameters", {}), ("inputParameters", ""),
                                          ("outputParameters", {}), ("outputParameters", 0)])
def test_an_execute_list_of_another_type_is_400_not_taken_as_empty(base_url, alice, field, value):
    sid = new_session(base_url, alice)
    r = requests.post(f"{base_url}/sessions/{sid}/execute", json={"code": "", field: value}, headers=alice)
    assert r.status_code == 400 and field in r.json()["message"], r.text


def test_an_upload_takes_the_file_and_nothing_else(base_url, alice):
    sid = new_session(base_url, alice)
    r = requests.post(f"{base_url}/sessions/{sid}/files", files={"file": ("a.txt", b"1")}, data={"note": "x"},
                      headers=alice)
    assert r.status_code == 400 and "'note'" in r.json()["message"]
    r = requests.post(f"{base_url}/sessions/{sid}/files", files={"file": ("a.txt", b"1"), "more": ("b.txt", b"2")},
                      headers=alice)
    assert r.status_code == 400 and "'more'" in r.json()["message"]
    assert requests.get(f"{base_url}/sessions/{sid}/files", headers=alice).json() == []


def test_code_is_counted_in_characters_of_any_kind_and_white_space_alone_is_no_code(base_url, alice):
    """Lengths are counted as the swagger's maxLength counts them; the longest code of
    4-byte characters still fits a Table property."""
    body = {"runtimeType": "Python"}
    for blank in (" \n\t", "\x1f\u3000"):
        r = requests.post(f"{base_url}/services/blank/v1", json={**body, "code": blank}, headers=alice)
        assert r.status_code == 400 and "'code' is required" in r.json()["message"]
    r = requests.post(f"{base_url}/services/long/v1", json={**body, "code": "y" * 16001}, headers=alice)
    assert r.status_code == 400 and "longer than 16000 characters" in r.json()["message"]
    name = publish(base_url, alice, "#" + "\U0001F600" * 15999)
    assert requests.get(f"{base_url}/services/{name}/v1", headers=alice).json()[0]["code"].count("\U0001F600") == 15999
