"""The edge: strict JSON, content types, download headers, the caller's address."""
import json
from urllib.parse import unquote

import azure.functions as func
import pytest

from shared import http
from shared.errors import BadRequest, UnsupportedMediaType


def request(body=b'{"a": 1}', headers=None):
    return func.HttpRequest("POST", "/x", body=body, headers=headers or {})


@pytest.mark.parametrize("raw", [b'{"x": 1e999}', b'{"x": -1e999}', b'{"x": [1, 2e400]}'])
def test_numbers_beyond_a_float_are_refused_by_name(raw):
    with pytest.raises(BadRequest, match="too large"):
        http.parse_json(raw)


@pytest.mark.parametrize("ctype", ["application/json", "application/json; charset=utf-8", "Application/JSON",
                                   "application/problem+json", "application/vnd.api+json"])
def test_json_content_types_are_accepted(ctype):
    assert http.read_json(request(headers={"Content-Type": ctype})) == {"a": 1}


@pytest.mark.parametrize("ctype", [None, "text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", "text/json", "text/x+json"])
def test_bodies_a_cross_site_form_could_send_are_refused(ctype):
    with pytest.raises(UnsupportedMediaType, match="application/json"):
        http.read_json(request(headers={"Content-Type": ctype} if ctype else {}))


@pytest.mark.parametrize("name", ["Ωmega", 'a"b', "x\r\nSet-Cookie: y=1", "naïve résumé.csv", "plain.txt"])
def test_download_names_are_encoded_so_any_name_makes_a_valid_header(name):
    header = http.content_disposition(name)
    assert header.isascii() and "\r" not in header and "\n" not in header
    star = header.split("filename*=", 1)[1]
    assert star.startswith("UTF-8''") and unquote(star[len("UTF-8''"):]) == name  # RFC 8187 gives the exact name
    resp = http.bytes_response(b"x", mimetype="application/octet-stream", filename=name)
    assert resp.headers["Content-Disposition"] == header


@pytest.mark.parametrize("header, address", [
    ("203.0.113.7", "203.0.113.7"), ("203.0.113.7:50312", "203.0.113.7"),
    ("1.2.3.4, 203.0.113.7", "203.0.113.7"),  # what the client sent comes first; the front end appends
    ("[2001:db8::1]:443", "2001:db8::/64"), ("2001:db8::1", "2001:db8::/64"), ("2001:db8::ffff:1", "2001:db8::/64"),
    ("::ffff:203.0.113.7", "203.0.113.7"), ("nonsense", "unknown"), ("", "unknown"),
])
def test_the_callers_address_is_the_last_forwarded_entry(header, address):
    assert http.client_address(request(headers={"X-Forwarded-For": header})) == address


def test_behind_front_door_a_caller_without_its_header_counts_by_the_forwarded_entry(monkeypatch):
    monkeypatch.setenv("CLIENT_ADDRESS_HEADER", "X-Azure-ClientIP")
    from tests.conftest import reset_caches
    reset_caches()
    try:
        both = {"X-Azure-ClientIP": "198.51.100.9", "X-Forwarded-For": "203.0.113.7"}
        assert http.client_address(request(headers=both)) == "198.51.100.9"
        # reached the app around Front Door: not one "unknown" address shared by every such caller
        assert http.client_address(request(headers={"X-Forwarded-For": "1.2.3.4, 203.0.113.7"})) == "203.0.113.7"
    finally:
        monkeypatch.undo()
        reset_caches()


def test_errors_never_carry_a_traceback():
    resp = http.error_response(BadRequest("nope"))
    body = json.loads(resp.get_body())
    assert body["message"] == "nope" and set(body) == {"message", "exceptionType", "error", "correlationId"}


@pytest.mark.parametrize("raw", [rb'{"a": "\ud800"}', rb'{"\udfff": 1}', rb'{"a": ["x", {"b": "\ud800\ud800"}]}',
                                 rb'{"password": "\udfff\ud800xxxxxxxxxx"}'])
def test_lone_surrogates_are_refused(raw):
    with pytest.raises(BadRequest, match="surrogate"):
        http.parse_json(raw)


def test_escaped_surrogate_pairs_are_text():
    assert http.parse_json(rb'{"a": "\ud83d\ude00"}') == {"a": "\U0001F600"}
