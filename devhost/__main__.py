"""`python -m devhost serve` serves the app; `python -m devhost run` (what `make run` calls)
also prepares local.settings.json and starts Azurite beside it."""
from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ROOT / "local.settings.json"
SAMPLE = ROOT / "local.settings.sample.json"
GENERATED = ("TOKEN_SIGNING_KEY", "SNAPSHOT_SIGNING_KEY")
_AZURE_MAX_BODY = 100 * 1024 * 1024  # Azure Functions refuses larger request bodies


def load_settings(path: Path = SETTINGS) -> None:
    """Export local.settings.json `Values` unless the variable is already set (as Core Tools does)."""
    if not path.exists():
        return
    for key, value in json.loads(path.read_text()).get("Values", {}).items():
        os.environ.setdefault(key, str(value))


def prepare_settings() -> str | None:
    """Create local.settings.json from the sample, filling secrets that are still placeholders.
    Returns the admin password when this call generated it (the file keeps only its hash)."""
    if not SETTINGS.exists():
        shutil.copyfile(SAMPLE, SETTINGS)
    data = json.loads(SETTINGS.read_text())
    values = data.setdefault("Values", {})
    generated = None
    for key in GENERATED:
        if "change-me" in values.get(key, "change-me") and "change-me" in os.environ.get(key, "change-me"):
            values[key] = secrets.token_urlsafe(48)
    if not values.get("LOCAL_ADMIN_PASSWORD") and not os.environ.get("LOCAL_ADMIN_PASSWORD"):
        from shared.passwords import hash_password

        # Only the hash is saved: the password is printed once, by `run`.
        generated = secrets.token_urlsafe(15)
        values["LOCAL_ADMIN_PASSWORD"] = hash_password(generated)
    SETTINGS.write_text(json.dumps(data, indent=2) + "\n")
    os.chmod(SETTINGS, 0o600)
    return generated


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def azurite_connection_string(blob_port: int, table_port: int, *, queue_port: int) -> str:
    key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    return (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};"
            f"BlobEndpoint=http://127.0.0.1:{blob_port}/devstoreaccount1;"
            f"QueueEndpoint=http://127.0.0.1:{queue_port}/devstoreaccount1;"
            f"TableEndpoint=http://127.0.0.1:{table_port}/devstoreaccount1;")


def start_azurite(blob_port: int, table_port: int, *, queue_port: int,
                  location: Path | None) -> list[subprocess.Popen]:
    """azurite-blob, azurite-queue and azurite-table, with the flags Node 20's Azurite needs."""
    bin_dir = ROOT / "node_modules" / ".bin"
    common = ["--silent", "--disableTelemetry", "--skipApiVersionCheck"]
    common += ["--location", str(location)] if location else ["--inMemoryPersistence"]
    ports = {"blob": blob_port, "queue": queue_port, "table": table_port}
    procs = [subprocess.Popen([str(bin_dir / f"azurite-{service}"), f"--{service}Host", "127.0.0.1",
                               f"--{service}Port", str(port), *common], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
             for service, port in ports.items()]
    deadline = time.monotonic() + 30
    while not all(port_open(port) for port in ports.values()):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            stop(procs)
            raise SystemExit("Azurite did not start; run 'npm ci' and check that Node 20 is installed")
        time.sleep(0.05)
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            # SIGINT, not SIGTERM: azurite-table saves its data only on SIGINT, and dies on
            # SIGTERM losing the writes of the last 5 s (its autosave interval)
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


#: the queue runner of `serve`, for main's exit
_queue_runners: list = []


def serve(host: str, port: int) -> None:
    import uvicorn

    sys.path.insert(0, str(ROOT))
    from devhost.host import FunctionHost, route_prefix_of
    from devhost.queues import QueueRunner
    from function_app import app

    from shared.config import get_settings
    get_settings()  # a bad setting stops start-up here, with its name, not on the first request
    # The batch trigger's %BATCH_QUEUE%: in Azure an app setting; here, when unset, the default
    # the app derives from STORAGE_PREFIX (so hosts with other prefixes keep to their own queue).
    if not os.environ.get("BATCH_QUEUE"):
        os.environ["BATCH_QUEUE"] = get_settings().queue_name
    # The app refuses bodies over MAX_REQUEST_BYTES itself; the host stops reading a little past that.
    asgi = FunctionHost(app, route_prefix=route_prefix_of(ROOT / "host.json"),
                        max_body_bytes=min(_AZURE_MAX_BODY, get_settings().max_request_bytes + (1 << 20)))
    # Queue-triggered functions, checked before anything starts (a wrong one stops the start
    # with what to fix); their sync handlers run in the HTTP functions' thread pool.
    queues = QueueRunner(app, host_json=ROOT / "host.json", executor=asgi.executor,
                         storage_timeout=get_settings().storage_timeout_seconds, directory=str(ROOT))
    from shared.sandbox import pool
    pool.spares.fill()  # so the first call does not wait for scikit-learn to import
    from shared import accounts
    accounts.sweep_soon()  # in the background: storage that stalls must not hold the start
    asgi.on_shutdown.append(queues.stop_receiving)
    _queue_runners.append(queues)
    queues.start()
    try:
        # proxy_headers off: uvicorn would otherwise take a client-sent X-Forwarded-For as the peer.
        uvicorn.run(asgi, host=host, port=port, log_level="warning", http="httptools", lifespan="on",
                    proxy_headers=False)
    finally:
        # Invocations still running get DEVHOST_QUEUE_SHUTDOWN_SECONDS; their messages are never
        # deleted unless they finish, and reappear when their invisibility lapses.
        try:
            queues.stop()
        finally:
            # Here, while the thread that starts workers still runs (at exit it is gone already):
            # a spare being prepared in the background is ended with its folder before the end.
            pool.shutdown()


def run(port: int) -> None:
    password = prepare_settings()
    load_settings()
    # The ports local.settings.json names (Azurite's own 10000-10002 by default), unless taken.
    named = dict(re.findall(r"(Blob|Queue|Table)Endpoint=http://127\.0\.0\.1:(\d+)/",
                            os.environ.get("STORAGE_CONNECTION_STRING", "")))
    ports = {"Blob": 10000, "Queue": 10001, "Table": 10002} | {k: int(v) for k, v in named.items()}
    if any(port_open(p) for p in ports.values()):
        taken = "/".join(str(p) for p in ports.values())
        ports = {k: free_port() for k in ports}
        print(f"ports {taken} are taken: Azurite runs on {'/'.join(str(p) for p in ports.values())} instead")
    blob_port, queue_port, table_port = ports["Blob"], ports["Queue"], ports["Table"]
    conn = azurite_connection_string(blob_port, table_port, queue_port=queue_port)
    os.environ["STORAGE_CONNECTION_STRING"] = conn
    # The host's own storage (queue triggers): this Azurite, not the sample's
    # UseDevelopmentStorage=true, which means the fixed ports 10000-10002.
    os.environ["AzureWebJobsStorage"] = conn
    data_dir = ROOT / ".azurite"
    data_dir.mkdir(exist_ok=True)
    procs = start_azurite(blob_port, table_port, queue_port=queue_port, location=data_dir)
    print(f"""
o16n is serving on http://localhost:{port}   (Azurite data in .azurite/, Ctrl-C stops both)

  Log in as admin with {f"the generated password {password} (shown only this once: local.settings.json keeps its hash)"
                        if password else "your admin password"}:
    curl -s -X POST http://localhost:{port}/login -H 'Content-Type: application/json' \\
         -d '{{"username": "admin", "password": "{password or '<password>'}"}}'
  then send  Authorization: Bearer <access_token>  on every other call (README shows the whole workflow).
""", flush=True)
    try:
        serve("127.0.0.1", port)
    except KeyboardInterrupt:
        pass
    finally:
        stop(procs)


def stop_like_ctrl_c() -> None:
    """SIGTERM (process managers, `docker stop`, `timeout`, CI runners) and SIGHUP (a closed
    terminal) end this process as Ctrl-C does, so what it started is stopped. (uvicorn handles
    SIGTERM itself and raises it again once it has shut down: Python's default would end the
    process right there.)"""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupted)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devhost")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_serve = sub.add_parser("serve", help="serve function_app.app (storage must already run)")
    p_serve.add_argument("--host", default="127.0.0.1")
    p_serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", 12800)))
    p_run = sub.add_parser("run", help="prepare settings, start Azurite and serve")
    p_run.add_argument("--port", type=int, default=int(os.environ.get("PORT", 12800)))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    stop_like_ctrl_c()
    from devhost.queues import QueueSetupError
    from shared.errors import ConfigError

    try:
        if args.cmd == "serve":
            load_settings()
            try:
                serve(args.host, args.port)
            except KeyboardInterrupt:
                pass  # exits normally: serve() closed the workers and templates
        else:
            run(args.port)
    except (ConfigError, QueueSetupError) as exc:  # a wrong setting: its name and the fix, not a traceback
        raise SystemExit(f"o16n cannot start: {exc}") from None
    _end_unfinished_queue_functions()


def _end_unfinished_queue_functions() -> None:
    """Everything is stopped: a sync queue function still running past the grace (its message
    left to reappear) would hold the exit until it returns, as the interpreter joins the thread
    pool's threads. The Functions host ends its worker process then; so does this."""
    if any(r.unfinished() for r in _queue_runners):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
