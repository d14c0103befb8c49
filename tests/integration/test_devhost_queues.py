"""The local host runs queue-triggered functions as the Functions host's queue listener does,
against Azurite's queue service (real queues, a FunctionApp defined here)."""
from __future__ import annotations

import base64
import json
import logging
import os
import signal
import threading
import time
import uuid
from contextlib import contextmanager

import azure.functions as func
import pytest
from azure.storage.queue import QueueClient

from devhost.queues import QueueRunner

pytestmark = pytest.mark.azurite

INVISIBILITY = 2  # seconds a received message stays invisible (the host's 10 minutes, shortened)
QUEUES = {"batchSize": 4, "newBatchThreshold": 2, "maxPollingInterval": "00:00:00.5",
          "visibilityTimeout": "00:00:01", "maxDequeueCount": 3, "messageEncoding": "base64"}


class Calls:
    """What the functions saw, from every runner of a test."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[dict] = []

    def add(self, **call) -> None:
        with self.lock:
            self.seen.append({**call, "at": time.monotonic()})

    def of(self, **match) -> list[dict]:
        with self.lock:
            return [c for c in self.seen if all(c.get(k) == v for k, v in match.items())]


def make_app(calls: Calls, *, host: str = "-", poison_function: bool = False) -> func.FunctionApp:
    """Queue names come from settings, as the batch functions' will: WORK_QUEUE per test.
    `host` labels what this app's functions see."""
    bp = func.Blueprint()

    @bp.queue_trigger(arg_name="msg", queue_name="%WORK_QUEUE%", connection="AzureWebJobsStorage")
    def work(msg: func.QueueMessage, context: func.Context) -> None:
        body = msg.get_body().decode()
        calls.add(fn="work", body=body, host=host, id=msg.id,
                  dequeue_count=msg.dequeue_count, inserted=msg.insertion_time, expires=msg.expiration_time,
                  next_visible=msg.time_next_visible, pop_receipt=msg.pop_receipt,
                  context=context.function_name, phase="start")
        if body.startswith("sleep:"):
            time.sleep(float(body.split(":")[1]))
        if body == "fail":
            raise ValueError("this message always fails")
        calls.add(fn="work", body=body, id=msg.id, phase="end")

    if poison_function:
        @bp.queue_trigger(arg_name="msg", queue_name="%WORK_QUEUE%-poison", connection="")
        async def work_poison(msg: func.QueueMessage) -> None:  # on the runner's event loop
            calls.add(fn="work_poison", body=msg.get_body().decode(), dequeue_count=msg.dequeue_count)

    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    app.register_functions(bp)
    return app


@pytest.fixture
def queue_env(azurite, tmp_path):
    """Settings for this test's runners: a queue of its own, short invisibility and grace."""
    name = "w" + uuid.uuid4().hex[:12]
    host_json = tmp_path / "host.json"
    host_json.write_text(json.dumps({"version": "2.0", "extensions": {"queues": QUEUES}}))
    env = {**os.environ, "WORK_QUEUE": name, "DEVHOST_QUEUE_INVISIBILITY_SECONDS": str(INVISIBILITY),
           "DEVHOST_QUEUE_SHUTDOWN_SECONDS": "5"}
    return {"name": name, "host_json": host_json, "env": env, "conn": azurite}


@contextmanager
def running(app: func.FunctionApp, queue_env: dict, **settings: str):
    runner = QueueRunner(app, host_json=queue_env["host_json"], storage_timeout=2,
                         environ={**queue_env["env"], **settings})
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


def queue(queue_env: dict, suffix: str = "") -> QueueClient:
    q = QueueClient.from_connection_string(queue_env["conn"], queue_env["name"] + suffix)
    try:
        q.create_queue()
    except Exception:  # noqa: BLE001 - already there
        pass
    return q


def send(q: QueueClient, body: str) -> str:
    return q.send_message(base64.b64encode(body.encode()).decode()).id


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def messages_in(q: QueueClient) -> int:
    """Visible and invisible ones alike."""
    return q.get_queue_properties().approximate_message_count


def test_a_message_is_handled_once_and_deleted(queue_env):
    calls = Calls()
    q = queue(queue_env)
    with running(make_app(calls), queue_env):
        sent = send(q, "hello")
        wait_for(lambda: calls.of(phase="end"), 10, "the function")
        time.sleep(INVISIBILITY + 1)  # it would be back by now had it not been deleted
    [call] = calls.of(phase="start")
    assert call["body"] == "hello" and call["id"] == sent and call["dequeue_count"] == 1
    assert call["inserted"] < call["next_visible"] < call["expires"] and call["pop_receipt"]
    assert (call["next_visible"] - call["inserted"]).total_seconds() == pytest.approx(INVISIBILITY, abs=1)
    assert call["context"] == "work"
    assert messages_in(q) == 0


def test_a_failing_message_comes_back_after_visibility_timeout_and_is_poisoned_as_sent(queue_env):
    calls = Calls()
    q = queue(queue_env)
    with running(make_app(calls), queue_env):
        raw = q.send_message(base64.b64encode(b"fail").decode())
        poison = queue(queue_env, "-poison")
        wait_for(lambda: poison.peek_messages(), 15, "the poison queue")
    tries = calls.of(body="fail")
    assert [t["dequeue_count"] for t in tries] == [1, 2, 3]  # maxDequeueCount 3
    gaps = [b["at"] - a["at"] for a, b in zip(tries, tries[1:])]
    assert all(g >= 0.9 for g in gaps), gaps  # visibilityTimeout 00:00:01 after each failure
    [copied] = poison.peek_messages()
    assert copied.content == raw.content  # the original text, still base64
    assert messages_in(q) == 0


def test_a_poison_queue_function_receives_poisoned_messages(queue_env):
    calls = Calls()
    q = queue(queue_env)
    with running(make_app(calls, poison_function=True), queue_env):
        send(q, "fail")
        wait_for(lambda: calls.of(fn="work_poison"), 15, "the poison function")
        assert len(calls.of(fn="work", body="fail")) == 3
    [poisoned] = calls.of(fn="work_poison")
    assert poisoned["body"] == "fail" and poisoned["dequeue_count"] == 1
    assert messages_in(q) == 0 and messages_in(queue(queue_env, "-poison")) == 0


def test_a_message_dequeued_more_often_than_allowed_is_poisoned_without_running(queue_env):
    calls = Calls()
    q = queue(queue_env)
    send(q, "crashed a host every time")
    for _ in range(3):  # three hosts that died while running it (each took it, none finished)
        [m] = q.receive_messages(visibility_timeout=1)
        q.update_message(m, pop_receipt=m.pop_receipt, visibility_timeout=0)
    with running(make_app(calls), queue_env):
        wait_for(lambda: queue(queue_env, "-poison").peek_messages(), 10, "the poison queue")
    assert calls.of(fn="work") == []


def test_a_function_running_longer_than_the_invisibility_is_not_handed_out_twice(queue_env):
    calls = Calls()
    q = queue(queue_env)
    with running(make_app(calls), queue_env), running(make_app(calls), queue_env):
        send(q, f"sleep:{INVISIBILITY * 2.5}")  # renewed every INVISIBILITY / 2 meanwhile
        wait_for(lambda: calls.of(phase="end"), 15, "the slow function")
        time.sleep(INVISIBILITY + 1)
    assert len(calls.of(phase="start")) == 1
    assert messages_in(q) == 0


def test_two_runners_on_one_queue_share_its_messages_and_none_is_handled_twice(queue_env):
    calls = Calls()
    q = queue(queue_env)
    bodies = [f"sleep:0.{i % 3}" for i in range(24)]
    with running(make_app(calls, host="a"), queue_env), running(make_app(calls, host="b"), queue_env):
        ids = [send(q, b) for b in bodies]
        wait_for(lambda: len(calls.of(phase="end")) >= len(ids), 30, "every message")
        time.sleep(INVISIBILITY + 1)
    started = calls.of(phase="start")
    assert sorted(c["id"] for c in started) == sorted(ids)  # each once
    by_host = {h: len([c for c in started if c["host"] == h]) for h in "ab"}
    assert by_host["a"] > 0 and by_host["b"] > 0, by_host
    assert messages_in(q) == 0


def test_stopping_a_runner_mid_invocation_leaves_the_message_to_reappear(queue_env):
    calls = Calls()
    q = queue(queue_env)
    first = QueueRunner(make_app(calls), host_json=queue_env["host_json"], storage_timeout=2,
                        environ={**queue_env["env"], "DEVHOST_QUEUE_SHUTDOWN_SECONDS": "0.5"})
    first.start()
    try:
        sent = send(q, "sleep:4")
        wait_for(lambda: calls.of(phase="start"), 10, "the function to start")
        began = time.monotonic()
        first.stop()
        assert time.monotonic() - began < 3  # the grace, not the whole invocation
    finally:
        first.stop()
    with running(make_app(calls), queue_env):
        again = wait_for(lambda: calls.of(phase="start", dequeue_count=2), 15, "the message to reappear")
        wait_for(lambda: len(calls.of(phase="end")) == 2, 10, "both invocations to end")
    assert again[0]["id"] == sent
    assert messages_in(q) == 0


def test_polling_survives_azurite_paused(tmp_path, queue_env, caplog):
    from devhost.__main__ import azurite_connection_string, free_port, start_azurite, stop

    ports = free_port(), free_port(), free_port()
    procs = start_azurite(ports[0], ports[1], queue_port=ports[2], location=tmp_path / "azurite")
    conn = azurite_connection_string(ports[0], ports[1], queue_port=ports[2])
    q = queue({**queue_env, "conn": conn})
    calls = Calls()
    caplog.set_level(logging.WARNING, logger="devhost.queues")
    try:
        with running(make_app(calls), queue_env, AzureWebJobsStorage=conn) as runner:
            send(q, "before")
            wait_for(lambda: calls.of(body="before", phase="end"), 10, "the first message")
            queue_service = procs[1]  # blob, queue, table
            os.killpg(queue_service.pid, signal.SIGSTOP)
            try:
                wait_for(lambda: "polling queue" in caplog.text, 10, "a polling failure")
                time.sleep(1)
            finally:
                os.killpg(queue_service.pid, signal.SIGCONT)
            send(q, "after")
            wait_for(lambda: calls.of(body="after", phase="end"), 15, "the message sent after the pause")
            assert runner._thread.is_alive()
    finally:
        stop(procs)
    assert "works again" in caplog.text
    assert "127.0.0.1" not in caplog.text and "AccountKey" not in caplog.text and "Eby8" not in caplog.text
