"""Service-name rules against real storage, where requests interleave."""
import uuid

import pytest

from shared import services
from shared.auth import Principal
from shared.errors import Forbidden, NotFound

pytestmark = pytest.mark.azurite

ALICE, BOB = Principal("alice"), Principal("bob")
BODY = {"code": "y = 1", "runtimeType": "Python"}


def test_a_co_publisher_removed_while_his_publish_runs_gets_no_version(azurite, monkeypatch):
    name = "Race" + uuid.uuid4().hex[:6]
    services.publish(ALICE, name, "v1", {**BODY, "coPublishers": ["bob"]})
    checked, done = services._check_name, []

    def removed_right_after_the_check(user, n, **kwargs):
        out = checked(user, n, **kwargs)
        if user is BOB and not done:
            done.append(1)
            services.patch(ALICE, name, "v1", {"coPublishers": []})  # alice's PATCH lands meanwhile
        return out

    monkeypatch.setattr(services, "_check_name", removed_right_after_the_check)
    with pytest.raises(Forbidden, match="no longer lists you"):
        services.publish(BOB, name, "v2", BODY)
    with pytest.raises(NotFound):
        services.get(name, "v2")


def test_names_published_before_claims_existed_go_to_their_first_publisher_under_any_spelling(azurite, monkeypatch):
    name = "Legacy" + uuid.uuid4().hex[:6]
    # As stored before names were claimed: alice's version, no claim, no marker.
    services._rows.create(name, "1.0", {**BODY, "versionPublishedBy": "alice", "creationTime": "2020-01-01T00:00:00",
                                        "devVersion": False})
    try:
        services._names.delete(services._names.get("meta", services._MIGRATED))
    except NotFound:
        pass
    monkeypatch.setattr(services, "_migrated", __import__("threading").Event())
    with pytest.raises(Forbidden, match="belongs to alice"):
        services.publish(Principal("mallory"), name.lower(), "1.0", BODY)
    with pytest.raises(Forbidden):
        services.patch(Principal("mallory"), name, "1.0", {"code": "evil()"})
    assert services.publish(ALICE, name, "2.0", BODY) == "2.0"


def test_a_publish_that_fails_after_claiming_gives_the_name_back(azurite, monkeypatch):
    from shared.errors import Unavailable

    name = "Back" + uuid.uuid4().hex[:6]

    def storage_fails(*args):
        raise Unavailable("storage is not answering; try again shortly")

    monkeypatch.setattr(services, "_set_co_publishers", storage_fails)
    with pytest.raises(Unavailable):
        services.publish(ALICE, name, "v1", {**BODY, "coPublishers": ["carol"]})
    monkeypatch.undo()
    assert services.publish(BOB, name, "v1", BODY) == "v1"


def test_a_patch_that_races_a_delete_leaves_no_stored_copy(azurite, monkeypatch):
    from shared import workspaces
    from shared.storage._clients import container

    alice = ALICE
    name = "race" + uuid.uuid4().hex[:8]
    services.publish(alice, name, "v1", {"code": "y = 1", "runtimeType": "Python"})
    real_store = workspaces.store

    def store_then_lose_the_race(prefix, binding, data):
        stored = real_store(prefix, binding, data)
        services.delete(alice, name, "v1")  # another request deletes the version meanwhile
        return stored

    monkeypatch.setattr(workspaces, "store", store_then_lose_the_race)
    monkeypatch.setattr(services.snapshots, "content", lambda user, sid: workspaces.empty_zip())
    with pytest.raises(NotFound, match="deleted meanwhile"):
        services.patch(alice, name, "v1", {"snapshotId": "any"})
    assert list(container().list_blobs(name_starts_with=f"services/{name}/")) == []
