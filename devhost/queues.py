"""Queue-triggered functions, run as the Functions host's queue listener runs them (WebJobs
QueuesOptions, read from host.json `extensions.queues`), against a storage queue service
(Azurite's, locally).

What the host does, and so this runner: each function receives up to `batchSize` messages at
once, invisible for 10 minutes (here DEVHOST_QUEUE_INVISIBILITY_SECONDS), renewed at half of that
while the function runs, and fetches more once `newBatchThreshold` or fewer are in flight. An
empty queue is polled with a randomised exponential backoff from 100 ms to `maxPollingInterval`,
as are storage errors (logged, never fatal). A message whose function returns is deleted; one
whose function raises is made visible again after `visibilityTimeout`, or, at `maxDequeueCount`
dequeues, copied as it was received to `<queue>-poison` and deleted. A message dequeued more
often than that (its processing killed a host each time) and one that is not valid base64
(`messageEncoding` base64, the default) go to the poison queue without being invoked.

On stop nothing more is received, running invocations get DEVHOST_QUEUE_SHUTDOWN_SECONDS to
finish, and any message not finished is left to reappear when its invisibility lapses."""
from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import inspect
import json
import logging
import os
import random
import re
import threading
import typing
import uuid
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import azure.functions as func
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.functions import _abc as func_abc
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient

log = logging.getLogger("devhost.queues")

#: Seconds a received message stays invisible, renewed at half of it while its function runs.
INVISIBILITY_SETTING = "DEVHOST_QUEUE_INVISIBILITY_SECONDS"
DEFAULT_INVISIBILITY = 600  # the host's: 10 minutes
#: Seconds a stop waits for the invocations still running.
SHUTDOWN_SETTING = "DEVHOST_QUEUE_SHUTDOWN_SECONDS"
DEFAULT_SHUTDOWN = 10.0
MIN_POLL_SECONDS = 0.1  # the host's QueuePollingIntervals.Minimum
MAX_BATCH_SIZE = 32  # the most one Get Messages call returns
POISON_SUFFIX = "-poison"
_QUEUE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")


class QueueSetupError(RuntimeError):
    """A queue function that cannot run: a missing setting, a wrong signature or host.json value."""


@dataclass(frozen=True)
class QueueOptions:
    """host.json `extensions.queues`, with the host's defaults (times in seconds)."""
    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval: float = 60.0
    visibility_timeout: float = 0.0
    max_dequeue_count: int = 5
    message_encoding: str = "base64"


def options_of(host_json: Path) -> QueueOptions:
    """The queue options of host.json (defaults for what it leaves out); keys are case-insensitive
    as in the host. Raises QueueSetupError naming a value the host would refuse."""
    try:
        data = json.loads(host_json.read_text())
    except FileNotFoundError:
        data = {}
    except ValueError as exc:
        raise QueueSetupError(f"{host_json.name} is not valid JSON: {exc}") from None
    extensions = {k.lower(): v for k, v in (data.get("extensions") or {}).items()}
    raw = {k.lower(): v for k, v in (extensions.get("queues") or {}).items()}

    def integer(key: str, default: int, low: int, high: int) -> int:
        value = raw.get(key.lower(), default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise QueueSetupError(f"host.json extensions.queues.{key} must be a whole number from {low} to {high}")
        return value

    def timespan(key: str, default: float, low: float) -> float:
        value = raw.get(key.lower())
        if value is None:
            return default
        seconds = _timespan_seconds(value)
        if seconds is None or seconds < low:
            raise QueueSetupError(f"host.json extensions.queues.{key} must be a time span like \"00:00:02\""
                                  + (f" of at least {low:g} s" if low else ""))
        return seconds

    batch_size = integer("batchSize", 16, 1, MAX_BATCH_SIZE)
    encoding = str(raw.get("messageencoding", "base64")).lower()
    if encoding not in ("base64", "none"):
        raise QueueSetupError('host.json extensions.queues.messageEncoding must be "base64" or "none"')
    return QueueOptions(batch_size=batch_size,
                        new_batch_threshold=integer("newBatchThreshold", batch_size // 2, 0, 10_000),
                        max_polling_interval=timespan("maxPollingInterval", 60.0, MIN_POLL_SECONDS),
                        visibility_timeout=timespan("visibilityTimeout", 0.0, 0.0),
                        max_dequeue_count=integer("maxDequeueCount", 5, 1, 10_000),
                        message_encoding=encoding)


def _timespan_seconds(value: object) -> float | None:
    """.NET TimeSpan text: [d.]hh:mm:ss[.fffffff]."""
    m = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2})(\.\d{1,7})?", str(value).strip())
    if not m:
        return None
    days, hours, minutes, seconds, fraction = m.groups()
    if int(hours) > 23 or int(minutes) > 59 or int(seconds) > 59:
        return None
    return (int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
            + float(fraction or 0))


def _setting_seconds(environ: Mapping[str, str], name: str, default: float, *, whole: bool = False) -> float:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < (1 if whole else 0) or (whole and value != int(value)) or value > 7 * 86400:
        raise QueueSetupError(f"setting {name} must be a {'whole ' if whole else ''}number of seconds"
                              f"{' from 1' if whole else ''} up to 7 days")
    return value


def resolve_queue_name(template: str, environ: Mapping[str, str], function: str) -> str:
    """`%SETTING%` placeholders replaced from the app settings; lower case, as the host makes it."""
    def setting(m: re.Match[str]) -> str:
        value = _lookup(environ, m.group(1))
        if value is None:
            raise QueueSetupError(f"{function}: queue name {template!r} names setting {m.group(1)}, which is not set")
        return value

    name = re.sub(r"%([^%]+)%", setting, template or "").lower()
    if not _QUEUE_NAME.fullmatch(name):
        raise QueueSetupError(f"{function}: {name!r} (from {template!r}) is not a valid queue name: 3 to 63 "
                              "lower-case letters, digits and single hyphens, first and last a letter or digit")
    return name


def connection_string_of(connection: str | None, environ: Mapping[str, str], function: str) -> str:
    """The connection string a trigger's `connection` names, looked up as the host does: the
    setting `AzureWebJobs<name>`, else `<name>`; no name means AzureWebJobsStorage."""
    name = connection or "Storage"
    for candidate in (f"AzureWebJobs{name}", name):
        value = _lookup(environ, candidate)
        if value:
            return value
    shown = "AzureWebJobsStorage" if name == "Storage" else name
    identity = [k for k in environ if k.lower().startswith(f"{shown.lower()}__")]
    hint = (f"identity-based connections ({identity[0]}) work in Azure only, the local host needs a "
            "connection string" if identity else "identity-based connections "
            f"({shown}__queueServiceUri) work in Azure only")
    raise QueueSetupError(f"{function}: setting {shown} (the queue trigger's connection) is not set: set it to "
                          f"a storage connection string (make run sets AzureWebJobsStorage to its Azurite's); {hint}")


def _lookup(environ: Mapping[str, str], name: str) -> str | None:
    """App settings are case-insensitive in the host."""
    if name in environ:
        return environ[name]
    lower = name.lower()
    return next((v for k, v in environ.items() if k.lower() == lower), None)


class _Context(func.Context):
    def __init__(self, function_name: str, directory: str) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name
        self._directory = directory
        self._local = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._directory

    @property
    def trace_context(self) -> Any:
        return None

    @property
    def retry_context(self) -> Any:
        return None


@dataclass
class QueueFunction:
    name: str
    fn: Callable[..., Any]
    arg: str
    #: what the trigger parameter receives: "message" (func.QueueMessage), "str" or "bytes"
    kind: str
    wants_context: bool
    queue: str
    connection: str = field(repr=False)  # the setting's value: never shown
    poison_queue: str | None = None


def queue_functions(app: func.FunctionApp, environ: Mapping[str, str]) -> list[QueueFunction]:
    """The queue-triggered functions of `app`, checked as the Python worker checks them at load."""
    app.functions_bindings = None  # get_functions() is not idempotent
    found = []
    for f in app.get_functions():
        trigger = f.get_trigger()
        name = f.get_function_name()
        if trigger is None or f.is_http_function():
            continue
        if trigger.type != "queueTrigger":
            log.warning("%s: %s functions are not run by the local host", name, trigger.type)
            continue
        fn = f.get_user_function()
        kind, wants_context = _check_signature(name, fn, trigger.name)
        others = [b for b in f.get_bindings() if b is not trigger]
        if others:
            raise QueueSetupError(f"{name}: the local host passes a queue function only its trigger (and context); "
                                  f"binding {others[0].name!r} ({others[0].type}) is not supported: use the "
                                  "storage SDKs in the function instead")
        queue = resolve_queue_name(trigger.queue_name, environ, name)
        poison = queue + POISON_SUFFIX
        found.append(QueueFunction(name, fn, trigger.name, kind, wants_context, queue,
                                   connection_string_of(trigger.connection, environ, name),
                                   poison if len(poison) <= 63 else None))
    return found


def _check_signature(name: str, fn: Callable[..., Any], arg: str) -> tuple[str, bool]:
    params = inspect.signature(fn).parameters
    extra = set(params) - {arg, "context"}
    if extra:
        raise QueueSetupError(f"{name}: parameters {sorted(extra)} are declared in Python but not in the "
                              "function definition")
    if arg not in params:
        raise QueueSetupError(f"{name}: parameter {arg!r} (the queue trigger) is declared in the function "
                              "definition but not in Python")
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:  # noqa: BLE001 - an annotation that does not resolve
        raise QueueSetupError(f"{name}: its annotations do not resolve: {exc}") from None
    context = hints.get("context")
    if "context" in params and context is not None and getattr(context, "__name__", None) != "Context":
        raise QueueSetupError(f'{name}: the "context" parameter is expected to be of type azure.functions.Context, '
                              f"got {context!r}")
    anno = hints.get(arg)
    if anno is None:
        kind = "message"
    elif anno in (str, bytes):
        kind = anno.__name__
    elif isinstance(anno, type) and issubclass(anno, func_abc.QueueMessage):
        kind = "message"
    else:
        raise QueueSetupError(f'{name}: type of {arg} binding "queueTrigger" does not match its Python annotation '
                              f"{getattr(anno, '__name__', anno)!r} (func.QueueMessage, str or bytes)")
    return kind, "context" in params


class _Backoff:
    """The host's RandomizedExponentialBackoffStrategy: from the minimum, doubling (±20 %) up to the
    maximum on each empty poll; the minimum again once something was found."""

    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum, self.maximum = minimum, max(minimum, maximum)
        self.current, self._exponent = minimum, 1

    def next(self, found: bool) -> float:
        if found:
            self.current, self._exponent = self.minimum, 1
        elif self.current != self.maximum:
            interval = self.minimum * (1 + random.uniform(0.8, 1.2) * 2 ** (self._exponent - 1))
            if interval < self.maximum:
                self.current, self._exponent = interval, self._exponent + 1
            else:
                self.current = self.maximum
        return self.current


class _NotRun(Exception):
    """The host's thread pool was shut down before the function could start."""


def _described(exc: BaseException) -> str:
    """A storage error without the account, URL or key its text may hold."""
    if isinstance(exc, HttpResponseError) and exc.status_code:
        code = getattr(exc.error_code, "value", exc.error_code)
        return f"{type(exc).__name__} {exc.status_code}" + (f" {code}" if code else "")
    return type(exc).__name__


def _is_gone(exc: BaseException) -> bool:
    """The message is no longer ours: deleted, or received again by someone else."""
    code = getattr(getattr(exc, "error_code", None), "value", getattr(exc, "error_code", None))
    return isinstance(exc, ResourceNotFoundError) or code == "PopReceiptMismatch"


class _Listener:
    """One queue function's polling loop, on the runner's event loop."""

    def __init__(self, runner: QueueRunner, target: QueueFunction) -> None:
        self.runner, self.target = runner, target
        opts = runner.options
        kwargs = dict(connection_timeout=runner.storage_timeout, read_timeout=runner.storage_timeout, retry_total=0)
        try:
            self.queue = QueueClient.from_connection_string(target.connection, target.queue, **kwargs)
            self.poison = (QueueClient.from_connection_string(target.connection, target.poison_queue, **kwargs)
                           if target.poison_queue else None)
        except ValueError:
            raise QueueSetupError(f"{target.name}: the connection string of its queue trigger has no queue "
                                  "endpoint (QueueEndpoint=...)") from None
        self.backoff = _Backoff(MIN_POLL_SECONDS, opts.max_polling_interval)
        self.in_flight: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        runner, opts = self.runner, self.runner.options
        ready = found_since_delay = failing = False
        while not runner.stopping.is_set():
            try:
                if not ready:
                    await runner.io(self._create_queue)  # as the host's queue, made when missing
                    ready = True
                messages = await runner.io(self._receive, opts.batch_size)
            except Exception as exc:  # noqa: BLE001 - storage errors never end the runner
                ready = False
                delay = self.backoff.next(found_since_delay)
                found_since_delay = False
                # The first failure in a row is a warning, the rest (every backoff) debug.
                log.log(logging.DEBUG if failing else logging.WARNING,
                        "%s: polling queue %s failed (%s); trying again in %.1f s, backing off up to %g s",
                        self.target.name, self.target.queue, _described(exc), delay, opts.max_polling_interval)
                failing = True
                await runner.sleep(delay)
                continue
            if failing:
                log.warning("%s: polling queue %s works again", self.target.name, self.target.queue)
                failing = False
            if messages and runner.stopping.is_set():
                # Received as the runner stopped: given back at once, not run.
                await asyncio.gather(*(self._settle("release", _Held(m.id, m.pop_receipt)) for m in messages))
                break
            for message in messages:
                task = asyncio.create_task(self._process(message))
                self.in_flight.add(task)
                task.add_done_callback(self._processed)
            if not messages:
                delay = self.backoff.next(found_since_delay)
                found_since_delay = False
                await runner.sleep(delay)
                continue
            found_since_delay = True
            while len(self.in_flight) > opts.new_batch_threshold and not runner.stopping.is_set():
                await runner.first_of(self.in_flight)

    def _processed(self, task: asyncio.Task[None]) -> None:
        self.in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:  # a bug here, not in the function
            log.error("%s: handling a message failed", self.target.name, exc_info=task.exception())

    # -- storage calls (in the runner's I/O threads) ------------------------------------------
    def _create_queue(self) -> None:
        try:
            self.queue.create_queue()
        except ResourceExistsError:
            pass

    def _receive(self, count: int) -> list[Any]:
        """One Get Messages call (the SDK's pager would call again while fewer than `count` came)."""
        pages = self.queue.receive_messages(messages_per_page=count, max_messages=count,
                                            visibility_timeout=self.runner.invisibility).by_page()
        return list(next(pages, []))

    def _send_poison(self, content: str) -> None:
        assert self.poison is not None
        try:
            self.poison.send_message(content)
        except ResourceNotFoundError:
            try:
                self.poison.create_queue()
            except ResourceExistsError:
                pass
            self.poison.send_message(content)

    # -- one message -----------------------------------------------------------------------------
    async def _process(self, message: Any) -> None:
        target, opts = self.target, self.runner.options
        held = _Held(message.id, message.pop_receipt)
        if message.dequeue_count > opts.max_dequeue_count:
            await self._to_poison(message, held, "its processing never finished")
            return
        try:
            body = (base64.b64decode(message.content or "", validate=True) if opts.message_encoding == "base64"
                    else (message.content or "").encode("utf-8"))
        except (binascii.Error, ValueError):
            log.warning("%s: message %s is not valid base64 (host.json messageEncoding is base64)",
                        target.name, message.id)
            await self._to_poison(message, held, "decoding failed")
            return
        renewal = asyncio.create_task(self._renew(held))
        try:
            succeeded = await self._invoke(message, body)
        except _NotRun:
            held.done.set()
            await renewal
            await self._settle("release", held, 0)  # never invoked: visible again at once
            return
        except BaseException:
            renewal.cancel()  # stopped before it finished: left to reappear, never deleted
            raise
        held.done.set()
        await renewal  # a renewal in flight changes the pop receipt: wait for it
        if succeeded:
            await self._settle("delete", held)
        elif target.poison_queue is None:
            pass  # as the host does without a poison queue: left invisible, so it does not spin
        elif message.dequeue_count >= opts.max_dequeue_count:
            await self._to_poison(message, held, f"it failed {message.dequeue_count} times")
        else:
            await self._settle("release", held, int(opts.visibility_timeout))

    async def _invoke(self, message: Any, body: bytes) -> bool:
        target, runner = self.target, self.runner
        if target.kind == "message":
            # What the worker's queueTrigger converter builds from the host's trigger metadata.
            value: Any = QueueMessage(id=message.id, body=body, dequeue_count=message.dequeue_count,
                                      expiration_time=message.expires_on, insertion_time=message.inserted_on,
                                      time_next_visible=message.next_visible_on, pop_receipt=message.pop_receipt)
        else:
            value = body
        kwargs: dict[str, Any] = {}
        if target.wants_context:
            kwargs["context"] = _Context(target.name, runner.directory)
        try:
            if target.kind == "str":
                value = body.decode("utf-8")
            kwargs[target.arg] = value
            if inspect.iscoroutinefunction(target.fn):  # as the Python worker does: on the event loop
                await target.fn(**kwargs)
            else:
                try:
                    running = runner.executor.submit(functools.partial(target.fn, **kwargs))
                except RuntimeError:  # the host's pool is shut down: we are stopping
                    raise _NotRun from None
                runner.sync_running.add(running)
                running.add_done_callback(runner.sync_running.discard)
                try:
                    out = await asyncio.wrap_future(running)
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and not task.cancelling():
                        raise _NotRun from None  # cancelled in the pool's queue by its shutdown
                    raise
                if inspect.isawaitable(out):
                    await out
            return True
        except (asyncio.CancelledError, _NotRun):
            raise
        except (Exception, SystemExit):  # noqa: BLE001 - the host records a failure and goes on
            log.exception("%s: failed on message %s (dequeue count %d)", target.name, message.id,
                          message.dequeue_count)
            return False

    async def _renew(self, held: _Held) -> None:
        """Keeps the message invisible while its function runs: at half the invisibility, and
        after failed tries sooner and sooner (the host's linear speed-up, down to a fifth of that);
        stops once the message is no longer ours."""
        normal = self.runner.invisibility / 2
        interval, failures = normal, 0
        while True:
            try:
                await asyncio.wait_for(held.done.wait(), interval)
                return
            except TimeoutError:
                pass
            try:
                updated = await self.runner.io(self.queue.update_message, held.id, pop_receipt=held.pop_receipt,
                                               visibility_timeout=self.runner.invisibility)
                held.pop_receipt, interval, failures = updated.pop_receipt, normal, 0
            except Exception as exc:  # noqa: BLE001
                if _is_gone(exc):
                    log.warning("%s: message %s was taken back from this host (%s)", self.target.name, held.id,
                                _described(exc))
                    held.lost = True
                    return
                failures += 1
                interval = max(normal / 5, normal / (failures + 1))
                log.warning("%s: renewing message %s failed (%s); trying again in %.1f s", self.target.name,
                            held.id, _described(exc), interval)

    async def _to_poison(self, message: Any, held: _Held, why: str) -> None:
        if self.poison is None:
            return
        log.warning("%s: message %s moves to queue %s: %s (maxDequeueCount %d)", self.target.name, message.id,
                    self.target.poison_queue, why, self.runner.options.max_dequeue_count)
        try:
            # As received: the host copies the message text, encoded as it was.
            await self.runner.io(self._send_poison, message.content or "", attempts=3)
        except Exception as exc:  # noqa: BLE001 - it reappears and is poisoned then
            log.warning("%s: moving message %s to the poison queue failed (%s)", self.target.name, message.id,
                        _described(exc))
            return
        await self._settle("delete", held)

    async def _settle(self, how: str, held: _Held, visibility: int = 0) -> None:
        if held.lost:
            return
        try:
            if how == "delete":
                await self.runner.io(self.queue.delete_message, held.id, pop_receipt=held.pop_receipt, attempts=3)
            else:
                await self.runner.io(self.queue.update_message, held.id, pop_receipt=held.pop_receipt,
                                     visibility_timeout=visibility, attempts=3)
        except Exception as exc:  # noqa: BLE001 - it reappears when its invisibility lapses
            if not _is_gone(exc):
                log.warning("%s: could not %s message %s (%s)", self.target.name, how, held.id, _described(exc))


@dataclass
class _Held:
    """A received message while this host holds it: the pop receipt changes with each renewal."""
    id: str
    pop_receipt: str
    done: asyncio.Event = field(default_factory=asyncio.Event)
    lost: bool = False


class QueueRunner:
    """Runs the queue-triggered functions of a FunctionApp in a thread of its own (an event loop
    for async functions and polling; sync functions in `executor`, the host's thread pool).

    The constructor checks every queue function, its settings and host.json, raising
    QueueSetupError with what to fix; `start` begins polling, `stop` ends it."""

    def __init__(self, app: func.FunctionApp, *, host_json: Path, executor: Executor | None = None,
                 storage_timeout: float = 10.0, directory: str | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.options = options_of(host_json)
        self.invisibility = int(_setting_seconds(environ, INVISIBILITY_SETTING, DEFAULT_INVISIBILITY, whole=True))
        self.grace = _setting_seconds(environ, SHUTDOWN_SETTING, DEFAULT_SHUTDOWN)
        self.storage_timeout = storage_timeout
        self.directory = directory or str(host_json.resolve().parent)
        self.functions = queue_functions(app, environ)
        self._own_executor = executor is None
        self.executor: Executor = executor or ThreadPoolExecutor(max_workers=16, thread_name_prefix="fn-queue")
        self.listeners = [_Listener(self, f) for f in self.functions]
        self.stopped_receiving = threading.Event()
        self._io_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="queue-io")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._io_pending: set[asyncio.Future[Any]] = set()
        #: sync invocations submitted to `executor` and not yet returned
        self.sync_running: set[Future[Any]] = set()
        self.stopping = asyncio.Event()  # set on the runner's loop (bound to it at first use)

    def start(self) -> None:
        if not self.listeners or self._thread is not None:
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="queue-runner", daemon=True)
        self._thread.start()

    def stop_receiving(self) -> None:
        """Receive nothing more (what is running goes on); `stop` then waits for it."""
        self.stopped_receiving.set()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._set_stopping)
            except RuntimeError:  # the loop just closed
                pass

    def stop(self) -> None:
        """Stop receiving, give running invocations the grace period, leave what is unfinished
        to reappear. Returns when the runner's thread is done (or gives up on it). A sync
        function still running goes on in its thread, its result ignored: see `unfinished`."""
        self.stop_receiving()
        if self._thread is not None:
            self._thread.join(self.grace + self.storage_timeout + 5)
        if self._own_executor:
            self.executor.shutdown(wait=False, cancel_futures=True)
        self._io_pool.shutdown(wait=False, cancel_futures=True)

    def unfinished(self) -> int:
        """Sync invocations still running in their threads (after `stop`: past the grace). The
        Functions host ends its worker process then; the local host's process exits without them."""
        return sum(1 for f in list(self.sync_running) if not f.done())

    # -- on the runner's loop ------------------------------------------------------------------
    def _run(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            if not self._io_pending:
                self._loop.close()  # else a storage call still answers into it: left to the collector

    def _set_stopping(self) -> None:
        self.stopping.set()

    async def _main(self) -> None:
        if self.stopped_receiving.is_set():
            self.stopping.set()
        polls = [asyncio.create_task(listener.run()) for listener in self.listeners]
        try:
            await asyncio.gather(*polls)
        except Exception:  # noqa: BLE001 - a bug here must still end in an orderly stop
            log.exception("the queue runner failed")
        running = set().union(*(listener.in_flight for listener in self.listeners))
        if running:
            done, left = await asyncio.wait(running, timeout=self.grace)
            for task in left:
                task.cancel()  # its message is left to reappear when its invisibility lapses
            if left:
                log.warning("stopped with %d queue invocation(s) unfinished: their messages reappear later",
                            len(left))
                await asyncio.wait(left)
        rest = asyncio.all_tasks() - {asyncio.current_task()}
        for task in rest:  # renewals of cancelled invocations
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
        if self._io_pending:  # storage calls those left in flight
            await asyncio.wait(set(self._io_pending), timeout=self.storage_timeout + 1)

    async def io(self, call: Callable[..., Any], *args: Any, attempts: int = 1, **kwargs: Any) -> Any:
        """A storage call in the I/O threads, tried `attempts` times (not when the message is gone)."""
        loop = asyncio.get_running_loop()
        for attempt in range(attempts):
            pending = loop.run_in_executor(self._io_pool, functools.partial(call, *args, **kwargs))
            self._io_pending.add(pending)
            pending.add_done_callback(self._io_done)
            try:
                return await pending
            except Exception as exc:
                if _is_gone(exc) or attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.2 * 2 ** attempt)
        raise AssertionError("unreachable")

    def _io_done(self, pending: asyncio.Future[Any]) -> None:
        self._io_pending.discard(pending)
        if not pending.cancelled():
            pending.exception()  # retrieved: one whose caller was cancelled is not reported as lost

    async def sleep(self, seconds: float) -> None:
        """Sleeps, or returns as soon as the runner stops."""
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def first_of(self, tasks: set[asyncio.Task[None]]) -> None:
        """Waits for one of `tasks` to end, or for the runner to stop."""
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({*tasks, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
