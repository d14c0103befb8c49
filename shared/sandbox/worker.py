"""The worker process: runs a session's or a service's user code. Started by the host with
`python -I worker.py POLICY_JSON CHANNEL_FD`, a scrubbed environment and its own working
directory; confines itself (`confine`) before anything else, then speaks framed JSON on the
channel socket, one reply per request, each echoing the request's id."""
from __future__ import annotations

import base64
import errno
import importlib.util
import io
import json
import os
import socket
import sys
import traceback
import zipfile
from typing import Any

WORKSPACE_ENTRY = "workspace.pkl"  # the older form: one pickled dict of pickles
OBJECTS_PREFIX = "objects/"
FILES_PREFIX = "files/"
MANIFEST_ENTRY = "manifest.json"
MAX_ENTRIES = 10000  # what the host keeps of one workspace (shared.workspaces.MAX_ENTRIES)
MAX_NAME = 256  # characters of an object's name the host keeps


class CappedText(io.TextIOBase):
    def __init__(self, cap: int) -> None:
        self.cap, self.size, self.parts, self.cut = cap, 0, [], False

    def write(self, s: str) -> int:
        if self.size < self.cap:
            piece = s[: self.cap - self.size]
            self.parts.append(piece)
            self.size += len(piece)
            self.cut = self.cut or len(piece) < len(s)
        else:
            self.cut = self.cut or bool(s)
        return len(s)

    def text(self) -> str:
        out = "".join(self.parts)
        return out + "\n[console output truncated]\n" if self.cut else out


class WorkspaceTooLarge(Exception):
    pass


class Worker:
    def __init__(self, policy: dict[str, Any]) -> None:
        self.policy = policy
        self.console_cap = policy["consoleBytes"]
        self.ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
        self.code = None
        self.service: dict[str, Any] = {}
        self.kept_files: set[str] = set()
        self.realtime: tuple[Any, dict] | None = None  # a realtime service's model and its inputs
        self.sent: dict[str, str] = {}  # entry -> fingerprint of what the host holds
        self.sizes: dict[str, int] = {}

    # --- state -----------------------------------------------------------------------------
    def load_state(self, state: bytes | None, fingerprints: Any = None) -> list[str]:
        """A stored workspace: entries objects/<name> (one pickle each) and files/<name>, or the
        older form, one pickled dict in workspace.pkl. `fingerprints`: what the host holds of
        each entry, so the next save sends only what changed."""
        notes: list[str] = []
        if not state:
            return notes
        import cloudpickle  # noqa: F401 - registers reducers used by the stored objects

        import pickle
        with zipfile.ZipFile(io.BytesIO(state)) as zf:
            sizes = {i.filename: i.file_size for i in zf.infolist()}
            for info in zf.infolist():
                if info.filename.startswith(FILES_PREFIX) and not info.is_dir():
                    name = info.filename[len(FILES_PREFIX):]
                    if _safe_name(name):
                        with open(name, "wb") as f:
                            f.write(zf.read(info))
                        self.kept_files.add(name)
                elif info.filename.startswith(OBJECTS_PREFIX):
                    self._load_object(info.filename[len(OBJECTS_PREFIX):], zf.read(info), notes)
            if WORKSPACE_ENTRY in zf.namelist():
                for name, blob in pickle.loads(zf.read(WORKSPACE_ENTRY)).items():
                    self._load_object(name, blob, notes)
        if isinstance(fingerprints, dict):
            self.sent = {k: v for k, v in fingerprints.items() if isinstance(k, str) and isinstance(v, str)}
            self.sizes = sizes
        return notes

    def _load_object(self, name: str, blob: bytes, notes: list[str]) -> None:
        import pickle

        try:
            self.ns[name] = pickle.loads(blob)
        except Exception as exc:  # one bad object must not lose the rest
            notes.append(f"note: workspace object '{name}' could not be loaded ({type(exc).__name__}: {exc})")

    def dump_state(self, files: dict[str, str] | None = None) -> tuple[bytes, list[str]]:
        """What changed since the host last saved, as a zip of stored entries: each changed
        object's pickle and changed file, and manifest.json naming every entry with its
        fingerprint (an unchanged entry is named, not sent). Objects are fingerprinted by their
        pickle with array buffers hashed in place, so an unchanged 60 MB array is not copied."""
        import cloudpickle

        entries: dict[str, str] = {}
        changed: dict[str, bytes] = {}
        notes: list[str] = []
        for name, value in self.ns.items():
            if name.startswith("__") and name.endswith("__"):
                continue
            if not (isinstance(name, str) and name.isidentifier() and len(name) <= MAX_NAME):
                notes.append(f"note: '{str(name)[:64]}' is not a name the workspace keeps (an identifier of at "
                             f"most {MAX_NAME} characters); it is dropped")
                continue
            try:
                fp = _object_fingerprint(value, cloudpickle)
                entry = OBJECTS_PREFIX + name
                if self.sent.get(entry) != fp:
                    changed[entry] = cloudpickle.dumps(value, protocol=5)
            except Exception as exc:
                notes.append(f"note: '{name}' cannot be saved in the workspace ({type(exc).__name__}); it is dropped")
                continue
            entries[entry] = fp
        for name, digest in (_fingerprint() if files is None else files).items():
            if not _keepable_file(name):
                notes.append(f"note: the file '{name.encode('utf-8', 'replace').decode()[:64]}' is not kept in the "
                             "workspace (its name is not UTF-8, or longer than 255 bytes)")
                continue
            entry = FILES_PREFIX + name
            entries[entry] = digest
            if self.sent.get(entry) != digest:
                with open(name, "rb") as f:
                    changed[entry] = f.read()
        if len(entries) > MAX_ENTRIES:
            raise WorkspaceTooLarge(f"the workspace has {len(entries)} objects and files, more than the "
                                    f"{MAX_ENTRIES} it may keep; delete what it does not need")
        sizes = {e: len(changed[e]) if e in changed else self.sizes.get(e, 0) for e in entries}
        limit = self.policy["workspaceBytes"]
        total = sum(sizes.values())
        if total > limit:
            raise WorkspaceTooLarge(f"the workspace (objects and files) is {total / 2**20:.1f} MB, above the "
                                    f"limit of {limit // 2**20} MB (MAX_WORKSPACE_MB); delete objects or files "
                                    "it does not need")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr(MANIFEST_ENTRY, json.dumps({"entries": entries}))
            for entry, data in changed.items():
                zf.writestr(entry, data)
        # The host saves this or retires the worker: either way, this is what it holds next.
        self.sent, self.sizes = entries, sizes
        return buf.getvalue(), notes

    # --- operations --------------------------------------------------------------------------
    def op_preload(self, msg: dict) -> dict:
        return {"ok": True, "missing": _preload(msg.get("modules") or [])}

    def op_load_session(self, msg: dict) -> dict:
        return {"ok": True, "notes": self.load_state(msg.get("state"), msg.get("fingerprints"))}

    def op_execute(self, msg: dict) -> dict:
        for p in msg.get("inputs") or []:
            self.ns[p["name"]] = p.get("value")
        before = _fingerprint()
        console = CappedText(self.console_cap)
        success, error = self._run(msg["code"], "<session>", self.ns, console)
        from shared.types import to_json

        outputs, missing = [], []
        for name in msg.get("outputs") or []:
            if name in self.ns:
                outputs.append({"name": name, "value": to_json(None, self.ns[name])})
            else:
                missing.append(name)
                outputs.append({"name": name, "value": None})
        if missing and success:
            success, error = False, f"output parameter(s) not defined by the code: {', '.join(missing)}"
        after = _fingerprint()
        state, notes = self.dump_state(after)
        text = console.text() + "".join(n + "\n" for n in notes)
        changed = sorted(n for n, h in after.items() if before.get(n) != h)
        return {"ok": True, "success": success, "errorMessage": error, "consoleOutput": text,
                "outputParameters": outputs, "changedFiles": changed, "state": state}

    def op_merge_state(self, msg: dict) -> dict:
        notes = self.load_state(msg.get("state"))
        state, more = self.dump_state()
        return {"ok": True, "notes": notes + more, "state": state}

    def op_list_objects(self, msg: dict) -> dict:
        return {"ok": True, "names": sorted(n for n in self.ns if not (n.startswith("__") and n.endswith("__")))}

    def op_get_object(self, msg: dict) -> dict:
        import dill

        if msg["name"] not in self.ns:
            return _missing(f"workspace object '{msg['name']}' not found")
        return {"ok": True, "data": dill.dumps(self.ns[msg["name"]])}

    def op_set_object(self, msg: dict) -> dict:
        import dill  # the ML Server SDK uploads objects serialized with dill

        try:
            self.ns[msg["name"]] = dill.loads(msg["data"])
        except Exception as exc:
            return {"ok": False, "badRequest": True,
                    "error": f"the uploaded object could not be deserialized ({type(exc).__name__}: {exc})"}
        return self._saved()

    def op_delete_object(self, msg: dict) -> dict:
        if self.ns.pop(msg["name"], _MISSING) is _MISSING:
            return _missing(f"workspace object '{msg['name']}' not found")
        return self._saved()

    def op_list_files(self, msg: dict) -> dict:
        return {"ok": True, "names": sorted(_files())}

    def op_get_file(self, msg: dict) -> dict:
        name = msg["name"]
        if not (_safe_name(name) and os.path.isfile(name)):
            return _missing(f"file '{name}' not found")
        with open(name, "rb") as f:
            return {"ok": True, "data": f.read()}

    def op_put_file(self, msg: dict) -> dict:
        if not _safe_name(msg["name"]):
            return {"ok": False, "badRequest": True, "error": "that file name is not allowed"}
        with open(msg["name"], "wb") as f:
            f.write(msg["data"])
        return self._saved()

    def op_delete_file(self, msg: dict) -> dict:
        name = msg["name"]
        if not (_safe_name(name) and os.path.isfile(name)):
            return _missing(f"file '{name}' not found")
        os.remove(name)
        return self._saved()

    def _saved(self) -> dict:
        state, notes = self.dump_state()
        return {"ok": True, "state": state, "notes": notes}

    def op_load_service(self, msg: dict) -> dict:
        notes = self.load_state(msg.get("state"))
        self.service = msg
        try:
            self.code = compile(msg["code"], "<service>", "exec")
        except SyntaxError as exc:
            return {"ok": False, "error": f"the service code does not compile: {exc}"}
        if msg.get("initCode"):
            console = CappedText(self.console_cap)
            ok, error = self._run(msg["initCode"], "<init>", self.ns, console)
            if not ok:
                return {"ok": False, "error": f"initCode failed: {error}"}
        return {"ok": True, "notes": notes}

    def op_consume(self, msg: dict) -> dict:
        if self.realtime is not None:
            return self._score(msg)
        from shared.types import to_json, to_python

        g = dict(self.ns)  # each request starts from the published workspace
        for d in self.service.get("inputs") or []:
            try:
                g[d["name"]] = to_python(d["type"], msg["inputs"][d["name"]])
            except Exception as exc:  # the caller's value, not the worker, is at fault: keep the worker
                return {"ok": True, "success": False, "consoleOutput": "", "changedFiles": [], "outputParameters": {},
                        "errorMessage": f"input '{d['name']}' could not be converted ({type(exc).__name__})"}
        out_files = self.service.get("outputFileNames") or []
        for name in out_files:
            if name not in self.kept_files and _safe_name(name) and os.path.isfile(name):
                os.remove(name)
        console = CappedText(self.console_cap)
        success, error = self._run(self.code, "<service>", g, console)
        outputs: dict[str, Any] = {}
        for d in self.service.get("outputs") or []:
            if d["name"] in g:
                try:
                    outputs[d["name"]] = to_json(d["type"], g[d["name"]])
                except Exception as exc:
                    success, error = False, f"output '{d['name']}' could not be converted: {exc}"
            elif success:
                success, error = False, f"the code did not set the output '{d['name']}'"
        reply = {"ok": True, "success": success, "errorMessage": error, "consoleOutput": console.text(),
                 "changedFiles": [], "outputParameters": outputs}
        if out_files:
            files = {}
            for name in out_files:
                path = name if _safe_name(name) else None
                files[name] = (base64.b64encode(open(path, "rb").read()).decode()
                               if path and os.path.isfile(path) else None)
            reply["outputFiles"] = files
        return reply

    def op_realtime_check(self, msg: dict) -> dict:
        """An ONNX model as realtime services take it: checked, then loaded (a model that crashes
        onnxruntime crashes this worker, not the host)."""
        from shared import realtime

        try:
            info = realtime.check(msg["model"])
            realtime.session(msg["model"])
        except realtime.ModelRefused as exc:
            return {"ok": False, "error": exc.message}
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            return {"ok": False, "error": f"onnxruntime cannot load the model: {realtime.describe(exc)}"}
        return {"ok": True, "info": info}

    def op_load_realtime(self, msg: dict) -> dict:
        from shared import realtime

        try:
            self.realtime = (realtime.session(msg["model"]), msg["info"])
        except Exception as exc:  # noqa: BLE001 - checked at publish; an onnxruntime change may still refuse it
            return {"ok": False, "error": f"the model could not be loaded ({realtime.describe(exc)})"}
        return {"ok": True}

    def _score(self, msg: dict) -> dict:
        from shared import realtime

        model, info = self.realtime
        try:
            data, success, error = realtime.score(model, info, msg["inputs"]), True, ""
        except realtime.RealtimeFailed as exc:
            data, success, error = {}, False, exc.message
        return {"ok": True, "success": success, "errorMessage": error, "consoleOutput": "", "changedFiles": [],
                "outputParameters": {realtime.OUTPUT: data} if success else {}}

    def op_to_onnx(self, msg: dict) -> dict:
        """A pickled scikit-learn model, as ONNX (for a realtime service). The host checks what
        comes back as it checks any model sent to it: this process has run the pickle."""
        import pickle

        import cloudpickle  # noqa: F401 - registers its reducers

        try:
            model = pickle.loads(msg["model"])
        except Exception as exc:  # noqa: BLE001 - any failure to load is the same answer
            return {"ok": False, "error": "the 'model' file is neither an ONNX model nor a loadable pickle "
                                          f"({type(exc).__name__})"}
        from sklearn.base import BaseEstimator, is_classifier

        if not isinstance(model, BaseEstimator):
            return {"ok": False, "error": f"the pickled model is a {type(model).__name__[:64]}, not a scikit-learn "
                                          "estimator or pipeline"}
        features = getattr(model, "n_features_in_", None)
        if not isinstance(features, int):
            return {"ok": False, "error": "the pickled scikit-learn model is not fitted"}
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType

        last = model.steps[-1][1] if hasattr(model, "steps") else model
        options = {id(last): {"zipmap": False}} if is_classifier(last) else None
        try:
            onx = to_onnx(model, initial_types=[("X", FloatTensorType([None, features]))], options=options)
        except Exception as exc:  # noqa: BLE001 - the converter raises many types, with long texts
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            return {"ok": False, "error": f"this scikit-learn model cannot be converted to ONNX ({first})"}
        names = getattr(model, "feature_names_in_", None)
        columns = [str(c) for c in names] if names is not None else []
        return {"ok": True, "columns": columns, "onnx": onx.SerializeToString()}

    def _run(self, code: Any, filename: str, g: dict, console: CappedText) -> tuple[bool, str]:
        old = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = console
        try:
            exec(compile(code, filename, "exec") if isinstance(code, str) else code, g)
            return True, ""
        except BaseException as exc:  # noqa: BLE001 - user code may raise anything, SystemExit included
            tb = traceback.TracebackException.from_exception(exc)
            tb.stack = traceback.StackSummary.from_list([f for f in tb.stack if f.filename != __file__])
            return False, "".join(tb.format()).strip() + self._hint(exc)
        finally:
            sys.stdout, sys.stderr = old

    def _hint(self, exc: BaseException) -> str:
        """Name the limit behind an error the sandbox caused."""
        p = self.policy
        if isinstance(exc, MemoryError):
            return f"\n(o16n: each process may use {p['memoryBytes'] // 2**20} MB of memory, WORKER_MEMORY_MB)"
        if isinstance(exc, BlockingIOError) or "can't start new thread" in str(exc):
            return (f"\n(o16n: a worker may run {p['maxProcesses']} processes and threads at once, "
                    "WORKER_MAX_PROCESSES)")
        if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
            return f"\n(o16n: the working directory may hold {p['fileBytes'] // 2**20} MB, WORKER_DISK_MB)"
        if isinstance(exc, PermissionError) and p["confine"]:
            return ("\n(o16n: user code may read only Python, its libraries and its working directory, write only "
                    "its working directory, change no file's mode, owner or times, and has no network access "
                    "unless SANDBOX_OUTBOUND_PORTS opens it)")
        return ""


_MISSING = object()


#: what every worker imports once it serves: in the template, their memory is shared
_EVERY_WORKER = ["cloudpickle", "pickle", "zipfile", "xxhash", "shared.types", "shared.sandbox.protocol"]


def _preload(modules: list[str]) -> list[str]:
    """Import them; returns those that are not installed."""
    import importlib

    missing = []
    for name in dict.fromkeys(["numpy", *modules]):
        try:
            importlib.import_module(name.strip())
        except Exception:  # a module that is not installed just is not preloaded
            missing.append(name)
    return missing


def _object_fingerprint(value: Any, cloudpickle: Any) -> str:
    """XXH3-128 of the object's pickle, its out-of-band buffers (numpy arrays) hashed where they
    lie. Not a cryptographic hash, and need not be: it tells the worker what changed in its own
    session (a collision made on purpose would only keep that session's change from being saved)."""
    import xxhash

    buffers: list = []
    digest = xxhash.xxh3_128(cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append))
    for buffer in buffers:
        try:
            digest.update(buffer.raw())
        except BufferError:  # not contiguous
            digest.update(memoryview(buffer).tobytes())
    return digest.hexdigest()


def _missing(message: str) -> dict:
    return {"ok": False, "notFound": True, "error": message}


def _keepable_file(name: str) -> bool:
    try:
        return len(name.encode("utf-8")) <= 255
    except UnicodeEncodeError:  # os.listdir's escape for bytes that are not UTF-8
        return False


def _safe_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\x00" not in name


def _files() -> list[str]:
    return [n for n in os.listdir(".") if os.path.isfile(n)]


def _fingerprint() -> dict[str, str]:
    import xxhash

    out = {}
    for n in _files():
        with open(n, "rb") as f:
            out[n] = xxhash.xxh3_128(f.read()).hexdigest()
    return out


def main() -> None:
    if sys.argv[1] == "--template":
        template(json.loads(sys.argv[2]), int(sys.argv[3]))
        return
    policy = json.loads(sys.argv[1])
    _end_with_host(policy["host"])
    _prepare(policy)
    serve(policy, int(sys.argv[2]))


def _end_with_host(host: int) -> None:
    """The kernel kills a worker started by the host when the host ends, whatever its code
    does (seccomp keeps user code from undoing it). The host starts workers from a thread
    that lives as long as it does: the signal follows the thread that started the process."""
    import ctypes
    import signal

    if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != host:
        os._exit(1)  # or the host is gone already


def _prepare(policy: dict[str, Any]) -> None:
    _load_shared(policy["shared"])
    # The host's import path, in its order; not this script's folder (its modules would shadow others).
    sys.path[:] = policy["importPath"] + [p for p in sys.path[1:] if p not in policy["importPath"]]
    # Nothing but the channel talks to the host: whatever user code writes to fd 1/2 is dropped.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


def serve(policy: dict[str, Any], fd: int, *, forked: bool = False) -> None:
    """Confine this process, greet the host (handing it the seccomp listener), then answer."""
    chan = socket.socket(fileno=fd)
    from shared.sandbox import confine
    from shared.sandbox.protocol import HEADER, decode, encode

    try:
        listener = confine.apply(policy, forked=forked)
    except Exception as exc:  # noqa: BLE001 - whatever failed, no user code may run
        chan.sendall(encode({"ok": False, "error": f"the sandbox could not be set up ({exc})"})[0])
        return
    if listener is None:
        chan.sendall(encode({"ok": True})[0])
    else:
        socket.send_fds(chan, encode({"ok": True}), [listener])
        os.close(listener)  # in the host's hands only: user code must not answer its own requests
    try:
        confine.seal(policy)
    except Exception:  # noqa: BLE001 - never expected; no user code runs half-confined
        os._exit(1)
    _die_with_host(chan.fileno())
    frames = _Frames(chan.fileno())
    import numpy  # noqa: F401 - most services need it; loading it here keeps it off the first request

    worker = Worker(policy)
    while True:
        header = frames.read(HEADER.size)
        if header is None:
            return
        size, blob_size = HEADER.unpack(header)
        body, blob = frames.read(size), frames.read(blob_size) if blob_size else None
        if body is None:
            return
        msg = decode(body, blob)
        _reap()
        try:
            reply = getattr(worker, "op_" + msg["op"])(msg)
        except WorkspaceTooLarge as exc:
            reply = {"ok": False, "tooLarge": True, "error": str(exc)}
        except MemoryError:
            reply = {"ok": False, "error": "the worker ran out of memory"}
        except Exception as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        reply["id"] = msg.get("id")
        for buf in _encoded(reply, policy["replyJsonBytes"]):
            chan.sendall(buf)


def template(policy: dict[str, Any], fd: int) -> None:
    """The template: imports the usual modules once, then forks a worker per host request. It
    never runs user code or reads user data; its children confine themselves (a narrower
    Landlock layer of their own, seccomp, their own process group) before they do. They share
    its imported modules' memory until they write to it."""
    import gc

    _prepare(policy)
    from shared.sandbox import confine
    from shared.sandbox.protocol import HEADER, decode, encode

    control = socket.socket(fileno=fd)
    tasks = os.open("/proc/self/task", os.O_RDONLY | os.O_DIRECTORY)  # /proc is closed once confined

    def threading_started() -> bool:
        return len(os.listdir(tasks)) != 1

    try:
        confine.layer(policy)
        missing = _preload(policy["preload"] + _EVERY_WORKER)
        if threading_started():
            # a child would hold whatever lock such a thread held at the fork, forever
            raise OSError(0, "a preloaded module started a thread")
    except Exception as exc:  # noqa: BLE001 - then the host starts workers the cold way
        control.sendall(encode({"ok": False, "error": f"the template could not be set up ({exc})"})[0])
        return
    gc.collect()
    gc.freeze()  # what is imported stays out of the collector's writes: pages stay shared
    control.sendall(encode({"ok": True, "missing": missing})[0])
    children: set[int] = set()
    try:
        while True:
            msg, fds = _request(control, HEADER, decode)
            if msg is None:
                return  # the host is gone: so are the workers it asked for (finally)
            control.sendall(encode(_answer(msg, fds, children, fd))[0])
    finally:
        for pid in children:
            for kill in (os.kill, os.killpg):  # the pid is still its own: it is not reaped yet
                try:
                    kill(pid, 9)
                except OSError:
                    pass


def _answer(msg: dict, fds: list[int], children: set[int], control: int) -> dict:
    """The template's answer to one request of the host."""
    try:
        if msg.get("op") == "fork" and len(fds) == 1:
            try:
                pid = os.fork()
            except OSError as exc:
                return {"ok": False, "error": f"fork failed: {exc}"}
            if pid == 0:
                _forked(msg["policy"], fds[0], control)
            children.add(pid)
            return {"ok": True, "pid": pid}
        if msg.get("op") == "reap" and msg.get("pid") in children:
            # only when the host asks: until then its pid, and so its group id, stay taken
            got, status = os.waitpid(msg["pid"], os.WNOHANG)
            if got != msg["pid"]:
                return {"ok": True, "reaped": False}
            children.discard(got)
            return {"ok": True, "reaped": True, "code": os.waitstatus_to_exitcode(status)}
        return {"ok": False, "error": "not a request"}
    finally:
        for extra in fds:
            os.close(extra)


def _request(control: socket.socket, header: Any, decode: Any) -> tuple[dict | None, list[int]]:
    """One request from the host and the descriptors sent with it."""
    buf, fds = b"", []
    while len(buf) < header.size or len(buf) < header.size + header.unpack(buf[:header.size])[0]:
        data, got, _, _ = socket.recv_fds(control, 1 << 16, 4)
        fds += got
        if not data:
            for extra in fds:
                os.close(extra)
            return None, []
        buf += data
    return decode(buf[header.size:]), fds


def _forked(policy: dict[str, Any], chan: int, control: int) -> None:
    """In the forked child: nothing of the template's but its memory goes on. Never returns."""
    code = 1
    try:
        os.close(control)
        os.setsid()  # its own process group, which the host counts and ends as one
        os.closerange(3, chan)
        os.closerange(chan + 1, 1 << 20)
        home = policy["write"][0]
        os.chdir(home)
        os.environ.update(HOME=home, TMPDIR=os.path.join(home, ".tmp"))
        import tempfile

        tempfile.tempdir = None  # it cached the template's
        if "numpy" in sys.modules:  # Python's own random reseeds after fork; numpy's global state does not
            sys.modules["numpy"].random.seed()
        serve(policy, chan, forked=True)
        code = 0
    finally:
        os._exit(code)


def _encoded(reply: dict, limit: int) -> list[bytes]:
    """The reply as a frame the host accepts: outputs too large to send are replaced by an
    error that names the limit (the workspace, sent beside them, is kept)."""
    from shared.sandbox.protocol import HEADER, encode, too_costly

    try:
        frame = encode(reply)
    except (TypeError, ValueError) as exc:
        return encode({"ok": False, "error": f"the result could not be encoded: {exc}", "id": reply.get("id")})
    body = frame[0][HEADER.size:]
    problem = f"{len(body)} bytes" if len(body) > limit else too_costly(body)
    if problem is None:
        return frame
    why = (f"the outputs are too large to send ({problem}; a reply may hold {limit} bytes of JSON, "
           "set by MAX_REQUEST_BYTES and MAX_CONSOLE_BYTES)")
    if "outputParameters" not in reply:
        return encode({"ok": False, "error": why, "id": reply.get("id")})
    slim = {**reply, "success": False, "errorMessage": why, "consoleOutput": "",
            "outputParameters": type(reply["outputParameters"])()}
    if "outputFiles" in reply:
        slim["outputFiles"] = {name: None for name in reply["outputFiles"]}
    return encode(slim)


def _reap() -> None:
    """Collect the processes the host ended after the last call (none outlives a call)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _load_shared(path: str) -> None:
    """Import the app's `shared` package from its own folder: the app folder itself (which
    holds the settings) is neither on the import path nor readable."""
    spec = importlib.util.spec_from_file_location("shared", os.path.join(path, "__init__.py"),
                                                  submodule_search_locations=[path])
    module = importlib.util.module_from_spec(spec)
    sys.modules["shared"] = module
    spec.loader.exec_module(module)


def _die_with_host(chan: int) -> None:
    """A worker busy in user code when the host dies would never read the EOF that ends it;
    its whole process group goes with it. It watches its channel, not its parent: a forked
    worker's parent is the template, which may end before it."""
    import select
    import signal
    import threading

    poller = select.poll()
    poller.register(chan, select.POLLRDHUP)

    def watch() -> None:
        while not poller.poll(1000):  # hang-up, error or a closed descriptor all wake it
            pass
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


class _Frames:
    """Reads from the channel in as few system calls as the host's writes allow."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buf = fd, bytearray()

    def read(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            chunk = os.read(self.fd, max(n - len(self.buf), 1 << 16))
            if not chunk:
                return None
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


if __name__ == "__main__":
    main()
