"""`make soak`: many concurrent clients against the app served as `make run` serves it, then
checks that every answer was expected, that nothing acknowledged was lost, that the host and its
workers stayed within their memory bounds, and that nothing of the run is left running.

    .venv/bin/python bench/soak.py --locust .venv-soak/bin/locust [--users 30] [--spawn-rate 5]
        [--seconds 180] [--wait 0.1,0.5] [--port N] [--json bench/soak.json] [--keep]

It does what `make run` (`python -m devhost run`) does, with devhost's own functions, but
without touching the developer's local.settings.json and .azurite/: its own Azurite in a fresh
folder, then `python -m devhost serve` on a free port, with the sample settings, its own
accounts and keys, and a TMPDIR of its own (so the workers' folders and command lines name
this run), stopped with SIGTERM as a process manager would stop it. Settings in the environment
(e.g. WARM_SERVICES_MB=256) override the sample. bench/locustfile.py is the load: locust runs it
headless from its own venv (bench/soak-requirements.txt), so CI never installs locust. Memory is
sampled from /proc every 0.5 s. Writes the figures as JSON, prints a table, exits 1 when a
check fails (the run's folder is then kept for its logs), 130 when interrupted.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from devhost.__main__ import (azurite_connection_string, free_port, port_open, start_azurite,  # noqa: E402
                              stop, stop_like_ctrl_c)

MB = 2**20
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
#: a process's PSS is read again when its RSS moved this much, or after this long
MEMO_BYTES, MEMO_SECONDS = 1 * 2**20, 5.0
SAMPLE_SECONDS = 0.5
#: how long to wait, once nothing is in flight, for the host to trim its pools (every second)
GRACE_SECONDS = 3.0
#: threads of the host that may each hold a request body of MAX_REQUEST_BYTES: devhost's
#: FunctionHost runs 16; asyncio's default executor min(32, CPUs + 4) more
HOST_THREADS = 16 + min(32, (os.cpu_count() or 1) + 4)
#: a login's scrypt works in 128 x N x r bytes (32 MB), on one of FunctionHost's 16 threads
SCRYPT_BYTES = 128 * 2**15 * 8
SCRYPT_THREADS = 16
#: the host's floor (its smallest size over a stretch, so passing peaks do not count) may rise
#: this much from the third to the last quarter of the load: caches are full by then
LEAK_MB = 32
#: WARM_SERVICES_MB for the soak, unless the environment sets it
SOAK_WARM_SERVICES_MB = 160
ACCOUNTS = {"author": ["sam", "tess"], "operator": ["olga", "admin"], "reader": ["rita"]}
#: the kinds of request the mix must have sent (bench/locustfile.py names them)
KINDS = ("login", "session", "execute", "snapshot", "snapshot-delete", "session-close", "publish", "consume",
         "patch", "list", "delete", "swagger", "refused")
SHARED = {"name": "SoakShared", "version": "v1", "n": 7, "description": "shared: initial"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--locust", default=str(ROOT / ".venv-soak" / "bin" / "locust"))
    parser.add_argument("--users", type=int, default=int(os.environ.get("SOAK_USERS", 30)))
    parser.add_argument("--spawn-rate", type=float, default=5.0)
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("SOAK_SECONDS", 180)))
    parser.add_argument("--wait", default="0.1,0.5", help="each user's pause between tasks, min,max seconds")
    parser.add_argument("--weights", default="6,1,1", help="authors,operators,readers")
    parser.add_argument("--port", type=int, default=0, help="the app's port (default: a free one)")
    parser.add_argument("--json", default=str(ROOT / "bench" / "soak.json"))
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (logs, Azurite data)")
    args = parser.parse_args()
    if not os.access(args.locust, os.X_OK):
        raise SystemExit(f"no locust at {args.locust}: run `make soak`, which installs it in .venv-soak")
    stop_like_ctrl_c()  # SIGTERM and SIGHUP stop the run as Ctrl-C does: through the finally below
    soak = Soak(args)
    try:
        soak.run()
    except KeyboardInterrupt:
        soak.interrupted = True
        print("\ninterrupted: stopping what the soak started", flush=True)
    except Exception as exc:  # noqa: BLE001 - reported, and the finally still cleans up
        soak.failed(f"the soak itself: {exc!r}")
    finally:
        # Cleanup may itself be interrupted by a second signal: it goes on regardless.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        soak.shut_down()
    return soak.report()


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.monotonic()
        self.dir = Path(tempfile.mkdtemp(prefix="o16n-soak-"))
        self.tmp = self.dir / "tmp"  # the host's TMPDIR: its workers' folders are in there
        self.tmp.mkdir()
        self.passwords = {u: secrets.token_urlsafe(18) for role in ACCOUNTS.values() for u in role}
        self.env, self.settings = self._host_env()
        self.azurite: list[subprocess.Popen] = []
        self.host: subprocess.Popen | None = None
        self.locust: subprocess.Popen | None = None
        self.url = ""
        self.sampler = Sampler(self)
        self.checks: list[dict] = []
        self.journal: dict = {}
        self.interrupted = False
        self.load_seconds = 0.0
        self.server_counts: dict = {}
        self.phase = "start"  # start, load, check, stop: each memory sample says which

    # --- setup ----------------------------------------------------------------------------------
    def _host_env(self) -> tuple[dict[str, str], object]:
        """The sample's settings (not local.settings.json: the run must not depend on it), any
        setting given in the environment, then the soak's own accounts, keys and storage."""
        values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
        env = {**os.environ, **{k: v for k, v in values.items() if k not in os.environ}}
        # The sample's 1024 MB never binds here (16 warm services of this size hold ~260 MB, so
        # only MAX_WARM_SERVICES would): a smaller budget makes the host retire by memory too.
        if "WARM_SERVICES_MB" not in os.environ:
            env["WARM_SERVICES_MB"] = str(SOAK_WARM_SERVICES_MB)
        users = [u for role in ACCOUNTS.values() for u in role if u != "admin"]
        env.update(TOKEN_SIGNING_KEY=secrets.token_urlsafe(48), SNAPSHOT_SIGNING_KEY=secrets.token_urlsafe(48),
                   LOCAL_ADMIN_PASSWORD=self.passwords["admin"],
                   LOCAL_USERS=";".join(f"{u}:{self.passwords[u]}" for u in users),
                   LOCAL_ROLES="olga:Owner;rita:Reader", TMPDIR=str(self.tmp))
        env.pop("PORT", None)
        from shared.config import Settings

        env["STORAGE_CONNECTION_STRING"] = azurite_connection_string(1, 2, queue_port=3)  # for the check only
        return env, Settings.from_env(env)

    def run(self) -> None:
        blob, table, queue = free_port(), free_port(), free_port()
        conn = azurite_connection_string(blob, table, queue_port=queue)
        self.env["STORAGE_CONNECTION_STRING"] = self.env["AzureWebJobsStorage"] = conn
        self.azurite = start_azurite(blob, table, queue_port=queue, location=self.dir / "azurite")
        for p in self.azurite:
            self.sampler.remember(p.pid, "Azurite")
        port = self.args.port or free_port()
        self.url = f"http://127.0.0.1:{port}"
        with open(self.dir / "host.log", "wb") as log:
            # Its own session: a Ctrl-C in the terminal reaches the soak, which stops the host
            # with SIGTERM, as a process manager would.
            self.host = subprocess.Popen([sys.executable, "-m", "devhost", "serve", "--port", str(port)], cwd=ROOT,
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.sampler.remember(self.host.pid, "host")
        deadline = time.monotonic() + 90
        while not port_open(port):
            if self.host.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the app did not start (see {self.dir / 'host.log'})")
            time.sleep(0.1)
        self.sampler.start()
        self._prepare()
        time.sleep(2 * SAMPLE_SECONDS)
        self.sampler.mark_start()
        print(f"o16n on {self.url} (run folder {self.dir}); {self.args.users} users for {self.args.seconds} s",
              flush=True)
        loaded = time.monotonic()
        self.phase = "load"
        self._load()
        self.load_seconds = time.monotonic() - loaded
        self.phase = "check"
        self._check_outcomes()
        self.phase = "rest"
        self.sampler.at_rest()

    def token(self, user: str) -> str:
        r = requests.post(f"{self.url}/login", json={"username": user, "password": self.passwords[user]}, timeout=60)
        r.raise_for_status()
        return r.json()["access_token"]

    def _prepare(self) -> None:
        """The shared service everyone consumes: published by an author, from n = SHARED n."""
        h = {"Authorization": f"Bearer {self.token(ACCOUNTS['author'][0])}"}
        sid = requests.post(f"{self.url}/sessions", json={"runtimeType": "Python"}, headers=h, timeout=60).json()[
            "sessionId"]
        r = requests.post(f"{self.url}/sessions/{sid}/execute", json={"code": f"n = {SHARED['n']}"}, headers=h,
                          timeout=120)
        if not r.json().get("success"):
            raise RuntimeError(f"cannot run code in a session: {r.text[:300]}")
        snap = requests.post(f"{self.url}/sessions/{sid}/snapshot", json={"name": "soak-shared"}, headers=h,
                             timeout=60).json()["snapshotId"]
        requests.delete(f"{self.url}/sessions/{sid}", headers=h, timeout=60).raise_for_status()
        r = requests.post(f"{self.url}/services/{SHARED['name']}/{SHARED['version']}", headers=h, timeout=60, json={
            "code": "y = n * 1000 + x", "initCode": "open('.soak-service', 'w').close()", "runtimeType": "Python",
            "snapshotId": snap, "description": SHARED["description"],
            "inputParameterDefinitions": [{"name": "x", "type": "integer"}],
            "outputParameterDefinitions": [{"name": "y", "type": "integer"}]})
        if r.status_code != 201:
            raise RuntimeError(f"cannot publish the shared service: {r.status_code} {r.text[:300]}")
        self.admin = {"Authorization": f"Bearer {self.token('admin')}"}

    def _load(self) -> None:
        author, operator, reader = (int(w) for w in self.args.weights.split(","))
        conf = {"accounts": ACCOUNTS, "passwords": self.passwords, "shared": SHARED,
                "cache_ttl_seconds": self.settings.service_cache_ttl_seconds,
                "wait": [float(w) for w in self.args.wait.split(",")],
                "weights": {"author": author, "operator": operator, "reader": reader},
                "journal": str(self.dir / "journal.json")}
        cmd = [self.args.locust, "-f", str(ROOT / "bench" / "locustfile.py"), "--headless", "--host", self.url,
               "-u", str(self.args.users), "-r", str(self.args.spawn_rate), "-t", f"{self.args.seconds}s",
               "--stop-timeout", "60", "--only-summary", "--loglevel", "WARNING",
               "--logfile", str(self.dir / "locust.log")]
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
        with open(self.dir / "locust.out", "wb") as out:
            self.locust = subprocess.Popen(cmd, cwd=ROOT, env={**env, "SOAK_CONFIG": json.dumps(conf)}, stdout=out,
                                           stderr=subprocess.STDOUT, start_new_session=True)
        self.sampler.remember(self.locust.pid, "locust")
        limit = time.monotonic() + self.args.seconds + self.args.users / self.args.spawn_rate + 180
        next_line = time.monotonic() + 30
        while self.locust.poll() is None:
            if time.monotonic() > limit:
                raise RuntimeError("locust did not finish in time")
            if time.monotonic() > next_line:
                next_line += 30
                print(f"  {self.sampler.progress()}", flush=True)
            time.sleep(0.5)
        try:
            self.journal = json.loads((self.dir / "journal.json").read_text())
        except (OSError, ValueError):
            raise RuntimeError(f"locust ended ({self.locust.returncode}) without its journal "
                               f"(see {self.dir / 'locust.out'})") from None
        # A load that quietly did less (a user class that crashed, a task never reached) must not pass.
        ran = set(self.journal["latencies"])
        missing = sorted(set(KINDS) - ran)
        out = (self.dir / "locust.out").read_text(errors="replace")
        crashed = out.count("Traceback")
        self.check("the whole mix ran", not missing and not crashed,
                   f"{len(self.journal['authors'])} authors; every kind of request: {', '.join(KINDS)}",
                   [f"never sent: {', '.join(missing)}"] * bool(missing)
                   + [f"{crashed} tracebacks in {self.dir / 'locust.out'}"] * bool(crashed))

    # --- after the load ---------------------------------------------------------------------------
    def _check_outcomes(self) -> None:
        """What the server holds now against what it acknowledged during the load."""
        time.sleep(self.settings.service_cache_ttl_seconds + 1)  # no cached definition is older than a write now
        found: list[str] = []
        tokens = {u: {"Authorization": f"Bearer {self.token(u)}"} for u in ACCOUNTS["author"]}
        authors = self.journal["authors"]
        for a in authors:
            h, name = tokens[a["account"]], a["name"]
            r = requests.get(f"{self.url}/services/{name}", headers=h, timeout=60)
            listed = {x["version"]: x["description"] for x in r.json()} if r.status_code == 200 else {}
            vague = set(a["uncertain_versions"])
            for version, v in a["versions"].items():
                if version not in listed:
                    found.append(f"{name}/{version}: published (201) but not listed")
                elif listed[version] not in (v["descriptions"] or [v["description"]]):
                    found.append(f"{name}/{version}: description {listed[version]!r}, the last one set was "
                                 f"{v['description']!r}")
                else:
                    x = secrets.randbelow(1000)
                    c = requests.post(f"{self.url}/api/{name}/{version}", json={"x": x}, headers=h, timeout=120)
                    y = (c.json().get("outputParameters") or {}).get("y") if c.status_code == 200 else None
                    if y not in [n * 1000 + x for n in v["n"]]:
                        found.append(f"{name}/{version}: consume answered {c.status_code} y={y}, expected the "
                                     f"workspace of n in {v['n']} (x={x})")
            for version in set(listed) - set(a["versions"]) - vague:
                found.append(f"{name}/{version}: listed, but it was deleted (200) or never published")
            for version in a["deleted_versions"]:
                r = requests.get(f"{self.url}/services/{name}/{version}", headers=h, timeout=60)
                if r.status_code != 404:
                    found.append(f"{name}/{version}: deleted (200), GET answers {r.status_code}")
            if a["session"]:
                path = f"{self.url}/sessions/{a['session']}"
                r = requests.post(f"{path}/execute", json={"code": "", "outputParameters": ["n"]}, headers=h,
                                  timeout=120)
                n = next((p["value"] for p in (r.json().get("outputParameters") or []) if p["name"] == "n"),
                         None) if r.status_code == 200 else None
                want = [a["n"], a["n"] + 1] if a["n_uncertain"] else [a["n"]]
                if n not in want:
                    found.append(f"{name}: its session holds n={n} ({r.status_code}), the last execute acknowledged "
                                 f"n={a['n']}")
                if requests.delete(path, headers=h, timeout=60).status_code != 200:
                    found.append(f"{name}: closing its session failed")
                else:
                    a["closed_sessions"].append(a["session"])
        for account in ACCOUNTS["author"]:
            mine = [a for a in authors if a["account"] == account]
            h = tokens[account]
            snaps = {x["id"] for x in requests.get(f"{self.url}/snapshots", headers=h, timeout=60).json()}
            sessions = {x["id"] for x in requests.get(f"{self.url}/sessions", headers=h, timeout=60).json()}
            for a in mine:
                for s in a["snapshots"]:
                    if s["id"] not in snaps:
                        found.append(f"{a['name']}: snapshot {s['id']} created (201) but not listed")
                for sid in a["deleted_snapshots"]:
                    if sid in snaps:
                        found.append(f"{a['name']}: snapshot {sid} deleted (200) but still listed")
                for sid in a["closed_sessions"]:
                    if sid in sessions:
                        found.append(f"{a['name']}: session {sid} closed (200) but still listed")
        found += self._check_shared()
        kept = sum(len(a["versions"]) for a in authors)
        self.check("no update lost", not found,
                   f"{len(authors)} authors: {kept} services, {sum(len(a['snapshots']) for a in authors)} snapshots "
                   f"and {sum(bool(a['session']) for a in authors)} sessions checked against the last acknowledged "
                   f"write; {len(self.journal['shared_patches'])} concurrent PATCHes of the shared service",
                   found)
        r = requests.get(f"{self.url}/status", headers=self.admin, timeout=60)
        self.server_counts = r.json()["components"]["backends"]["details"] if r.status_code == 200 else {}

    def _check_shared(self) -> list[str]:
        """The shared service's description is the last acknowledged PATCH's (one no other
        acknowledged PATCH began after), or one whose outcome is unknown; never a refused one."""
        patches = self.journal["shared_patches"]
        acked = [p for p in patches if p["status"] == 200]
        unknown = [p for p in patches if p["status"] not in (200, 409)]
        allowed = {p["description"] for p in acked if not any(q["start"] > p["end"] for q in acked)}
        allowed |= {p["description"] for p in unknown}
        if not acked:
            allowed.add(SHARED["description"])
        r = requests.get(f"{self.url}/services/{SHARED['name']}/{SHARED['version']}", headers=self.admin, timeout=60)
        final = r.json()[0]["description"] if r.status_code == 200 else f"<{r.status_code}>"
        if final in allowed:
            return []
        refused = any(p["description"] == final and p["status"] == 409 for p in patches)
        return [f"{SHARED['name']}: description {final!r} is " + ("from a PATCH answered 409" if refused else
                "not the last acknowledged one") + f" (allowed: {sorted(allowed)[:5]})"]

    # --- the end ------------------------------------------------------------------------------------
    def shut_down(self) -> None:
        """Everything it started, in order, whatever happened; then what is left of the run."""
        if self.locust is not None and self.locust.poll() is None:
            self.locust.send_signal(signal.SIGTERM)  # locust writes its journal and exits
            _wait(self.locust, 30)
        self.phase = "stop"
        host_stopped = True
        if self.host is not None and self.host.poll() is None:
            self.host.send_signal(signal.SIGTERM)  # as a process manager stops `make run`
            host_stopped = _wait(self.host, 30)
        self.sampler.stop()  # after the host: its workers' last moments are sampled too
        stop(self.azurite)
        if not self.sampler.seen:
            return
        left = self.sampler.leftovers(within=15)
        folders = [self.sampler.folder_story(f) for f in glob.glob(str(self.tmp / "o16n-*" / "host-*" / "w-*"))]
        self.stopped_at = time.monotonic()
        self.check("nothing left running", host_stopped and not left and not folders,
                   f"{len(self.sampler.seen)} processes of the run (host, templates, workers, Azurite, locust) "
                   "ended after SIGTERM; no worker folder left",
                   ([] if host_stopped else ["the host did not stop within 30 s of SIGTERM (killed)"])
                   + [f"pid {pid} still running: {what}" for pid, what in left]
                   + [f"worker folder left: {f}" for f in folders])
        for pid, _ in left:  # the run's own processes only, by pid
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def check(self, name: str, ok: bool, detail: str, found: list[str] | None = None) -> None:
        self.checks.append({"check": name, "ok": ok, "detail": detail, "found": (found or [])[:50]})

    def failed(self, why: str) -> None:
        self.check("the soak ran", False, why)

    def report(self) -> int:
        j = self.journal
        kinds = {}
        for kind, values in sorted(j.get("latencies", {}).items()):
            values = sorted(values)
            errors = sum(1 for p in j["problems"] if p["kind"] == kind)
            kinds[kind] = {"requests": len(values), "errors": errors, "p50_ms": _pct(values, 50),
                           "p99_ms": _pct(values, 99), "max_ms": values[-1] if values else None,
                           "statuses": dict(sorted(j["statuses"].get(kind, {}).items()))}
        requests_total = sum(k["requests"] for k in kinds.values())
        if j:
            self.check("every answer expected", not j["problems"],
                       f"{requests_total} answers checked for status and content (never 500; 409 only for "
                       f"concurrent PATCHes of one service; 429 only for logins racing, 503 only for a busy "
                       f"worker or storage missing its deadline, both with Retry-After)", _grouped(j["problems"]))
        memory = self.sampler.judge()
        wall = time.monotonic() - self.started
        result = {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()},
            "users": self.args.users, "load_seconds": round(self.load_seconds, 1), "wall_seconds": round(wall, 1),
            "requests": requests_total, "errors": len(j.get("problems", [])),
            "requests_per_second": round(requests_total / self.load_seconds, 1) if self.load_seconds else None,
            "refused_under_load": dict(j.get("notes", {})),
            "kinds": kinds, "memory": memory, "cpu_seconds": self.sampler.cpu_seconds(),
            "server": self.server_counts,
            "settings": {k: getattr(self.settings, k) for k in (
                "worker_memory_mb", "warm_services_mb", "max_warm_services", "max_workers_per_service",
                "max_warm_sessions", "spare_workers", "worker_templates", "max_request_bytes",
                "service_cache_ttl_seconds", "execution_timeout_seconds")},
            "checks": self.checks, "interrupted": self.interrupted,
        }
        ok = all(c["ok"] for c in self.checks) and not self.interrupted and bool(j)
        result["ok"] = ok
        if j and not self.interrupted:
            Path(self.args.json).write_text(json.dumps(result, indent=1) + "\n")
        _print(result)
        if ok and not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print(f"run folder kept: {self.dir} (host.log, locust.out, journal.json)")
        return 130 if self.interrupted else (0 if ok else 1)


class Sampler:
    """Memory of the host's process tree, every SAMPLE_SECONDS, from /proc: the host, its
    templates and its workers (a worker with everything it started). A warm service worker is
    told by the marker its initCode leaves in its folder; other workers serve sessions or wait
    as spares. /status gives the pools' own counts."""

    def __init__(self, soak: Soak) -> None:
        self.soak = soak
        self.samples: list[dict] = []
        self.seen: dict[int, tuple[str, str]] = {}  # pid -> (its start time, what it was)
        self.worst_worker = (0, "")
        self._memo: dict[int, tuple[float, int, int, int]] = {}  # pid -> (read at, RSS, PSS, page tables)
        self.cpu: dict[int, tuple[str, int]] = {}  # pid -> (what it was, CPU ticks it used)
        self.folders: dict[str, list] = {}  # a worker's folder -> [its pid, first and last seen]
        self.status: list[dict] = []
        self.rest: dict | None = None  # the sample at rest, and /status's pools then
        self.rest_pools: dict = {}
        self.host_start = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def mark_start(self) -> None:
        self.host_start = self.samples[-1]["host"] if self.samples else 0

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def remember(self, pid: int, what: str) -> None:
        start = _start_time(pid)
        if start and pid not in self.seen:
            self.seen[pid] = (start, what)

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            try:
                self._sample(tick % 4 == 0 and hasattr(self.soak, "admin"))
            except Exception as exc:  # noqa: BLE001 - a sampler that dies silently would pass anything
                self.soak.failed(f"memory sampler: {exc!r}")
                return
            tick += 1
            self._stop.wait(SAMPLE_SECONDS)

    def _sample(self, with_status: bool) -> None:
        host = self.soak.host.pid
        children: dict[int, list[int]] = {}
        ticks: dict[int, int] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                fields = _stat_fields(int(name))
                if fields:
                    children.setdefault(int(fields[1]), []).append(int(name))
                    ticks[int(name)] = int(fields[11]) + int(fields[12])  # utime + stime
        for pid, (_, what) in self.seen.items():
            if pid in ticks:  # the last figure of a process is what it used (within SAMPLE_SECONDS)
                self.cpu[pid] = (what, ticks[pid])
        templates, workers = [], []
        for pid in children.get(host, []):
            (templates if b"--template" in _cmdline(pid) else workers).append(pid)
        for t in templates:
            workers += children.get(t, [])
        for pid in templates:
            self.remember(pid, "template")
        s = {"t": time.monotonic(), "phase": self.soak.phase, "host": self.memory(host)[0],
             "n_templates": len(templates),
             "templates": sum(self.memory(p)[0] for p in templates),
             "services": 0, "n_services": 0, "services_pss": 0, "others": 0, "n_others": 0,
             "azurite": sum(_rss(p.pid) for p in self.soak.azurite)}
        for w in workers:
            tree = _subtree(w, children)
            for pid in tree:
                self.remember(pid, "worker" if pid == w else "worker's child")
            held = sum(sum(self.memory(p)) for p in tree)
            if held > self.worst_worker[0]:
                self.worst_worker = (held, f"pid {w}")
            try:
                folder = os.readlink(f"/proc/{w}/cwd")
                self.folders.setdefault(folder, [w, s["t"], 0.0])[2] = s["t"]
            except OSError:
                pass
            kind = "services" if os.path.exists(f"/proc/{w}/cwd/.soak-service") else "others"
            s[kind] += held
            if kind == "services":  # what WARM_SERVICES_MB bounds: its leader's PSS, as the host counts it
                s["services_pss"] += self.memory(w)[0]
            s["n_" + kind] += 1
        s["tree"] = s["host"] + s["templates"] + s["services"] + s["others"]
        self._memo = {pid: m for pid, m in self._memo.items() if pid in ticks}
        if with_status:
            try:
                r = requests.get(f"{self.soak.url}/status", headers=self.soak.admin, timeout=10)
                d = r.json()["components"]["backends"]["details"]
                self.status.append({"t": s["t"], "services": d["warmServiceWorkers"],
                                    "sessions": d["warmSessionWorkers"]})
            except (requests.RequestException, ValueError, KeyError, AttributeError):
                pass  # busy or not logged in yet: the next one
        self.samples.append(s)

    def progress(self) -> str:
        s = self.samples[-1] if self.samples else {}
        return (f"{time.monotonic() - self.soak.started:5.0f} s: host {s.get('host', 0) / MB:.0f} MB, "
                f"{s.get('n_services', 0)} service workers {s.get('services', 0) / MB:.0f} MB, "
                f"{s.get('n_others', 0)} other workers {s.get('others', 0) / MB:.0f} MB, "
                f"templates {s.get('templates', 0) / MB:.0f} MB")

    def memory(self, pid: int) -> tuple[int, int]:
        """PSS and page tables (see _memory). smaps_rollup walks the whole address space (~4 ms
        for a worker with scikit-learn imported, so ~0.1 s a sample for all of them), so it is
        read again only when the RSS moved by MEMO_BYTES or after MEMO_SECONDS."""
        now, rss = time.monotonic(), _rss(pid)
        memo = self._memo.get(pid)
        if memo is None or abs(rss - memo[1]) >= MEMO_BYTES or now - memo[0] > MEMO_SECONDS:
            pss, pte = _memory(pid)
            memo = self._memo[pid] = (now, rss, pss, pte)
        return memo[2], memo[3]

    def cpu_seconds(self) -> dict[str, float]:
        """CPU used by each part of the run, from its processes' last samples: the cost of the
        load, and of watching it (the soak itself)."""
        out: dict[str, float] = {}
        for what, used in self.cpu.values():
            what = {"worker's child": "workers", "worker": "workers", "template": "workers"}.get(what, what)
            out[what] = out.get(what, 0.0) + used / _TICKS
        self_usage = resource.getrusage(resource.RUSAGE_SELF)
        out["soak (sampling, checks)"] = self_usage.ru_utime + self_usage.ru_stime
        return {k: round(v, 1) for k, v in sorted(out.items())}

    def folder_story(self, folder: str) -> str:
        """What is known of the worker whose folder was left."""
        pid, first, last = self.folders.get(folder, [None, 0.0, 0.0])
        marker = " (a service worker)" if os.path.exists(os.path.join(folder, ".soak-service")) else ""
        if pid is None:
            return f"{folder}{marker}: no sample saw its worker"
        phases = [s["phase"] for s in self.samples if s["t"] == last]
        return (f"{folder}{marker}: worker pid {pid}, seen from {first - self.soak.started:.1f} s to "
                f"{last - self.soak.started:.1f} s ({phases[0] if phases else '?'} phase), "
                f"{time.monotonic() - last:.1f} s before now")

    def leftovers(self, within: float) -> list[tuple[int, str]]:
        """Processes of the run still alive: every one seen in the host's tree (or started by the
        soak), and any whose command line names the run's folder (Azurite's data, the workers')."""
        deadline = time.monotonic() + within
        while True:
            left = [(pid, what) for pid, (start, what) in self.seen.items() if _start_time(pid) == start]
            marker = str(self.soak.dir).encode()
            left += [(int(p), "names the run's folder") for p in os.listdir("/proc") if p.isdigit()
                     and int(p) != os.getpid() and int(p) not in self.seen and marker in _cmdline(int(p))]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)

    def at_rest(self) -> None:
        """Once nothing is in flight (the load and the checks are over, every session closed) and
        the host has trimmed its pools (every second): one sample and /status, held to the
        bounds exactly. During the load a worker in a call is never retired, so the pools may
        pass MAX_WARM_SERVICES and WARM_SERVICES_MB by the workers busy at the time."""
        time.sleep(GRACE_SECONDS)
        after = time.monotonic()
        while not any(s["t"] > after for s in self.samples) and self._thread.is_alive():
            time.sleep(0.1)
        self.rest = next((s for s in self.samples if s["t"] > after), None)
        r = requests.get(f"{self.soak.url}/status", headers=self.soak.admin, timeout=60)
        self.rest_pools = r.json()["components"]["backends"]["details"]

    def judge(self) -> dict:
        """Peaks, and the bounds the settings imply, as checks."""
        st, soak = self.soak.settings, self.soak
        peak = {k: max((s[k] for s in self.samples), default=0) for k in (
            "host", "templates", "services", "n_services", "others", "n_others", "tree", "azurite")}
        host_bound = self.host_start + HOST_THREADS * st.max_request_bytes + SCRYPT_THREADS * SCRYPT_BYTES
        worker_bound = st.worker_memory_mb * MB
        services_bound = st.warm_services_mb * MB
        service_count = st.max_warm_services * st.max_workers_per_service
        in_flight = soak.args.users + 1  # a user has one request in flight at most; the sampler's /status
        tree_bound = (host_bound + (st.worker_templates + st.spare_workers + st.max_warm_sessions) * worker_bound
                      + (services_bound or service_count * worker_bound) + in_flight * worker_bound)
        over_count = sum(SAMPLE_SECONDS for s in self.samples if s["n_services"] > service_count)
        over_budget = sum(SAMPLE_SECONDS for s in self.samples if services_bound and s["services_pss"] > services_bound)
        load = [s for s in self.samples if s["phase"] == "load"]
        quarter = len(load) // 4
        floors = [min(s["host"] for s in part) for part in (load[2 * quarter:3 * quarter], load[3 * quarter:]) if part]
        growth = floors[1] - floors[0] if len(floors) == 2 else 0
        top = max(self.samples, key=lambda s: s["host"], default={"phase": "-", "t": 0})
        found = []
        if peak["host"] > host_bound:
            found.append(f"host {peak['host'] / MB:.0f} MB > {host_bound / MB:.0f} MB (its size at start, "
                         f"{HOST_THREADS} threads x MAX_REQUEST_BYTES and {SCRYPT_THREADS} logins' scrypt)")
        if growth > LEAK_MB * MB:
            found.append(f"the host's floor rose {growth / MB:.0f} MB from the third to the last quarter of the load "
                         f"(more than {LEAK_MB} MB): a leak?")
        if self.worst_worker[0] > worker_bound:
            found.append(f"a worker ({self.worst_worker[1]}) held {self.worst_worker[0] / MB:.0f} MB > "
                         f"WORKER_MEMORY_MB {st.worker_memory_mb}")
        if peak["n_services"] > service_count + in_flight:
            found.append(f"{peak['n_services']} warm service workers: more than MAX_WARM_SERVICES x "
                         f"MAX_WORKERS_PER_SERVICE ({service_count}) + one per request in flight ({in_flight})")
        pools = [s for s in self.status if s["services"] > service_count + in_flight
                 or s["sessions"] > st.max_warm_sessions + in_flight]
        if pools:
            found.append(f"/status counted {pools[0]['services']} service and {pools[0]['sessions']} session workers")
        if peak["tree"] > tree_bound:
            found.append(f"host and workers {peak['tree'] / MB:.0f} MB > {tree_bound / MB:.0f} MB")
        rest, at_rest = self.rest, self.rest_pools
        if rest is not None:
            if rest["n_services"] > service_count or (services_bound and rest["services_pss"] > services_bound):
                found.append(f"at rest: {rest['n_services']} warm service workers holding "
                             f"{rest['services_pss'] / MB:.0f} MB "
                             f"(MAX_WARM_SERVICES x MAX_WORKERS_PER_SERVICE {service_count}, WARM_SERVICES_MB "
                             f"{st.warm_services_mb})")
            if rest["n_others"] > st.spare_workers:
                found.append(f"at rest, every session closed: {rest['n_others']} other workers (SPARE_WORKERS "
                             f"{st.spare_workers})")
            if rest["n_templates"] > st.worker_templates:
                found.append(f"at rest: {rest['n_templates']} templates (WORKER_TEMPLATES {st.worker_templates})")
            if at_rest.get("warmSessionWorkers") or at_rest.get("warmServiceWorkers", 0) > service_count:
                found.append(f"at rest, /status counts {at_rest.get('warmServiceWorkers')} service and "
                             f"{at_rest.get('warmSessionWorkers')} session workers (every session closed)")
        elif soak.journal and not soak.interrupted:
            found.append("no sample at rest")
        soak.check("memory within bounds", not found,
                   f"{len(self.samples)} samples of /proc every {SAMPLE_SECONDS} s: the host and each worker within "
                   "their bounds throughout; the pools within theirs once at rest (in the load, plus the workers busy)",
                   found)
        return {
            "host_start_mb": _mb(self.host_start), "host_peak_mb": _mb(peak["host"]),
            "host_peak_when": f"{top['phase']} phase, {top['t'] - soak.started:.0f} s in",
            "host_end_of_load_mb": _mb(load[-1]["host"]) if load else None, "host_bound_mb": _mb(host_bound),
            "host_floor_growth_last_quarter_mb": _mb(growth),
            "worker_peak_mb": _mb(self.worst_worker[0]), "worker_bound_mb": st.worker_memory_mb,
            "service_workers_peak_mb": _mb(peak["services"]), "service_workers_peak_count": peak["n_services"],
            "service_workers_bound_mb": st.warm_services_mb, "service_workers_bound_count": service_count,
            "seconds_over_service_count": over_count, "seconds_over_service_budget": over_budget,
            "service_workers_at_rest": [rest["n_services"], _mb(rest["services_pss"])] if rest else None,
            "other_workers_peak_mb": _mb(peak["others"]), "other_workers_peak_count": peak["n_others"],
            "templates_peak_mb": _mb(peak["templates"]), "tree_peak_mb": _mb(peak["tree"]),
            "tree_bound_mb": _mb(tree_bound), "azurite_peak_mb": _mb(peak["azurite"]),
            "pools_peak": {"services": max((s["services"] for s in self.status), default=None),
                           "sessions": max((s["sessions"] for s in self.status), default=None)},
        }


def _grouped(problems: list[dict]) -> list[str]:
    """Alike problems once, with their count, most frequent first."""
    groups: dict[str, list[dict]] = {}
    for p in problems:
        try:
            body = json.loads(p["body"])
            said = body.get("errorMessage") or body.get("message") or "" if isinstance(body, dict) else ""
        except ValueError:
            said = p["body"][:100]
        groups.setdefault(f"{p['kind']}: {p['why']}" + (f": {said[:160]}" if said else ""), []).append(p)
    return [f"{len(g)} x {k} (e.g. {g[0]['path']})" for k, g in sorted(groups.items(), key=lambda kv: -len(kv[1]))]


def _subtree(root: int, children: dict[int, list[int]]) -> list[int]:
    out = [root]
    for pid in out:
        out += children.get(pid, [])
    return out


def _stat_fields(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return []


def _start_time(pid: int) -> str:
    fields = _stat_fields(pid)
    return fields[19].decode() if fields else ""


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _memory(pid: int) -> tuple[int, int]:
    """PSS (shared pages split among their sharers, so sums are true totals) and the page
    tables (kernel memory PSS leaves out; the host charges them to workers too)."""
    pss = pte = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    pss = int(line.split()[1]) * 1024
                    break
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmPTE:"):
                    pte = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    return pss, pte


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, max(0, round(p / 100 * len(values) + 0.5) - 1))]


def _mb(n: float) -> float:
    return round(n / MB, 1)


def _wait(proc: subprocess.Popen, seconds: float) -> bool:
    try:
        proc.wait(timeout=seconds)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False


def _print(r: dict) -> None:
    print(f"\nsoak: {r['users']} users, {r['load_seconds']} s of load ({r['wall_seconds']} s in all), "
          f"{r['requests']} requests ({r['requests_per_second']}/s), {r['errors']} unexpected answers")
    if r["kinds"]:
        print(f"{'kind':<16}{'requests':>9}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}  statuses")
    for kind, k in r["kinds"].items():
        print(f"{kind:<16}{k['requests']:>9}{k['errors']:>8}{_f(k['p50_ms']):>9}{_f(k['p99_ms']):>9}"
              f"{_f(k['max_ms']):>9}  " + " ".join(f"{s}:{n}" for s, n in k["statuses"].items()))
    m = r["memory"]
    print(f"memory (PSS): host {m['host_start_mb']} MB at start, {m['host_end_of_load_mb']} MB at the end of the "
          f"load, peak {m['host_peak_mb']} MB ({m['host_peak_when']}; bound {m['host_bound_mb']}); "
          f"warm service workers peak {m['service_workers_peak_mb']} MB in {m['service_workers_peak_count']} "
          f"(WARM_SERVICES_MB {m['service_workers_bound_mb']} passed for {m['seconds_over_service_budget']} s and "
          f"{m['service_workers_bound_count']} workers for {m['seconds_over_service_count']} s while busy; at rest "
          f"{m['service_workers_at_rest']} [workers, MB]); "
          f"largest worker {m['worker_peak_mb']} MB "
          f"(WORKER_MEMORY_MB {m['worker_bound_mb']}); templates {m['templates_peak_mb']} MB; "
          f"host + workers peak {m['tree_peak_mb']} MB; Azurite {m['azurite_peak_mb']} MB (RSS); the host's floor "
          f"rose {m['host_floor_growth_last_quarter_mb']} MB over the last quarter")
    print("CPU seconds: " + ", ".join(f"{k} {v}" for k, v in r["cpu_seconds"].items()))
    if r["server"]:
        print(f"pools (/status at the end): services {r['server'].get('serviceWorkers')}, "
              f"sessions {r['server'].get('sessionWorkers')}")
    if r["refused_under_load"]:
        print("counted, expected: " + ", ".join(f"{k}: {v}" for k, v in r["refused_under_load"].items()))
    for c in r["checks"]:
        print(f"{'ok  ' if c['ok'] else 'FAIL'} {c['check']}: {c['detail']}")
        for f in c["found"][:10]:
            print(f"       {f}")
    print("soak interrupted: no figures written" if r["interrupted"] else "soak passed" if r["ok"] else "soak FAILED")


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


if __name__ == "__main__":
    sys.exit(main())
