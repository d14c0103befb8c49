"""Realtime services: an ONNX model, scored by onnxruntime in the API process.

ONNX is data, not code, but a model is still the user's input to the host process. So a
model is checked before it is stored (`check`): operators from a list with no loops,
subgraphs, functions, custom domains, external files or shapes taken from the data, and
matrix products only with constant weights; inputs and outputs are tensors. Scoring runs in
a thread with one core, an allocator capped at REALTIME_MEMORY_MB for all realtime calls of
the process, and a stop at EXECUTION_TIMEOUT_SECONDS. A pickled scikit-learn model is
unpickled and converted to ONNX only inside the sandbox, and what comes back is checked the
same way."""
from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import OrderedDict
from typing import Any

from .config import get_settings
from .errors import BadRequest

#: what revoscalepy's rx_serialize_model output starts with; the ML Server SDK refuses models
#: without it, so an ONNX model may come behind it
MARK = b"blob"
INPUT, OUTPUT = "inputData", "outputData"
MAX_TENSORS = 256  # inputs or outputs of one model
_PICKLE = b"\x80"  # pickle protocol 2 and later start with PROTO

_ML = "ai.onnx.ml"
_ALLOWED = {
    "": {
        "Abs", "Add", "And", "ArgMax", "ArgMin", "BatchNormalization", "Cast", "CastLike", "Ceil", "Clip",
        "Concat", "Constant", "Div", "Dropout", "Elu", "Equal", "Erf", "Exp", "Flatten", "Floor", "Gather",
        "GatherElements", "Gemm", "Greater", "GreaterOrEqual", "HardSigmoid", "Hardmax", "Identity", "IsInf",
        "IsNaN", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "MatMul", "Max", "Mean", "Min",
        "Mul", "Neg", "Not", "Or", "Pow", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum",
        "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
        "ReduceSumSquare", "Relu", "Reshape", "Round", "Selu", "Sigmoid", "Sign", "Slice", "Softmax",
        "Softplus", "Softsign", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tanh", "Transpose", "Unsqueeze",
        "Where", "Xor",
    },
    _ML: {
        "ArrayFeatureExtractor", "Binarizer", "FeatureVectorizer", "Imputer", "LabelEncoder",
        "LinearClassifier", "LinearRegressor", "Normalizer", "OneHotEncoder", "SVMClassifier", "SVMRegressor",
        "Scaler", "TreeEnsemble", "TreeEnsembleClassifier", "TreeEnsembleRegressor", "ZipMap",
    },
}
# Inputs that must be constants: a product of two data-sized matrices costs time cubic in the
# rows, and a shape taken from the data can make any size.
_CONSTANT_INPUTS = {"MatMul": (1,), "Gemm": (1,), "Reshape": (1,)}
# ONNX element types → numpy dtype names (strings are objects)
_ELEMENTS = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 8: "object",
             9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}


class ModelRefused(BadRequest):
    pass


# --- intake at publish ------------------------------------------------------------------------
def unmark(data: bytes) -> bytes:
    """The model without revoscalepy's 4-byte mark, when it has one."""
    return data[len(MARK):] if data[:len(MARK)] == MARK else data


def is_pickle(data: bytes) -> bool:
    return data[:1] == _PICKLE


def prepare(sent: bytes) -> tuple[bytes, dict[str, Any]]:
    """The ONNX model to store for what was sent, and what o16n keeps about it.
    :raises ModelRefused: :raises Unavailable: no sandbox to convert a pickle in"""
    data, columns = unmark(sent), []
    if is_pickle(data):
        data, columns = _converted(data)
    info = check(data)
    if columns:
        if (len(info["inputs"]) != 1 or info["inputs"][0]["shape"][1] != len(columns)
                or not all(isinstance(c, str) and 0 < len(c) <= 256 for c in columns)):
            raise ModelRefused("the converted model's feature names do not match its input")
        info["columns"] = columns
    _loadable(data)
    return data, info


def _converted(pickled: bytes) -> tuple[bytes, list]:
    """A pickled scikit-learn model as ONNX, converted in a sandboxed worker used only for it."""
    from .sandbox import pool

    worker = pool.spares.take()
    try:
        reply = worker.call({"op": "to_onnx", "model": pickled}, timeout=get_settings().execution_timeout_seconds)
    except (pool.WorkerTimeout, pool.WorkerDied, pool.WorkerBusy) as exc:
        raise ModelRefused(f"the pickled model could not be converted to ONNX ({_short(exc)})") from None
    finally:
        worker.kill()  # it ran the pickle
    if not reply.get("ok"):
        raise ModelRefused(str(reply.get("error") or "the pickled model could not be converted")[:600])
    data, columns = reply.get("onnx"), reply.get("columns")
    if not isinstance(data, bytes) or not isinstance(columns, list):
        raise ModelRefused("the pickled model could not be converted to ONNX")
    return data, columns


def _loadable(data: bytes) -> None:
    try:
        _new_session(data)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
        raise ModelRefused(f"onnxruntime cannot load the model: {_short(_status(exc))}") from None


def check(data: bytes) -> dict[str, Any]:
    """What o16n keeps about an ONNX model it accepts: its inputs and outputs.
    :raises ModelRefused: naming what is wrong"""
    import onnx

    if not data:
        raise ModelRefused("the 'model' file is empty")
    try:
        model = onnx.load_model_from_string(data)
    except Exception:  # noqa: BLE001 - any parse failure is the same answer
        raise ModelRefused(_NOT_A_MODEL) from None
    graph = model.graph
    if not graph.node or not graph.output:
        raise ModelRefused(_NOT_A_MODEL)
    if model.functions:
        raise ModelRefused("the model defines functions; realtime services take plain graphs")
    for opset in model.opset_import:
        if opset.domain not in ("", "ai.onnx", _ML):
            raise ModelRefused(f"the model uses the operator domain '{opset.domain[:64]}'; realtime services "
                               "take only the standard ONNX and ONNX-ML operators")
    constants = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    for tensor in list(graph.initializer) + [t.values for t in graph.sparse_initializer]:
        _no_external(tensor)
    for node in graph.node:
        domain = "" if node.domain == "ai.onnx" else node.domain
        if node.op_type not in _ALLOWED.get(domain, ()):
            raise ModelRefused(f"the model uses the operator {(domain + '.' if domain else '') + node.op_type[:64]}, "
                               "which realtime services do not run (no loops, subgraphs or shapes taken from the "
                               "data); publish the model as a standard Python service instead")
        for attr in node.attribute:
            if attr.g.ByteSize() or attr.graphs:
                raise ModelRefused(f"the operator {node.op_type} carries a subgraph")
            for tensor in [attr.t] + list(attr.tensors):
                _no_external(tensor)
            if attr.sparse_tensor.ByteSize():
                _no_external(attr.sparse_tensor.values)
        if node.op_type == "Constant":
            constants.update(node.output)
        for i in _CONSTANT_INPUTS.get(node.op_type, ()):
            if len(node.input) > i and node.input[i] not in constants:
                raise ModelRefused(f"the operator {node.op_type} takes its input {i + 1} from the data; realtime "
                                   "services take it only as a constant of the model (its weights or shape)")
    inputs = [_tensor(v, "input") for v in graph.input if v.name not in constants]
    outputs = [_tensor(v, "output") for v in graph.output]
    if not inputs:
        raise ModelRefused("the model has no inputs")
    if len(inputs) > MAX_TENSORS or len(outputs) > MAX_TENSORS:
        raise ModelRefused(f"the model has more than {MAX_TENSORS} inputs or outputs")
    wide = [i["name"] for i in inputs if len(i["shape"]) == 2 and i["shape"][1] != 1]
    if len(inputs) > 1 and wide:
        raise ModelRefused(f"the model's input '{wide[0][:64]}' takes several values per row beside other inputs; "
                           "inputData feeds a model either one [rows, columns] input or one column per input")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - onnx raises several types
        raise ModelRefused(f"the ONNX model is not valid: {_short(exc)}") from None
    return {"inputs": inputs, "outputs": outputs}


_NOT_A_MODEL = ("the 'model' file is neither an ONNX model nor a pickled scikit-learn model (it may come behind "
                "the 4-byte mark b'blob' that revoscalepy's rx_serialize_model adds)")


def _no_external(tensor: Any) -> None:
    if tensor.data_location == 1 or tensor.external_data:
        raise ModelRefused("the model keeps tensors in external files; save it as one file (ONNX's "
                           "save_as_external_data=False)")


def _tensor(value: Any, what: str) -> dict[str, Any]:
    kind = value.type.WhichOneof("value")
    if what == "output" and _class_scores(value.type):
        return {"name": value.name[:256], "type": "scores", "shape": None}
    if kind != "tensor_type" or value.type.tensor_type.elem_type not in _ELEMENTS:
        raise ModelRefused(f"the model's {what} '{value.name[:64]}' is not a tensor of numbers, strings or "
                           "booleans")
    tensor = value.type.tensor_type
    dims = ([d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
            if tensor.HasField("shape") else None)
    if what == "input" and (dims is None or len(dims) not in (1, 2) or (len(dims) == 2 and dims[1] is None)):
        raise ModelRefused(f"the model's input '{value.name[:64]}' must have the shape [rows] or [rows, columns] "
                           "with a fixed number of columns")
    if len(value.name) > 256:
        raise ModelRefused(f"the model's {what} names must have at most 256 characters")
    return {"name": value.name, "type": _ELEMENTS[tensor.elem_type], "shape": dims}


def _class_scores(t: Any) -> bool:
    """ZipMap's output, a sequence of {class: score} maps (skl2onnx's default for classifiers)."""
    if t.WhichOneof("value") != "sequence_type":
        return False
    item = t.sequence_type.elem_type
    return (item.WhichOneof("value") == "map_type" and item.map_type.key_type in (7, 8)
            and item.map_type.value_type.WhichOneof("value") == "tensor_type")


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:limit] + ("…" if len(text) > limit else "")


def definition(info: dict[str, Any]) -> str:
    """The row field that holds `info`. :raises ModelRefused: too large for the row"""
    text = json.dumps(info, separators=(",", ":"))
    if len(text) > 30000:
        raise ModelRefused("the model's inputs and outputs take more than 30,000 characters to describe")
    return text


# --- scoring ---------------------------------------------------------------------------------
_sessions: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()  # key -> (session, model bytes)
_sessions_lock = threading.Lock()
_allocator_lock = threading.Lock()
_allocator_ready = False
MAX_CACHED_MODELS = 64


def session(key: tuple, data: bytes) -> Any:
    """An onnxruntime session for the model, kept per service version and stored copy, the
    least recently used dropped past MAX_CACHED_MODELS or REALTIME_MEMORY_MB of models."""
    with _sessions_lock:
        hit = _sessions.get(key)
        if hit is not None:
            _sessions.move_to_end(key)
            return hit[0]
    made = _new_session(data)
    budget = get_settings().realtime_memory_mb * 2**20
    with _sessions_lock:
        _sessions[key] = (made, len(data))
        _sessions.move_to_end(key)
        while len(_sessions) > 1 and (len(_sessions) > MAX_CACHED_MODELS
                                      or sum(size for _, size in _sessions.values()) > budget):
            _sessions.popitem(last=False)
    return made


def _new_session(data: bytes) -> Any:
    import onnxruntime as ort

    _capped_allocator(ort)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # on the calling thread: no pool per model
    options.inter_op_num_threads = 1
    # No constant folding: it would compute outside the capped arena, at load time
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4  # errors come back as exceptions; its log would name paths
    options.add_session_config_entry("session.use_env_allocators", "1")
    options.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def describe(exc: BaseException) -> str:
    return _short(_status(exc))


def _status(exc: BaseException) -> str:
    """onnxruntime's message without its source paths and C++ signatures."""
    text = str(exc).split("Status Message:")[-1]
    text = re.sub(r"\S+\.(?:cc|cpp|h):\d+|\[ONNXRuntimeError\] : \d+ : \w+ :|(?:void\*\s*)?\S*onnxruntime::\S*?\([^)]*\)", "", text)
    return " ".join(text.split()) or type(exc).__name__


def cached(key: tuple) -> Any | None:
    with _sessions_lock:
        hit = _sessions.get(key)
        if hit is None:
            return None
        _sessions.move_to_end(key)
        return hit[0]


def forget(name: str, version: str) -> None:
    with _sessions_lock:
        for key in [k for k in _sessions if k[:2] == (name, version)]:
            del _sessions[key]


def _capped_allocator(ort: Any) -> None:
    """One arena for every realtime call of the process, capped: a model that would build a
    tensor past REALTIME_MEMORY_MB fails that call instead of taking the host's memory."""
    global _allocator_ready
    with _allocator_lock:
        if _allocator_ready:
            return
        ort.set_default_logger_severity(4)
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        config = ort.OrtArenaCfg({"max_mem": get_settings().realtime_memory_mb * 2**20,
                                  "arena_extend_strategy": 1})  # grow by what is asked, not doubling
        ort.create_and_register_allocator(info, config)
        _allocator_ready = True


def feeds(info: dict[str, Any], columns: dict[str, list]) -> dict[str, Any]:
    """The model's input tensors from the inputData columns. :raises BadRequest:"""
    import numpy as np

    inputs = info["inputs"]
    names = list(columns)
    if not names:
        raise BadRequest(f"'{INPUT}' has no columns")
    rows = len(columns[names[0]])
    if rows == 0:
        raise BadRequest(f"'{INPUT}' has no rows")
    out = {}
    if len(inputs) == 1 and inputs[0]["name"] not in columns and len(inputs[0]["shape"]) == 2:
        spec = inputs[0]
        wanted = info.get("columns") or names
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise BadRequest(f"'{INPUT}' lacks the column '{missing[0][:64]}' the model was trained with")
        if spec["shape"][1] != len(wanted):
            raise BadRequest(f"the model takes {spec['shape'][1]} columns; '{INPUT}' has {len(wanted)}")
        matrix = [_column(c, columns[c], spec["type"], np) for c in wanted]
        out[spec["name"]] = np.stack(matrix, axis=1)
        return out
    for spec in inputs:
        if spec["name"] not in columns:
            raise BadRequest(f"'{INPUT}' lacks the column '{spec['name'][:64]}' (the model's inputs: "
                             f"{', '.join(i['name'][:64] for i in inputs[:20])})")
        values = _column(spec["name"], columns[spec["name"]], spec["type"], np)
        shape = spec["shape"]
        if len(shape) == 2:
            values = values.reshape(-1, 1)
        out[spec["name"]] = values
    return out


def _column(name: str, values: list, dtype: str, np: Any) -> Any:
    try:
        if dtype == "object":
            if not all(isinstance(v, str) for v in values):
                raise ValueError
            return np.array(values, dtype=object)
        if dtype == "bool":
            if not all(isinstance(v, bool) for v in values):
                raise ValueError
            return np.array(values, dtype=bool)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError
        array = np.array(values, dtype=dtype)
        if dtype.startswith(("int", "uint")) and not all(float(v).is_integer() for v in values):
            raise ValueError
        return array
    except (ValueError, OverflowError, TypeError):
        kind = {"object": "strings", "bool": "true or false"}.get(dtype, "numbers")
        raise BadRequest(f"column '{name[:64]}' of '{INPUT}' must hold {kind} ({dtype} for the model)") from None


def run(model: Any, inputs: dict[str, Any], deadline: float) -> dict[str, Any]:
    """Score, stopping at `deadline`. :raises RealtimeFailed: with the reason to show"""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.log_severity_level = 4
    _watchdog.add(deadline, options)
    try:
        results = model.run(None, inputs, options)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
        if options.terminate:
            raise RealtimeFailed(f"the model did not answer within {get_settings().execution_timeout_seconds:g} "
                                 "seconds and was stopped") from None
        text = str(exc).lower()
        if "allocat" in text or "memory" in text:
            raise RealtimeFailed(f"the model needs more memory for this input than realtime scoring allows "
                                 f"(REALTIME_MEMORY_MB={get_settings().realtime_memory_mb}); send fewer rows") from None
        raise RealtimeFailed(f"the model failed on this input (onnxruntime: {_short(_status(exc), 200)})") from None
    finally:
        _watchdog.remove(options)
    return {o.name: r for o, r in zip(model.get_outputs(), results)}


class _Watchdog:
    """Sets `terminate` on runs past their deadline (onnxruntime checks it between operators).
    One thread for all runs: a timer per call would start a thread per call."""

    def __init__(self) -> None:
        self._due: dict[int, tuple[float, Any]] = {}
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, deadline: float, options: Any) -> None:
        with self._wake:
            self._due[id(options)] = (deadline, options)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="o16n-realtime-stop", daemon=True)
                self._thread.start()
            self._wake.notify()

    def remove(self, options: Any) -> None:
        with self._wake:
            self._due.pop(id(options), None)

    def _run(self) -> None:
        with self._wake:
            while True:
                now = time.monotonic()
                for key, (deadline, options) in list(self._due.items()):
                    if deadline <= now:
                        options.terminate = True
                        del self._due[key]
                soonest = min((d for d, _ in self._due.values()), default=now + 60)
                self._wake.wait(max(soonest - now, 0.001))


_watchdog = _Watchdog()


def to_columns(results: dict[str, Any]) -> dict[str, list]:
    """outputData: one column per output, or name_0, name_1, ... for an output with several
    values per row. NaN and infinities become null (JSON has neither)."""
    out: dict[str, list] = {}
    for name, array in results.items():
        if isinstance(array, list):  # ZipMap: one {class: score} per row
            for label in (array[0] if array else {}):
                out[f"{name}_{label}"] = _plain([row.get(label) for row in array])
            continue
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim == 2:
            for j in range(array.shape[1]):
                out[f"{name}_{j}"] = _plain(array[:, j].tolist())
        else:
            out[name] = _plain(array.tolist())
    return out


def _plain(values: Any) -> Any:
    if isinstance(values, list):
        return [_plain(v) for v in values]
    if isinstance(values, float) and not math.isfinite(values):
        return None
    if isinstance(values, bytes):
        return values.decode("utf-8", "replace")
    return values


def columns_of(value: Any) -> dict[str, list]:
    """inputData as columns: an object of column arrays, or an array of row objects.
    :raises BadRequest:"""
    if isinstance(value, list):
        names: list[str] = []
        for row in value:
            for k in row:
                if k not in names:
                    names.append(k)
        if any(set(row) != set(names) for row in value):
            raise BadRequest(f"every row of '{INPUT}' must have the same columns")
        return {k: [row[k] for row in value] for k in names}
    return value


class RealtimeFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
