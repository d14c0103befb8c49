"""What a session stores stays consistent: nothing is left behind when a save or a create fails,
and what is kept fits Table storage however the text is made."""
import pytest
import requests

from tests.e2e.helpers import execute, new_session

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]


def _blobs(prefix: str) -> set[str]:
    from shared.storage._clients import container

    return {b.name for b in container().list_blobs(name_starts_with=prefix)}


def test_a_name_too_long_is_refused_before_anything_is_stored(host, alice):
    sid = new_session(host.url, alice)
    execute(host.url, alice, sid, "import os\nblob = os.urandom(100_000)")
    before = _blobs("snapshots/")
    r = requests.post(f"{host.url}/sessions/{sid}/snapshot", json={"name": "n" * 40_000}, headers=alice)
    assert r.status_code == 400 and "'name'" in r.json()["message"]
    assert _blobs("snapshots/") == before
    r = requests.post(f"{host.url}/sessions", json={"runtimeType": "Python", "name": "\U0001F600" * 20_000},
                      headers=alice)
    assert r.status_code == 400
