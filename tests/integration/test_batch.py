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


def test_a_lane_whose_turn_ends_keeps_what_it_scored_and_goes_back_to_the_queue(queue, monkeypatch):
    """No invocation outlives host.json's functionTimeout, and other batches get turns: past its
    turn a lane keeps what its chunk scored so far and goes to the back of the queue; the next
    turn carries on from there."""
    name = publish("import random\ny = x + random.random() / 1e9")
    bid = start(name, 250, 1)
    (body,) = lanes(queue)
    monkeypatch.setattr(batch, "_LANE_SECONDS", 0)
    batch.run_lane(body)  # one record, then its turn is over
    assert committed(bid) == [] and lanes(queue) == [body]
    kept = blobs.names(f"batches/{bid}/partial/")
    assert len(kept) == 1 and kept[0].endswith("000000-000001.json")
    first = batch._scored_so_far({"RowKey": bid}, 0)[0]
    monkeypatch.setattr(batch, "_LANE_SECONDS", 600)
    batch.run_lane(body)
    st = batch.status(alice, name, "v1", bid, partial=False)
    assert st["state"] == "Complete" and lanes(queue) == []
    assert st["batchExecutionResults"][0] == first  # not scored again
    assert [round(r["outputParameters"]["y"]) for r in st["batchExecutionResults"]] == list(range(250))


def test_a_record_whose_result_is_too_large_to_keep_fails_alone(queue):
    name = f"batch{uuid.uuid4().hex[:8]}"
    services.publish(alice, name, "v1", {
        "code": "y = 'a' * int(x)", "runtimeType": "Python",
        "inputParameterDefinitions": [{"name": "x", "type": "numeric"}],
        "outputParameterDefinitions": [{"name": "y", "type": "character"}]})
    raw = b'[{"x": 10}, {"x": 2000000}, {"x": 20}]'
    bid = batch.start(alice, name, "v1", raw, "1")["batchExecutionId"]
    (body,) = lanes(queue)
    batch.run_lane(body)
    small, large, other = batch.status(alice, name, "v1", bid, partial=False)["batchExecutionResults"]
    assert small["outputParameters"]["y"] == "a" * 10 and other["outputParameters"]["y"] == "a" * 20
    assert not large["success"] and "at most 1048576" in large["errorMessage"]
    assert blobs.names(f"batches/{bid}/partial/") == []
