"""Realtime services: an ONNX model, scored by onnxruntime in a sandboxed worker.

A model is the user's input, and onnxruntime is native code: a crafted model can crash it
(a tree deep enough overflows its stack), run one operator for hours or allocate outside any
arena. So a model is only ever parsed, loaded and run in a worker confined like the ones that
run user code (memory limit, timeout, no network, killed when it breaks), never in the API
process. At publish a fresh worker checks it (`check`: operators from a list with no loops,
subgraphs, functions, custom domains, external files or shapes taken from the data; inputs and
outputs are tensors) and loads it; a pickled scikit-learn model is first converted to ONNX in
another worker, used for nothing else. Consume runs it in the service's warm worker.
The host checks inputData against the model's inputs (`check_columns`) before any worker sees it."""
from __future__ import annotations

import json
import threading
from typing import Any

from .errors import BadRequest, Unavailable
from .types import fits_float, plain

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
_TYPES = tuple(sorted(set(_ELEMENTS.values())))


class ModelRefused(BadRequest):
    pass


# --- intake at publish ------------------------------------------------------------------------
def unmark(data: bytes) -> bytes:
    """The model without revoscalepy's 4-byte mark, when it has one."""
    return data[len(MARK):] if data[:len(MARK)] == MARK else data


def is_pickle(data: bytes) -> bool:
    return data[:1] == _PICKLE


def prepare(user: str, sent: bytes) -> tuple[bytes, dict[str, Any]]:
    """The ONNX model to store for what was sent, and what o16n keeps about it.
    :raises ModelRefused: :raises Unavailable: no sandbox now"""
    data, columns = unmark(sent), []
    if not data:
        raise ModelRefused("the 'model' file is empty")
    if is_pickle(data):
        reply = _in_fresh_worker(user, {"op": "to_onnx", "model": data},
                                 "the pickled model could not be converted to ONNX")
        data, columns = reply.get("onnx"), reply.get("columns")
        if not isinstance(data, bytes) or not isinstance(columns, list):
            raise ModelRefused("the pickled model could not be converted to ONNX")
    # Checked in a worker of its own: the one that converted a pickle ran the user's code.
    info = _valid_info(_in_fresh_worker(user, {"op": "realtime_check", "model": data},
                                        "onnxruntime could not load the model").get("info"))
    if columns:
        shape = info["inputs"][0]["shape"]
        if (len(info["inputs"]) != 1 or len(shape) != 2 or shape[1] != len(columns)
                or not all(isinstance(c, str) and 0 < len(c) <= 256 for c in columns)):
            raise ModelRefused("the converted model's feature names do not match its input")
        info["columns"] = columns
    return data, info


#: pickles converted and models checked at once per instance (each takes a worker and a
#: thread), and per user, so one user cannot hold them all
MAX_CHECKS_AT_ONCE, MAX_CHECKS_PER_USER = 2, 1
_checks = threading.BoundedSemaphore(MAX_CHECKS_AT_ONCE)
_checking: dict[str, int] = {}
_checking_lock = threading.Lock()


def _in_fresh_worker(user: str, message: dict[str, Any], failed: str) -> dict[str, Any]:
    """One call in a new sandboxed worker, killed after it. :raises ModelRefused: :raises Unavailable:"""
    with _checking_lock:
        if _checking.get(user, 0) >= MAX_CHECKS_PER_USER:
            raise Unavailable("another of your realtime models is being checked; try again when it is done",
                              retry_after=5)
        _checking[user] = _checking.get(user, 0) + 1
    try:
        return _checked_call(user, message, failed)
    finally:
        with _checking_lock:
            _checking[user] -= 1
            if not _checking[user]:
                del _checking[user]


def _checked_call(user: str, message: dict[str, Any], failed: str) -> dict[str, Any]:
    from .config import get_settings
    from .sandbox import pool

    if not _checks.acquire(blocking=False):
        raise Unavailable("other realtime models are being checked on this instance; try again shortly",
                          retry_after=5)
    try:
        worker = pool.spares.take(json.dumps([user]))
        try:
            reply = worker.call(message, timeout=get_settings().execution_timeout_seconds)
        except pool.WorkerTimeout:
            raise ModelRefused(f"{failed}: it took longer than EXECUTION_TIMEOUT_SECONDS") from None
        except (pool.WorkerDied, pool.WorkerBusy) as exc:
            raise ModelRefused(f"{failed} ({_short(exc)})") from None
        finally:
            worker.kill()  # it has read the user's bytes: never reused
    finally:
        _checks.release()
    if not reply.get("ok"):
        raise ModelRefused(str(reply.get("error") or failed)[:600])
    return reply


def _valid_info(info: Any) -> dict[str, Any]:
    """What a worker said about a model, as the host relies on it. :raises ModelRefused:"""
    def tensor(t: Any, inp: bool) -> dict[str, Any]:
        ok = (isinstance(t, dict) and isinstance(t.get("name"), str) and 0 < len(t["name"]) <= 256
              and t.get("type") in _TYPES + (() if inp else ("scores",)))
        shape = t.get("shape") if ok else None
        if ok and inp:
            ok = (isinstance(shape, list) and len(shape) in (1, 2)
                  and all(d is None or (isinstance(d, int) and 0 < d <= 100_000) for d in shape[1:])
                  and (len(shape) == 1 or shape[1] is not None))
        if not ok:
            raise ModelRefused("the model's inputs and outputs could not be read")
        return {"name": t["name"], "type": t["type"], "shape": shape}

    if not (isinstance(info, dict) and all(isinstance(info.get(k), list) and 0 < len(info[k]) <= MAX_TENSORS
                                           for k in ("inputs", "outputs"))):
        raise ModelRefused("the model's inputs and outputs could not be read")
    return {"inputs": [tensor(t, True) for t in info["inputs"]], "outputs": [tensor(t, False) for t in info["outputs"]]}


def check(data: bytes) -> dict[str, Any]:
    """What o16n keeps about an ONNX model it accepts: its inputs and outputs.
    :raises ModelRefused: naming what is wrong"""
    import onnx

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
    for tensor in list(graph.initializer) + [t for sp in graph.sparse_initializer for t in (sp.values, sp.indices)]:
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
            for sparse in [attr.sparse_tensor] + list(attr.sparse_tensors):
                _no_external(sparse.values)
                _no_external(sparse.indices)
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


# --- scoring (in the worker) ---------------------------------------------------------------
def session(data: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # errors come back as exceptions
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def describe(exc: BaseException) -> str:
    """onnxruntime's message without its source paths and C++ signatures."""
    import re

    text = str(exc).split("Status Message:")[-1]
    text = re.sub(r"\S+\.(?:cc|cpp|h):\d+|\[ONNXRuntimeError\] : \d+ : \w+ :"
                  r"|(?:void\*\s*)?\S*onnxruntime::\S*?\([^)]*\)", "", text)
    return _short(" ".join(text.split()) or type(exc).__name__)


def check_columns(info: dict[str, Any], columns: dict[str, list]) -> dict[str, Any]:
    """inputData against the model's inputs, on the host: what the worker is sent, or a 400
    that names the column. `stack`: the columns make the one [rows, columns] input, in order."""
    inputs = info["inputs"]
    names = list(columns)
    if not names:
        raise BadRequest(f"'{INPUT}' has no columns")
    if not columns[names[0]]:
        raise BadRequest(f"'{INPUT}' has no rows")
    if len(inputs) == 1 and inputs[0]["name"] not in columns and len(inputs[0]["shape"]) == 2:
        spec = inputs[0]
        wanted = info.get("columns") or names
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise BadRequest(f"'{INPUT}' lacks the column '{missing[0][:64]}' the model was trained with")
        if spec["shape"][1] != len(wanted):
            raise BadRequest(f"the model takes {spec['shape'][1]} columns; '{INPUT}' has {len(wanted)}")
        picked = [(c, spec["type"]) for c in wanted]
        stack = True
    else:
        for spec in inputs:
            if spec["name"] not in columns:
                raise BadRequest(f"'{INPUT}' lacks the column '{spec['name'][:64]}' (the model's inputs: "
                                 f"{', '.join(i['name'][:64] for i in inputs[:20])})")
        picked = [(spec["name"], spec["type"]) for spec in inputs]
        stack = False
    for name, dtype in picked:
        _check_values(name, columns[name], dtype)
    return {"stack": stack, "columns": [[name, columns[name]] for name, _ in picked]}


_INT_RANGE = (-2**63, 2**63 - 1)


def _check_values(name: str, values: list, dtype: str) -> None:
    if dtype == "object":
        ok, kind = all(isinstance(v, str) for v in values), "strings"
    elif dtype == "bool":
        ok, kind = all(isinstance(v, bool) for v in values), "true or false"
    elif dtype.startswith(("int", "uint")):
        ok, kind = all(not isinstance(v, bool) and (isinstance(v, int) or (isinstance(v, float) and v.is_integer()))
                       and _INT_RANGE[0] <= v <= _INT_RANGE[1] for v in values), "whole numbers of at most 64 bits"
    else:
        ok, kind = all(isinstance(v, (int, float)) and not isinstance(v, bool) and fits_float(v) for v in values), \
            "numbers"
    if not ok:
        raise BadRequest(f"column '{name[:64]}' of '{INPUT}' must hold {kind} ({dtype} for the model)")


def score(model: Any, info: dict[str, Any], plan: dict[str, Any]) -> dict[str, list]:
    """In the worker: the checked columns through the model, as outputData.
    :raises RealtimeFailed: with the reason to show"""
    import numpy as np

    try:
        arrays = [np.array(values, dtype=object if dtype == "object" else dtype)
                  for (_, values), dtype in zip(plan["columns"], _dtypes(info, plan))]
        if plan["stack"]:
            feeds = {info["inputs"][0]["name"]: np.stack(arrays, axis=1)}
        else:
            feeds = {spec["name"]: a.reshape(-1, 1) if len(spec["shape"]) == 2 else a
                     for spec, a in zip(info["inputs"], arrays)}
        results = model.run(None, feeds)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
        if isinstance(exc, MemoryError) or "allocate" in str(exc):
            raise RealtimeFailed("the model needs more memory for this input than a worker may have "
                                 "(WORKER_MEMORY_MB); send fewer rows") from None
        raise RealtimeFailed(f"the model failed on this input (onnxruntime: {describe(exc)})") from None
    return to_columns({o.name: r for o, r in zip(model.get_outputs(), results)})


def _dtypes(info: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    if plan["stack"]:
        return [info["inputs"][0]["type"]] * len(plan["columns"])
    return [spec["type"] for spec in info["inputs"]]


def to_columns(results: dict[str, Any]) -> dict[str, list]:
    """outputData: one column per output, or name_0, name_1, ... for an output with several
    values per row. NaN and infinities become null (JSON has neither)."""
    out: dict[str, list] = {}
    for name, array in results.items():
        if isinstance(array, list):  # ZipMap: one {class: score} per row
            for label in (array[0] if array else {}):
                out[f"{name}_{label}"] = plain([row.get(label) for row in array])
            continue
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim == 2:
            for j in range(array.shape[1]):
                out[f"{name}_{j}"] = plain(array[:, j])
        else:
            out[name] = plain(array)
    return out


def columns_of(value: Any) -> dict[str, list]:
    """inputData as columns: an object of column arrays, or an array of row objects.
    :raises BadRequest:"""
    if isinstance(value, list):
        if not value:
            raise BadRequest(f"'{INPUT}' has no rows")
        names = list(value[0])
        wanted = set(names)
        if any(len(row) != len(names) or not wanted.issuperset(row) for row in value):
            raise BadRequest(f"every row of '{INPUT}' must have the same columns")
        return {k: [row[k] for row in value] for k in names}
    return value


class RealtimeFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
