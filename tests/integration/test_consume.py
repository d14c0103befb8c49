"""Consume in process against Azurite: the warm worker and the definition cache."""
import time

import pytest

from shared import consume, services, sessions, snapshots
from shared.auth import Principal
from shared.config import get_settings
from shared.storage import blobs

pytestmark = pytest.mark.azurite
alice = Principal("alice")


@pytest.fixture
def published(azurite):
    sid = sessions.create(alice, {"runtimeType": "Python"})["sessionId"]
    sessions.execute(alice, sid, {"code": "offset = 10"})
    snap = snapshots.create(alice, sid, {})["snapshotId"]
    name = f"warm{int(time.time() * 1000)}"
    services.publish(alice, name, "v1", {
        "code": "y = x + offset", "runtimeType": "Python", "snapshotId": snap,
        "inputParameterDefinitions": [{"name": "x", "type": "numeric"}],
        "outputParameterDefinitions": [{"name": "y", "type": "numeric"}]})
    return name


def test_a_warm_service_does_not_read_its_snapshot_again(published):
    assert consume.consume(alice, published, "v1", {"x": 1})["outputParameters"] == {"y": 11.0}
    # Remove the service's stored workspace: only a warm worker can still answer.
    blobs.delete(services.get(published, "v1")["stateBlob"])
    assert consume.consume(alice, published, "v1", {"x": 2})["outputParameters"] == {"y": 12.0}


def test_a_change_made_by_another_instance_is_seen_after_the_cache_ttl(published):
    assert consume.consume(alice, published, "v1", {"x": 1})["outputParameters"] == {"y": 11.0}
    # Write the entity directly, as another instance would, without touching this one's cache.
    row = services.get(published, "v1")
    services._rows.replace({**row, "code": "y = x + offset * 2"})
    time.sleep(get_settings().service_cache_ttl_seconds + 0.2)
    assert consume.consume(alice, published, "v1", {"x": 1})["outputParameters"] == {"y": 21.0}


def test_a_tampered_service_workspace_is_refused_before_a_worker_loads_it(published):
    from shared.errors import IntegrityFailed

    row = services.get(published, "v1")
    blobs.delete(row["stateBlob"])
    blobs.put(row["stateBlob"], b"PK\x05\x06" + b"\x00" * 18)  # an empty zip, not the sealed bytes
    services.forget(published, "v1")
    with pytest.raises(IntegrityFailed):
        consume.consume(alice, published, "v1", {"x": 1})


def test_an_execute_whose_save_fails_is_503_and_leaves_the_last_saved_workspace(azurite, monkeypatch):
    from shared import workspaces
    from shared.errors import Unavailable

    sid = sessions.create(alice, {"runtimeType": "Python"})["sessionId"]
    sessions.execute(alice, sid, {"code": "items = [1]"})
    real_store = workspaces.store_changes

    def failing_store(*args, **kwargs):
        raise Unavailable("storage is not answering; try again shortly")

    monkeypatch.setattr(workspaces, "store_changes", failing_store)
    with pytest.raises(Unavailable):
        sessions.execute(alice, sid, {"code": "items.append(2)"})
    monkeypatch.setattr(workspaces, "store_changes", real_store)
    out = sessions.execute(alice, sid, {"code": "", "outputParameters": ["items"]})
    assert out["outputParameters"] == [{"name": "items", "value": [1]}]


def test_a_workspace_replaced_by_another_instance_is_followed_not_404(published):
    assert consume.consume(alice, published, "v1", {"x": 1})["outputParameters"] == {"y": 11.0}
    services.forget(published, "v1")
    stale = services.cached(published, "v1")  # this instance's view
    # Another instance patches in a new snapshot and deletes the old workspace blob.
    sid = sessions.create(alice, {"runtimeType": "Python"})["sessionId"]
    sessions.execute(alice, sid, {"code": "offset = 1000"})
    snap = snapshots.create(alice, sid, {})["snapshotId"]
    services.patch(alice, published, "v1", {"snapshotId": snap})
    services._cache[(published, "v1")] = (time.monotonic(), stale)  # still within its TTL here
    assert consume.consume(alice, published, "v1", {"x": 1})["outputParameters"] == {"y": 1001.0}


def test_a_cached_consume_sends_no_request_to_storage(published, monkeypatch):
    from shared.auth import authenticate, login
    from shared.storage import _clients
    from tests.conftest import reset_caches
    from tests.constants import USERS

    # TTLs longer than this test, so a slow machine cannot make a refresh fall inside the count.
    monkeypatch.setenv("TOKEN_STATE_TTL_SECONDS", "600")
    monkeypatch.setenv("SERVICE_CACHE_TTL_SECONDS", "600")
    reset_caches()

    bearer = f"Bearer {login({'username': 'alice', 'password': USERS['alice']}, '127.0.0.1')['access_token']}"
    user = authenticate(bearer)
    assert consume.consume(user, published, "v1", {"x": 1})["outputParameters"] == {"y": 11.0}
    before = _clients.requests_sent
    assert before > 0  # the counter sees storage traffic at all
    for x in range(20):  # within the caches' TTLs: token, family, account, definition, warm worker
        assert consume.consume(authenticate(bearer), published, "v1", {"x": x})["outputParameters"] == {"y": x + 10.0}
    assert _clients.requests_sent == before
    monkeypatch.undo()
    reset_caches()


def test_status_counts_warm_hits_and_loads(published):
    from shared import status
    from shared.sandbox import pool

    before = dict(pool.services.counts)
    consume.consume(alice, published, "v1", {"x": 1})
    consume.consume(alice, published, "v1", {"x": 2})
    counts = status.status()["components"]["backends"]["details"]["serviceWorkers"]
    assert counts["loads"] == before["loads"] + 1 and counts["hits"] == before["hits"] + 1


def test_warm_services_stay_within_their_memory_budget_least_recently_used_first(azurite, monkeypatch):
    from shared.sandbox import pool
    from tests.conftest import reset_caches

    names = []
    for i in range(3):
        name = f"big{i}{int(time.time() * 1000)}"
        services.publish(alice, name, "v1", {"code": "y = len(blob)", "runtimeType": "Python",
                                             "initCode": "blob = b'x' * (120 * 2**20)",
                                             "outputParameterDefinitions": [{"name": "y", "type": "integer"}]})
        names.append(name)
    pool.services.close_all()
    assert consume.consume(alice, names[0], "v1", {})["outputParameters"] == {"y": 120 * 2**20}
    one = pool.services._workers[((names[0], "v1"), 0)].resident
    assert one > 120 * 2**20  # the worker holds what its initCode made
    # Room for one such worker, never two: each holds its 120 MB itself (the rest of its PSS, the
    # shared libraries, shrinks as more processes share them).
    monkeypatch.setenv("WARM_SERVICES_MB", "200")
    reset_caches()
    before = pool.services.counts["evictions"]
    for name in names[1:] + names[:1]:
        assert consume.consume(alice, name, "v1", {})["success"]
        # The one before it retires (at once, or at the watcher's next pass if the watcher was
        # looking at it just then).
        deadline = time.monotonic() + 3
        while list(pool.services._workers) != [((name, "v1"), 0)] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(pool.services._workers) == [((name, "v1"), 0)], {k: w.resident
                                                                     for k, w in pool.services._workers.items()}
    assert pool.services.counts["evictions"] == before + 3
    monkeypatch.undo()
    reset_caches()


def test_a_hot_service_gets_another_worker_and_calls_spread_over_them(azurite, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from shared.sandbox import pool
    from tests.conftest import reset_caches

    monkeypatch.setenv("MAX_WORKERS_PER_SERVICE", "2")
    reset_caches()

    name = f"hot{int(time.time() * 1000)}"
    services.publish(alice, name, "v1", {"code": "import os, time\ntime.sleep(0.3)\npid = os.getpid()",
                                         "runtimeType": "Python",
                                         "outputParameterDefinitions": [{"name": "pid", "type": "integer"}]})
    pids: set[int] = set()
    deadline = time.monotonic() + 30
    with ThreadPoolExecutor(4) as calls:
        while len(pids) < 2 and time.monotonic() < deadline:
            for out in calls.map(lambda _: consume.consume(alice, name, "v1", {}), range(4)):
                if out["success"]:
                    pids.add(out["outputParameters"]["pid"])
    assert len(pids) == 2  # MAX_WORKERS_PER_SERVICE: never more
    assert sorted(k[1] for k in pool.services._workers if k[0] == (name, "v1")) == [0, 1]
    services.forget(name, "v1")  # a PATCH or DELETE retires them all
    assert not [k for k in pool.services._workers if k[0] == (name, "v1")]
    monkeypatch.undo()
    reset_caches()
