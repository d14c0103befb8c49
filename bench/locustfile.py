"""The users of `make soak` (bench/soak.py starts the app and runs this with locust, headless).

Each user checks every answer as it comes (status and content) and remembers what the server
acknowledged, so that bench/soak.py can check afterwards that nothing acknowledged was lost.
Three kinds of users, on the accounts soak.py configured (SOAK_CONFIG, JSON):

- Author (Contributor): its own session (`n = n + 1`, so a lost workspace shows as a wrong n),
  snapshots, services `soak-a<i>/v0` (kept) and `v<k>` (at most two kept: older ones deleted),
  PATCHes of their descriptions and workspaces, lists, swagger; mostly it consumes its services
  and the shared one (the hot path).
- Operator (Owner): PATCHes the shared service's description at the same time as the other
  operators (409 is the server's optimistic concurrency at work), consumes and lists.
- Reader: consumes and lists, and is refused what a Reader may not do (403).

Services compute `y = n * 1000 + x` from the `n` of the snapshot they were published from, so
each consume says whether it ran the workspace the service was last given.

Outcomes are written to SOAK_CONFIG's `journal` when locust quits.
"""
from __future__ import annotations

import itertools
import json
import os
import random
import time
from collections import Counter, defaultdict

from locust import FastHttpUser, between, events, task

CONF = json.loads(os.environ["SOAK_CONFIG"])
SHARED = CONF["shared"]  # {"name", "version", "n", "description", "owner"}
#: how long a consume may still see a service's previous workspace after a PATCH answered
#: (SERVICE_CACHE_TTL_SECONDS: the documented staleness across instances), plus clock slack
STALE_SECONDS = CONF["cache_ttl_seconds"] + 1.0
MAX_ROLLING = 2  # versions v1.. kept per author beyond v0
MAX_SNAPSHOTS = 3  # snapshots kept per author

# What every user saw, for the journal.
latencies: dict[str, list[float]] = defaultdict(list)
statuses: dict[str, Counter] = defaultdict(Counter)
problems: list[dict] = []
notes: Counter = Counter()  # expected but worth counting: stale reads within the TTL, refusals
authors: list[dict] = []
shared_patches: list[dict] = []  # {description, start, end, status} of every PATCH of the shared service
_ids = itertools.count()

SERVICE_CODE = "y = n * 1000 + x"
# initCode runs once per worker load: the marker lets soak.py tell warm service workers from
# session workers in /proc (their folder is their working directory).
INIT_CODE = "open('.soak-service', 'w').close()"


def problem(user: "SoakUser", kind: str, why: str, status: int = 0, path: str = "", body: str = "") -> None:
    problems.append({"t": round(time.time(), 3), "user": user.label, "kind": kind, "status": status,
                     "path": path, "why": why, "body": (body or "")[:400]})


class Answer:
    def __init__(self, status: int, data: object, headers: dict[str, str]) -> None:
        self.status, self.data, self.headers = status, data, headers


class SoakUser(FastHttpUser):
    abstract = True
    wait_time = between(*CONF["wait"])
    network_timeout = 120.0  # above EXECUTION_TIMEOUT_SECONDS (60): a slow answer is still an answer
    connection_timeout = 30.0
    role = ""

    def on_start(self) -> None:
        self.index = next(_ids)
        names = CONF["accounts"][self.role]
        self.account = names[self.index % len(names)]
        self.password = CONF["passwords"][self.account]
        self.label = f"{self.role}{self.index}({self.account})"
        self.token = ""
        self.login()

    # --- requests -------------------------------------------------------------------------------
    def call(self, kind: str, method: str, path: str, *, body: object = None, expect: tuple[int, ...] = (200,),
             allow: tuple[int, ...] = (), auth: bool = True) -> Answer:
        """One request, timed and counted under `kind`. A status outside `expect` and `allow` is
        a problem, except 503 with Retry-After (the server refusing for now under load: the
        worker stayed busy 2 s, or storage missed its deadline), which is counted and waited out.
        Returns status 0 when there was no answer (timeout, connection cut)."""
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        started = time.perf_counter()
        with self.client.request(method, path, json=body, headers=headers, name=kind, catch_response=True) as r:
            elapsed = (time.perf_counter() - started) * 1000
            status = r.status_code or 0
            text = (r.text or "") if status else ""
            latencies[kind].append(round(elapsed, 2))
            statuses[kind][str(status)] += 1
            retry_after = (r.headers.get("Retry-After") if r.headers is not None else None) if status else None
            try:
                data = json.loads(text) if text else None
            except ValueError:
                data = None
            if status in expect or status in allow:
                r.success()
            elif status == 503 and retry_after:
                notes[f"503 {kind}"] += 1
                r.success()
            else:
                why = f"unexpected status {status}" if status else f"no answer: {getattr(r, 'error', '')!r}"
                problem(self, kind, why, status, path, text)
                r.failure(why)
        if status == 503 and retry_after:
            time.sleep(min(float(retry_after), 5.0))  # as a client should
        return Answer(status, data, {"Retry-After": retry_after} if retry_after else {})

    def check(self, kind: str, ok: bool, why: str, answer: Answer, path: str = "") -> bool:
        if not ok:
            problem(self, kind, why, answer.status, path, json.dumps(answer.data)[:400])
        return ok

    def login(self) -> None:
        """Logs in, trying again after a refusal for now. Every attempt is counted in Table
        storage, per name and per address, with conditional writes, and all of the soak's users
        come from 127.0.0.1 under five names, so simultaneous logins race for the same rows; one
        that keeps losing is answered 429 "at once" with Retry-After: expected under load, and
        counted. A lock-out (429 "failed logins") is not: every password here is right."""
        for _ in range(10):
            a = self.call("login", "POST", "/login", body={"username": self.account, "password": self.password},
                          allow=(429,), auth=False)
            message = a.data.get("message", "") if isinstance(a.data, dict) else ""
            if a.status == 429 and "at once" in message and a.headers.get("Retry-After"):
                notes["429 login (attempts racing to count)"] += 1
                time.sleep(min(float(a.headers["Retry-After"]), 5.0))
                continue
            if a.status == 429:
                problem(self, "login", "429 for a right password", a.status, "/login", json.dumps(a.data))
            if a.status == 503 and a.headers.get("Retry-After"):
                continue  # call() counted it and waited
            if a.status == 200 and self.check("login", isinstance(a.data, dict) and "access_token" in a.data,
                                              "no access_token", a):
                self.token = a.data["access_token"]
            return

    def consume(self, kind: str, name: str, version: str, accept: list[int], previous: int | None = None,
                changed_at: float = 0.0) -> None:
        """The answer must come from a workspace whose counter is in `accept` (two values after a
        write whose outcome is unknown); `previous`, for SERVICE_CACHE_TTL_SECONDS after
        `changed_at`, is tolerated and counted."""
        x = random.randint(0, 999)
        path = f"/api/{name}/{version}"
        a = self.call(kind, "POST", path, body={"x": x})
        if a.status != 200:
            return
        d = a.data if isinstance(a.data, dict) else {}
        outputs = d.get("outputParameters") or {}
        if not self.check(kind, d.get("success") is True and "y" in outputs, "the call did not succeed", a, path):
            return
        y = outputs["y"]
        if any(y == n * 1000 + x for n in accept):
            return
        if previous is not None and y == previous * 1000 + x and time.time() - changed_at <= STALE_SECONDS:
            notes["stale consume within SERVICE_CACHE_TTL_SECONDS"] += 1
            return
        self.check(kind, False, f"wrong answer: y={y} for x={x}: the workspace's n is none of {accept}"
                   f" (previous {previous})", a, path)

    def consume_shared(self) -> None:
        self.consume("consume", SHARED["name"], SHARED["version"], [SHARED["n"]])


class Author(SoakUser):
    """Sessions, snapshots, publish, patch, list, delete and consume of its own services."""
    weight = CONF["weights"]["author"]
    role = "author"

    def on_start(self) -> None:
        super().on_start()
        self.name = f"soak-a{self.index}"
        self.seq = 0
        #: what the server acknowledged; soak.py checks it against the server at the end
        self.state = {"account": self.account, "name": self.name, "session": None, "n": 0, "n_uncertain": False,
                      "closed_sessions": [], "snapshots": [], "deleted_snapshots": [], "versions": {},
                      "deleted_versions": [], "uncertain_versions": [], "uncertain_snapshots": []}
        self.next_version = 0
        authors.append(self.state)
        self.open_session(None)
        self.snapshot()
        if not (self.state["snapshots"] and self.state["snapshots"][-1]["n"] == 0):
            self.next_version = 1  # readers take v0 to hold n = 0: without that snapshot, no v0
        self.publish()

    # --- sessions ---------------------------------------------------------------------------------
    def open_session(self, snapshot: dict | None) -> None:
        body = {"name": f"{self.name}-session", "runtimeType": "Python"}
        if snapshot:
            body["snapshotId"] = snapshot["id"]
        a = self.call("session", "POST", "/sessions", body=body, expect=(201,))
        if a.status != 201 or not self.check("session", isinstance(a.data, dict) and "sessionId" in a.data,
                                             "no sessionId", a):
            self.state["session"] = None
            return
        self.state["session"] = a.data["sessionId"]
        if snapshot:
            self.state["n"], self.state["n_uncertain"] = snapshot["n"], False
        else:
            self.execute_code("n = 0", reset=True)

    def execute_code(self, code: str, *, reset: bool = False) -> None:
        s = self.state
        if not s["session"]:
            return self.open_session(None)
        path = f"/sessions/{s['session']}/execute"
        a = self.call("execute", "POST", path, body={"code": code, "outputParameters": ["n"]})
        if a.status != 200:
            s["n_uncertain"] = True  # it may have run and been saved, or not
            return
        d = a.data if isinstance(a.data, dict) else {}
        if not self.check("execute", d.get("success") is True, f"execute failed: {d.get('errorMessage', '')[:200]}",
                          a, path):
            s["n_uncertain"] = True
            return
        n = next((p.get("value") for p in d.get("outputParameters") or [] if p.get("name") == "n"), None)
        want = {0} if reset else ({s["n"] + 1, s["n"] + 2} if s["n_uncertain"] else {s["n"] + 1})
        if self.check("execute", n in want, f"lost session update: n={n}, expected {sorted(want)}", a, path):
            s["n"], s["n_uncertain"] = n, False
        else:
            s["n"], s["n_uncertain"] = (n if isinstance(n, int) else s["n"]), False

    @task(4)
    def execute(self) -> None:
        self.execute_code("n = n + 1")

    @task(1)
    def reopen_session(self) -> None:
        """Close the session and start a new one from the latest snapshot (its n goes on from there)."""
        s = self.state
        if not s["session"] or not s["snapshots"]:
            return
        a = self.call("session-close", "DELETE", f"/sessions/{s['session']}")
        if a.status == 200:
            s["closed_sessions"].append(s["session"])
        s["session"] = None
        self.open_session(s["snapshots"][-1])

    # --- snapshots --------------------------------------------------------------------------------
    @task(2)
    def snapshot(self) -> None:
        s = self.state
        if s["n_uncertain"]:
            self.execute_code("n = n + 1")  # learn n first: a snapshot must know what it holds
        if not s["session"] or s["n_uncertain"]:
            return
        self.seq += 1
        a = self.call("snapshot", "POST", f"/sessions/{s['session']}/snapshot",
                      body={"name": f"{self.name}-s{self.seq}"}, expect=(201,))
        if a.status == 201 and self.check("snapshot", isinstance(a.data, dict) and "snapshotId" in a.data,
                                          "no snapshotId", a):
            s["snapshots"].append({"id": a.data["snapshotId"], "n": s["n"]})
        elif a.status != 201:
            s["uncertain_snapshots"].append(f"{self.name}-s{self.seq}")
        while len(s["snapshots"]) > MAX_SNAPSHOTS:
            old = s["snapshots"][0]
            a = self.call("snapshot-delete", "DELETE", f"/snapshots/{old['id']}")
            if a.status != 200:
                break
            s["snapshots"].pop(0)
            s["deleted_snapshots"].append(old["id"])

    @task(1)
    def list_snapshots(self) -> None:
        s = self.state
        a = self.call("list", "GET", "/snapshots")
        if a.status != 200 or not self.check("list", isinstance(a.data, list), "not a list", a):
            return
        listed = {x.get("id") for x in a.data if isinstance(x, dict)}
        missing = [x["id"] for x in s["snapshots"] if x["id"] not in listed]
        back = [i for i in s["deleted_snapshots"] if i in listed]
        self.check("list", not missing and not back,
                   f"snapshots: created but not listed {missing}, deleted but listed {back}", a, "/snapshots")

    # --- services ---------------------------------------------------------------------------------
    def publish(self) -> None:
        s = self.state
        if not s["snapshots"]:
            return
        snap = s["snapshots"][-1]
        version = f"v{self.next_version}"
        self.next_version += 1
        body = {"code": SERVICE_CODE, "initCode": INIT_CODE, "runtimeType": "Python", "snapshotId": snap["id"],
                "description": f"{self.name} {version} published",
                "inputParameterDefinitions": [{"name": "x", "type": "integer"}],
                "outputParameterDefinitions": [{"name": "y", "type": "integer"}]}
        path = f"/services/{self.name}/{version}"
        a = self.call("publish", "POST", path, body=body, expect=(201,))
        if a.status == 201:
            self.check("publish", a.data == version, f"answered {a.data!r}, not the version", a, path)
            s["versions"][version] = {"n": [snap["n"]], "previous": None, "changed_at": 0.0,
                                      "description": body["description"], "descriptions": None}
        else:
            s["uncertain_versions"].append(version)
        rolling = [v for v in s["versions"] if v != "v0"]
        while len(rolling) > MAX_ROLLING:
            old = rolling.pop(0)
            a = self.call("delete", "DELETE", f"/services/{self.name}/{old}")
            if a.status == 200:
                s["deleted_versions"].append(old)
                del s["versions"][old]
            else:
                s["uncertain_versions"].append(old)
                del s["versions"][old]
                break

    @task(1)
    def publish_task(self) -> None:
        self.publish()

    @task(12)
    def consume_own(self) -> None:
        s = self.state
        if not s["versions"]:
            return
        version, v = random.choice(list(s["versions"].items()))
        self.consume("consume", self.name, version, v["n"], v["previous"], v["changed_at"])

    @task(6)
    def consume_shared_task(self) -> None:
        self.consume_shared()

    @task(2)
    def patch_description(self) -> None:
        s = self.state
        if not s["versions"]:
            return
        version, v = random.choice(list(s["versions"].items()))
        self.seq += 1
        description = f"{self.name} {version} d{self.seq}"
        a = self.call("patch", "PATCH", f"/services/{self.name}/{version}", body={"description": description})
        if a.status == 200:
            v["description"], v["descriptions"] = description, None
        else:  # unknown outcome: either is right
            v["descriptions"] = [v["description"], description]

    @task(1)
    def patch_snapshot(self) -> None:
        """A rolling version gets the latest snapshot's workspace: its next consume must use it."""
        s = self.state
        rolling = [k for k in s["versions"] if k != "v0"]
        if not rolling or not s["snapshots"]:
            return
        version = random.choice(rolling)
        v, snap = s["versions"][version], s["snapshots"][-1]
        a = self.call("patch", "PATCH", f"/services/{self.name}/{version}", body={"snapshotId": snap["id"]})
        if a.status == 200:
            v.update(previous=v["n"][0] if len(v["n"]) == 1 else None, n=[snap["n"]], changed_at=time.time())
        else:  # unknown outcome: either workspace is right from now on
            v.update(previous=None, n=sorted({*v["n"], snap["n"]}))

    @task(2)
    def list_mine(self) -> None:
        """GET /services/{name}: exactly the versions acknowledged, with their last descriptions."""
        s = self.state
        path = f"/services/{self.name}"
        a = self.call("list", "GET", path)
        if a.status != 200 or not self.check("list", isinstance(a.data, list), "not a list", a, path):
            return
        listed = {x.get("version"): x.get("description") for x in a.data if isinstance(x, dict)}
        vague = set(s["uncertain_versions"])
        missing = sorted(set(s["versions"]) - set(listed))
        extra = sorted(set(listed) - set(s["versions"]) - vague)
        stale = sorted(k for k, v in s["versions"].items() if k in listed
                       and listed[k] not in (v["descriptions"] or [v["description"]]))
        self.check("list", not (missing or extra or stale),
                   f"lost update: published but not listed {missing}, deleted but listed {extra}, "
                   f"description not the last one set {stale}", a, path)

    @task(1)
    def list_all(self) -> None:
        a = self.call("list", "GET", "/services")
        if a.status == 200 and self.check("list", isinstance(a.data, list), "not a list", a, "/services"):
            mine = {x.get("version") for x in a.data if isinstance(x, dict) and x.get("name") == self.name}
            missing = sorted(set(self.state["versions"]) - mine)
            self.check("list", not missing, f"published but not in GET /services: {missing}", a, "/services")

    @task(1)
    def swagger(self) -> None:
        if "v0" in self.state["versions"]:
            a = self.call("swagger", "GET", f"/api/{self.name}/v0/swagger.json")
            if a.status == 200:
                self.check("swagger", isinstance(a.data, dict) and "paths" in a.data, "not a swagger document", a)

    @task(1)
    def relogin(self) -> None:
        self.login()


class Operator(SoakUser):
    """Owners changing the one shared service at the same time."""
    weight = CONF["weights"]["operator"]
    role = "operator"

    @task(3)
    def patch_shared(self) -> None:
        description = f"op{self.index} {random.getrandbits(32):08x}"
        start = time.time()
        a = self.call("patch", "PATCH", f"/services/{SHARED['name']}/{SHARED['version']}",
                      body={"description": description}, allow=(409,))
        shared_patches.append({"description": description, "start": start, "end": time.time(), "status": a.status})

    @task(3)
    def consume_shared_task(self) -> None:
        self.consume_shared()

    @task(1)
    def get_shared(self) -> None:
        path = f"/services/{SHARED['name']}/{SHARED['version']}"
        a = self.call("list", "GET", path)
        if a.status == 200:
            self.check("list", isinstance(a.data, list) and len(a.data) == 1, "not one version", a, path)


class Reader(SoakUser):
    """Consumes what others published, lists, and is refused writes."""
    weight = CONF["weights"]["reader"]
    role = "reader"
    known: list[str] = []  # authors' names seen in GET /services (their v0 is never deleted)

    @task(4)
    def consume_shared_task(self) -> None:
        self.consume_shared()

    @task(3)
    def consume_v0(self) -> None:
        if self.known:  # v0 holds the workspace of n = 0: y = x
            self.consume("consume", random.choice(self.known), "v0", [0])

    @task(2)
    def list_all(self) -> None:
        a = self.call("list", "GET", "/services")
        if a.status == 200 and self.check("list", isinstance(a.data, list), "not a list", a, "/services"):
            Reader.known = sorted({x["name"] for x in a.data if isinstance(x, dict) and x.get("version") == "v0"
                                   and str(x.get("name", "")).startswith("soak-a")})

    @task(1)
    def refused(self) -> None:
        self.call("refused", "POST", f"/services/soak-r{self.index}/v1", expect=(403,),
                  body={"code": "y = 1", "runtimeType": "Python"})
        self.call("refused", "POST", "/sessions", expect=(403,), body={"runtimeType": "Python"})


@events.user_error.add_listener
def _on_user_error(user_instance, exception, tb, **kwargs) -> None:
    # A bug in this file must not pass for a clean run.
    problems.append({"t": round(time.time(), 3), "user": getattr(user_instance, "label", "?"), "kind": "locustfile",
                     "status": 0, "path": "", "why": f"the soak's own code failed: {exception!r}", "body": ""})


@events.quitting.add_listener
def _write_journal(environment, **kwargs) -> None:
    with open(CONF["journal"], "w") as f:
        json.dump({"latencies": latencies, "statuses": statuses, "problems": problems, "notes": notes,
                   "authors": authors, "shared_patches": shared_patches}, f)
