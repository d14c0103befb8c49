"""Index a FunctionApp the way the Functions worker does and serve it as an ASGI app."""
from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl, unquote

import azure.functions as func

_CONSTRAINTS = {"int": r"-?\d+", "alpha": r"[A-Za-z]+", "bool": r"(?i:true|false)",
                "guid": r"[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}"}


@dataclass
class Route:
    rank: tuple[int, ...]
    regex: re.Pattern[str]
    methods: frozenset[str]
    trigger: str
    name: str
    fn: Callable[..., Any]
    #: the first path segment when it is a literal (lower case), else None
    first: str | None = None


def compile_route(template: str) -> tuple[re.Pattern[str], tuple[int, ...]]:
    """ASP.NET-style templates: literals, {x}, {x?}, {x:int}, {*rest}; literals match case-insensitively."""
    parts, rank = [], []
    for seg in [s for s in template.strip("/").split("/") if s]:
        m = re.fullmatch(r"\{(\*{1,2})?([A-Za-z_]\w*)(?::([a-z]+)(?:\((.*)\))?)?(\?)?\}", seg)
        if not m:
            parts.append("/" + re.escape(seg))
            rank.append(0)
            continue
        star, name, cons, arg, opt = m.groups()
        if star:
            parts.append(f"(?:/(?P<{name}>.*))?")
            rank.append(4)
            continue
        pat = arg if cons == "regex" else _length(cons, arg) or _CONSTRAINTS.get(cons or "", "[^/]+")
        parts.append(f"(?:/(?P<{name}>{pat}))?" if opt else f"/(?P<{name}>{pat})")
        rank.append(1 if cons else (3 if opt else 2))
    return re.compile("(?i)^" + "".join(parts) + r"/?\Z"), tuple(rank)


def _length(cons: str | None, arg: str | None) -> str | None:
    """ASP.NET's length constraints as a segment pattern. A segment is never empty, so
    maxlength(0) matches none: an optional parameter with it matches only its absence (the root)."""
    if cons not in ("maxlength", "minlength", "length") or not arg:
        return None
    bounds = [int(x) for x in arg.split(",")]
    if cons == "maxlength":
        low, high = 1, bounds[0]
    elif cons == "minlength":
        low, high = max(bounds[0], 1), None
    else:  # length(n) or length(min,max)
        low, high = max(bounds[0], 1), bounds[-1]
    if high is not None and high < low:
        return "(?!)"
    return f"[^/]{{{low},{'' if high is None else high}}}"


def index(app: func.FunctionApp, route_prefix: str = "") -> list[Route]:
    """The HTTP functions of `app`, most specific route first. Fails like the worker would
    on a handler whose parameters do not match its bindings."""
    app.functions_bindings = None  # get_functions() is not idempotent
    routes = []
    for f in app.get_functions():
        trigger = f.get_trigger()
        if not f.is_http_function():
            continue
        fn = f.get_user_function()
        params = set(inspect.signature(fn).parameters)
        extra = params - {trigger.name, "context"}
        if extra:
            raise RuntimeError(f"{f.get_function_name()}: parameters {sorted(extra)} are declared in Python "
                               "but not in the function definition")
        template = "/".join(p for p in (route_prefix.strip("/"), trigger.route.strip("/")) if p)
        if template.lower().startswith("admin"):
            raise RuntimeError(f"{f.get_function_name()}: routes starting with 'admin' are reserved by the host")
        regex, rank = compile_route(template)
        methods = frozenset(m.value for m in (trigger.methods or []))
        head = template.split("/", 1)[0]
        first = head.lower() if rank and rank[0] == 0 else None
        routes.append(Route(rank, regex, methods, trigger.name, f.get_function_name(), fn, first))
    routes.sort(key=lambda r: r.rank)
    return routes


def route_value(raw: str) -> str:
    """A route value as ASP.NET gives it: percent-decoded once, but an encoded '/' stays '%2F'."""
    return unquote(re.sub(r"%(2[Ff])", r"%25\1", raw))


def worker_threads() -> int:
    """The sync handlers' thread pool, sized as the Python worker sizes it."""
    configured = os.environ.get("PYTHON_THREADPOOL_THREAD_COUNT", "")
    return int(configured) if configured.isdigit() and int(configured) > 0 else min(32, (os.cpu_count() or 1) + 4)


def route_prefix_of(host_json: Path) -> str:
    try:
        return json.loads(host_json.read_text())["extensions"]["http"]["routePrefix"]
    except (OSError, KeyError, ValueError):
        return "api"


class FunctionHost:
    """ASGI callable serving the indexed functions. Sync handlers run in a thread pool, as
    the Python worker runs them."""

    def __init__(self, app: func.FunctionApp, *, route_prefix: str = "", threads: int | None = None,
                 max_body_bytes: int = 100 * 1024 * 1024) -> None:
        self.routes = index(app, route_prefix)
        # Candidates by first segment, in rank order: a lookup, not a scan of every route.
        wild = [r for r in self.routes if r.first is None]
        self._by_first: dict[str, list[Route]] = {}
        for r in self.routes:
            if r.first is not None:
                self._by_first.setdefault(r.first, []).append(r)
        self._by_first = {k: v + wild for k, v in self._by_first.items()}
        self._wild = wild
        self.max_body_bytes = max_body_bytes  # Azure Functions' own limit is 100 MB
        self.executor = ThreadPoolExecutor(max_workers=threads or worker_threads(), thread_name_prefix="fn")
        #: called at the lifespan's shutdown, before the thread pool is shut down
        self.on_shutdown: list[Callable[[], None]] = []

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        first = path.lstrip("/").split("/", 1)[0].lower()
        for r in self._by_first.get(first, self._wild):
            m = r.regex.match(path)
            # Azure answers 404, not 405, when only the method differs.
            if m and (not r.methods or method in r.methods):
                return r, {k: route_value(v) for k, v in m.groupdict().items() if v is not None}
        return None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    for hook in self.on_shutdown:
                        hook()
                    self.executor.shutdown(wait=False, cancel_futures=True)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        # Like Azure's front end, refuse a body over the limit without holding all of it in memory.
        chunks, size, limit = [], 0, self.max_body_bytes
        while True:
            msg = await receive()
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _send(send, 413, [(b"content-type", b"application/json")],
                            b'{"message":"the request body is too large","error":"payload_too_large"}')
                return
            chunks.append(chunk)
            if not msg.get("more_body"):
                break
        body = b"".join(chunks)
        method = scope["method"].upper()
        # Matched on the path as sent (uvicorn's `path` is decoded already): values are decoded once.
        raw_path = scope.get("raw_path")
        found = self.match(method, raw_path.decode("latin-1") if raw_path else scope["path"])
        if found is None:
            await _send(send, 404, [(b"content-type", b"text/plain")], b"")
            return
        r, route_params = found
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:
            key = k.decode("latin-1").lower()
            headers[key] = f"{headers[key]},{v.decode('latin-1')}" if key in headers else v.decode("latin-1")
        # As Azure's front end does: the caller's address is appended, so the last entry is true.
        client = (scope.get("client") or ("unknown", 0))[0]
        xff = headers.get("x-forwarded-for")
        headers["x-forwarded-for"] = f"{xff}, {client}" if xff else client
        params: dict[str, str] = {}
        for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
            params[k] = f"{params[k]},{v}" if k in params else v
        host = headers.get("host", "localhost")
        qs = scope.get("query_string", b"").decode("latin-1")
        url = f"{scope.get('scheme', 'http')}://{host}{scope.get('raw_path', b'').decode('latin-1') or scope['path']}"
        if qs and "?" not in url:
            url += "?" + qs
        req = func.HttpRequest(method, url, headers=headers, params=params, route_params=route_params, body=body)
        loop = asyncio.get_running_loop()
        try:
            if inspect.iscoroutinefunction(r.fn):  # as the Python worker does: on the event loop
                out = await r.fn(**{r.trigger: req})
            else:
                out = await loop.run_in_executor(self.executor, lambda: r.fn(**{r.trigger: req}))
                if inspect.isawaitable(out):
                    out = await out
        except Exception:  # noqa: BLE001 - Azure answers a bare 500 for an unhandled exception
            await _send(send, 500, [], b"")
            return
        if isinstance(out, str):
            out = func.HttpResponse(out)
        if out is None:
            await _send(send, 204, [], b"")
            return
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out.headers.items()]
        if not any(k.lower() == b"content-type" for k, _ in raw):
            ctype = out.mimetype + (f"; charset={out.charset}" if out.mimetype.startswith("text/") else "")
            raw.append((b"content-type", ctype.encode()))
        await _send(send, out.status_code, raw, out.get_body())


async def _send(send: Callable, status: int, headers: list, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": headers + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
