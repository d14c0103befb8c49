"""Batch lanes run in process against Azurite, their messages taken from the queue by the test:
what a lane handed out twice, a lost commit, a cancel and the poison queue leave behind."""
import base64
import uuid

import pytest

from shared import batch, services
from shared.auth import Principal
from shared.config import get_settings
from shared.errors import IntegrityFailed
from shared.storage import _clients, blobs
from tests.conftest import reset_caches

pytestmark = pytest.mark.azurite
alice = Principal("alice")


@pytest.fixture
def queue(azurite, monkeypatch):
    """A batch queue of the test's own: no host's runner takes its messages."""
    monkeypatch.setenv("BATCH_QUEUE", "t" + uuid.uuid4().hex[:12])
    reset_caches()
    yield _clients.queue(get_settings().queue_name)
    monkeypatch.undo()
    reset_caches()


def publish(code: str) -> str:
    name = f"batch{uuid.uuid4().hex[:8]}"
    services.publish(alice, name, "v1", {
        "code": code, "runtimeType": "Python",
        "inputParameterDefinitions": [{"name": "x", "type": "numeric"}],
        "outputParameterDefinitions": [{"name": "y", "type": "numeric"}]})
    return name


def start(name: str, n: int, parallel: int) -> str:
    raw = ("[" + ",".join(f'{{"x": {i}}}' for i in range(n)) + "]").encode()
    return batch.start(alice, name, "v1", raw, str(parallel))["batchExecutionId"]


def lanes(queue) -> list[bytes]:
    """The messages waiting, taken off the queue, as the trigger hands them over."""
    out = []
    for m in queue.receive_messages(messages_per_page=32, visibility_timeout=60):
        out.append(base64.b64decode(m.content))
        queue.delete_message(m)
    return out


def committed(bid: str) -> list[str]:
    return sorted(r["RowKey"] for r in batch._chunks.list(bid) if r["RowKey"].startswith("c-"))


def test_a_lane_handed_out_twice_commits_each_chunk_once(queue):
    name = publish("y = x * 2")
    bid = start(name, 250, 2)
    bodies = lanes(queue)
    assert len(bodies) == 2  # parallelCount lanes
    for body in (bodies[0], bodies[0], bodies[1]):
        batch.run_lane(body)
    st = batch.status(alice, name, "v1", bid, partial=False)
    assert (st["state"], st["completedItemCount"], st["totalItemCount"]) == ("Complete", 250, 250)
    assert [r["outputParameters"]["y"] for r in st["batchExecutionResults"]] == [2 * i for i in range(250)]
    assert committed(bid) == ["c-000000", "c-000001", "c-000002"]


def test_a_chunk_scored_again_after_its_commit_was_lost_keeps_its_first_results(queue):
    name = publish("import random\ny = x + random.random()")
    bid = start(name, 100, 1)
    (body,) = lanes(queue)
    batch.run_lane(body)
    first = batch.status(alice, name, "v1", bid, partial=False)["batchExecutionResults"]
    commit = next(r for r in batch._chunks.list(bid) if r["RowKey"] == "c-000000")
    batch._chunks.delete(commit)  # the instance died after writing the results, before committing them
    assert batch.status(alice, name, "v1", bid, partial=False)["state"] == "Pending"
    batch.run_lane(body)  # scored again: other numbers
    st = batch.status(alice, name, "v1", bid, partial=False)
    assert st["state"] == "Complete" and st["batchExecutionResults"] == first


def test_a_lane_of_a_cancelled_batch_leaves_nothing(queue):
    name = publish("y = x")
    bid = start(name, 150, 1)
    (body,) = lanes(queue)
    assert batch.cancel(alice, name, "v1", bid) == [bid]
    batch.run_lane(body)
    assert blobs.names(f"batches/{bid}/") == [] and committed(bid) == []


def test_a_chunk_that_fails_every_try_ends_as_failed_records_and_its_lane_goes_on(queue):
    name = publish("y = x")
    bid = start(name, 200, 1)
    (body,) = lanes(queue)
    blobs.delete(batch._records_blob(bid, 0))
    blobs.put(batch._records_blob(bid, 0), b"[1, 2")
    with pytest.raises(IntegrityFailed):
        batch.run_lane(body)  # the host tries it again, then moves it to the poison queue
    batch.end_lane(body)
    (again,) = lanes(queue)  # the lane goes on with its next chunk
    batch.run_lane(again)
    st = batch.status(alice, name, "v1", bid, partial=False)
    assert (st["state"], st["completedItemCount"]) == ("Failed", 200)
    failed, scored = st["batchExecutionResults"][:100], st["batchExecutionResults"][100:]
    assert all(not r["success"] and "could not be read" in r["errorMessage"] for r in failed)
    assert [r["outputParameters"]["y"] for r in scored] == list(range(100, 200))


def test_a_message_that_names_no_batch_is_dropped(queue):
    for body in (b"not json", b"[]", b'{"batch": "x"}', b'{"batch": "' + str(uuid.uuid4()).encode() + b'", '
                 b'"name": "n", "version": "v", "lane": 0}'):
        batch.run_lane(body)
        batch.end_lane(body)


def test_a_long_lane_hands_itself_back_to_the_queue(queue, monkeypatch):
    """No invocation outlives host.json's functionTimeout: past its time, a lane goes back to the
    queue (where any instance may take it) and carries on from its next chunk."""
    monkeypatch.setattr(batch, "_LANE_SECONDS", 0)
    name = publish("y = x")
    bid = start(name, 300, 1)
    (body,) = lanes(queue)
    for expected in (1, 2, 3):
        batch.run_lane(body)  # one chunk, then the lane is sent again
        assert len(committed(bid)) == expected
        handed_back = lanes(queue)
        assert handed_back == ([body] if expected < 3 else [])
    assert batch.status(alice, name, "v1", bid, partial=False)["state"] == "Complete"
