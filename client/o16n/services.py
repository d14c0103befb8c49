"""Web services: the fluent definitions that publish them, the Service that calls them, and
batches. Shaped like ML Server's SDK (`azureml.deploy`), so code written for it reads the same."""
from __future__ import annotations

import base64
import inspect
import keyword
import os
import pickle
import textwrap
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _files, _types
from ._http import segment
from .errors import HttpResponseError, ServiceError

if TYPE_CHECKING:
    from .client import O16nClient

__all__ = ["Pickled", "Parameter", "ServiceDefinition", "RealtimeDefinition", "Service", "ServiceResponse", "Batch",
           "BatchResult"]


@dataclass(frozen=True)
class Pickled:
    """An object already pickled (a model file's bytes): `.models(clf=Pickled(data))` sends it as is."""
    data: bytes


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str


def _path(name: str, version: str | None = None) -> str:
    out = segment(name, "name")
    return out if version is None else f"{out}/{segment(version, 'version')}"


class _Definition:
    def __init__(self, client: O16nClient, name: str) -> None:
        segment(name, "name")
        self._client = client
        self._name = name
        self._version: str | None = None
        self._description: str | None = None
        self._alias: str | None = None

    def version(self, version: str) -> _Definition:
        segment(version, "version")
        self._version = version
        return self

    def description(self, description: str) -> _Definition:
        self._description = description
        return self

    def alias(self, operation_id: str) -> _Definition:
        """The service's operationId: the name of the method that calls it."""
        self._alias = operation_id
        return self


class ServiceDefinition(_Definition):
    """A standard service: Python code run per call, with typed inputs and outputs, and models
    (any picklable objects) that its code finds as variables."""

    def __init__(self, client: O16nClient, name: str) -> None:
        super().__init__(client, name)
        self._code: str | None = None
        self._init: str | None = None
        self._fn: Callable | None = None
        self._inputs: dict[str, str] | None = None
        self._outputs: dict[str, str] | None = None
        self._objects: dict[str, Any] = {}
        self._artifacts: list[str] | None = None
        self._kept_outputs: list[str] = []

    def code_fn(self, code: Callable, init: Callable | None = None) -> ServiceDefinition:
        """The service runs `code(inputs...)` and, once per worker, `init()` first. Their source is
        sent (as ML Server's SDK does), so what they use must be imported inside them or in `init`;
        `code` returns its output, or a tuple of its outputs in `.outputs(...)` order."""
        for fn in (code, init):
            if fn is not None and (not inspect.isfunction(fn) or fn.__name__ == "<lambda>"):
                raise ValueError("code_fn takes functions defined with def")
        self._fn = code
        # defined once per worker (initCode), so a call runs only the call line
        self._init = _source(code) + ("" if init is None else "\n" + _source(init) + f"\n{init.__name__}()\n")
        self._code = ""
        return self

    def code_str(self, code: str, init: str | None = None) -> ServiceDefinition:
        self._fn, self._code, self._init = None, code, init
        return self

    def inputs(self, **types: Any) -> ServiceDefinition:
        self._inputs = {k: _types.server_type(v, k) for k, v in types.items()}
        return self

    def outputs(self, **types: Any) -> ServiceDefinition:
        self._outputs = {k: _types.server_type(v, k) for k, v in types.items()}
        return self

    def models(self, **objects: Any) -> ServiceDefinition:
        self._objects.update(objects)
        return self

    objects = models

    def artifacts(self, names: Iterable[str]) -> ServiceDefinition:
        self._artifacts = list(names)
        return self

    def artifact(self, name: str) -> ServiceDefinition:
        self._artifacts = [*(self._artifacts or []), name]
        return self

    def deploy(self) -> Service:
        """Publish a new version (a GUID version when none was given) and return it."""
        return self._publish("POST", full=True)

    def redeploy(self) -> Service:
        """Update the version; what was not set here (inputs, outputs, artifacts) is kept."""
        current = self._client.get_service(self._name, version=self._version)
        self._version = current.version
        if self._fn is not None and self._outputs is None:
            self._kept_outputs = [p.name for p in current.outputs]  # the call line assigns them
        return self._publish("PATCH", full=False)

    def _request(self, full: bool) -> dict[str, Any]:
        if full and self._code is None:
            raise ValueError("set the code first: .code_fn(...) or .code_str(...)")
        code = self._call_line() if self._fn is not None else self._code
        body: dict[str, Any] = {"runtimeType": "Python", "code": code, "initCode": self._init,
                                "description": self._description,
                                "operationId": self._alias or (self._fn.__name__ if self._fn else None)}
        if self._inputs is not None or full:
            body["inputParameterDefinitions"] = [{"name": k, "type": v} for k, v in self._ordered_inputs()]
        if self._outputs is not None or full:
            body["outputParameterDefinitions"] = [{"name": k, "type": v} for k, v in (self._outputs or {}).items()]
        if self._artifacts is not None:
            body["outputFileNames"] = self._artifacts
        return {k: v for k, v in body.items() if v is not None}

    def _ordered_inputs(self) -> list[tuple[str, str]]:
        inputs = self._inputs or {}
        if self._fn is None:
            return list(inputs.items())
        args = list(inspect.signature(self._fn).parameters)
        missing = [a for a in args if a not in inputs]
        extra = [k for k in inputs if k not in args]
        if missing or extra:
            raise ValueError(f"inputs must name {self._fn.__name__}'s arguments: "
                             f"missing {missing or 'none'}, not arguments {extra or 'none'}")
        return [(a, inputs[a]) for a in args]

    def _call_line(self) -> str:
        assert self._fn is not None
        outs = list(self._outputs) if self._outputs is not None else self._kept_outputs
        return call_line(self._fn.__name__, list(inspect.signature(self._fn).parameters), outs)

    def _publish(self, method: str, *, full: bool) -> Service:
        body = self._request(full)
        client = self._client
        if self._objects:
            with client.create_session(name=f"publishing {self._name}") as session:
                for key, value in self._objects.items():
                    if isinstance(value, Pickled):
                        session.set_object_bytes(key, value.data)
                    else:
                        session.set_object(key, value)
                snapshot = session.snapshot(f"{self._name} {self._version or ''}".strip())
            body["snapshotId"] = snapshot.id
        try:
            path = _path(self._name, self._version)
            answer = client._transport.json(method, f"services/{path}", json=body)
            version = self._version or (answer.strip('"') if isinstance(answer, str) else None)
        finally:
            if self._objects:
                client.delete_snapshot(body["snapshotId"])  # the service keeps its own copy
        return client.get_service(self._name, version=version)


class RealtimeDefinition(_Definition):
    """A realtime service: an ONNX model, or a scikit-learn estimator the server converts to ONNX.
    Inputs are `inputData` (a data frame of the model's inputs), outputs `outputData`."""

    def __init__(self, client: O16nClient, name: str) -> None:
        super().__init__(client, name)
        self._model: bytes | None = None

    def serialized_model(self, model: Any) -> RealtimeDefinition:
        """The model: ONNX bytes or an onnx ModelProto, a path to a .onnx or .pkl file, or a
        fitted scikit-learn estimator (pickled here; the server converts it in a sandbox)."""
        if isinstance(model, (bytes, bytearray)):
            data = bytes(model)
        elif isinstance(model, (str, os.PathLike)):
            data = Path(model).read_bytes()
        elif hasattr(model, "SerializeToString"):
            data = model.SerializeToString()
        elif hasattr(model, "predict"):
            data = pickle.dumps(model, protocol=4)
        else:
            raise ValueError("serialized_model takes ONNX bytes, a .onnx/.pkl path or a fitted estimator")
        if not data:
            raise ValueError("the model is empty")
        self._model = data
        return self

    model = serialized_model

    def deploy(self) -> Service:
        return self._send("POST")

    def redeploy(self) -> Service:
        if self._version is None:
            raise ValueError("redeploying a realtime service needs its version")
        return self._send("PATCH")

    def _send(self, method: str) -> Service:
        if method == "POST" and self._model is None:
            raise ValueError("set the model first: .serialized_model(...)")
        fields = {k: (None, v) for k, v in (("description", self._description), ("operationId", self._alias))
                  if v is not None}
        if self._model is not None:
            fields["model"] = ("model", self._model, "application/octet-stream")
        answer = self._client._transport.json(method, f"realtime-services/{_path(self._name, self._version)}",
                                              files=fields)
        version = self._version or (answer.strip('"') if isinstance(answer, str) else None)
        return self._client.get_service(self._name, version=version)


def call_line(function: str, args: list[str], outputs: list[str]) -> str:
    """What a service runs per call: the function, its inputs by name, its result into the
    outputs (several outputs: the function returns a tuple in their order)."""
    call = f"{function}({', '.join(f'{a}={a}' for a in args)})"
    return f"{', '.join(outputs)} = {call}\n" if outputs else f"{call}\n"


def _source(fn: Callable) -> str:
    try:
        return textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as exc:
        raise ValueError(f"the source of {fn.__name__} cannot be read (define it in a file, or use code_str)") from exc


class ServiceResponse:
    """One call's answer: outputs decoded by their declared types, console output, files."""

    def __init__(self, body: dict[str, Any], outputs: list[Parameter] | None = None) -> None:
        self.raw = body
        self.success: bool = bool(body.get("success"))
        self.error: str = body.get("errorMessage") or ""
        self.console_output: str = body.get("consoleOutput") or ""
        self.raw_outputs: dict[str, Any] = body.get("outputParameters") or {}
        self.artifacts: dict[str, str | None] = body.get("outputFiles") or {}
        kinds = {p.name: p.type for p in outputs or []}
        self.outputs = {k: _types.decode(v, kinds.get(k)) for k, v in self.raw_outputs.items()}

    def output(self, name: str) -> Any:
        return self.outputs[name]

    def artifact(self, name: str, *, decode: bool = True) -> bytes | str | None:
        value = self.artifacts[name]
        return base64.b64decode(value) if decode and value is not None else value

    def raise_for_error(self) -> ServiceResponse:
        if not self.success:
            raise ServiceError(self.error or "the service failed", self)
        return self

    def __repr__(self) -> str:
        return f"ServiceResponse(success={self.success}, outputs={self.raw_outputs!r}, error={self.error!r})"


class Service:
    """A published version. Call it by its operationId (`svc.score(...)`) or `consume(...)`:
    positional arguments in its inputs' order, or by name."""

    def __init__(self, client: O16nClient, body: dict[str, Any]) -> None:
        self._client = client
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str) and body[k] for k in ("name", "version")):
            raise HttpResponseError("the server sent a service without a name or a version")
        self.raw = body
        self.name: str = body["name"]
        self.version: str = body["version"]
        self.description: str = body.get("description") or ""
        self.runtime_type: str = body.get("runtimeType") or ""
        self.operation_id: str = body.get("operationId") or "consume"
        self.published_by: str = body.get("versionPublishedBy") or ""
        self.creation_time: str = body.get("creationTime") or ""
        self.snapshot_id: str = body.get("snapshotId") or ""
        self.permission: str = body.get("myPermissionOnService") or ""
        self.artifacts: list[str] = body.get("outputFileNames") or []
        self.inputs = [Parameter(p["name"], p["type"]) for p in body.get("inputParameterDefinitions") or []]
        self.outputs = [Parameter(p["name"], p["type"]) for p in body.get("outputParameterDefinitions") or []]
        op = self.operation_id
        # the publisher chose the name: it may add a method, never replace a field or a method
        if op.isidentifier() and not keyword.iskeyword(op) and not op.startswith("_") \
                and not hasattr(self, op):
            setattr(self, op, self._method())

    def _method(self) -> Callable[..., ServiceResponse]:
        def call(*args: Any, **kwargs: Any) -> ServiceResponse:
            return self.consume(*args, **kwargs)
        call.__name__ = self.operation_id
        call.__doc__ = self.description
        call.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in self.inputs
             if p.name.isidentifier()])
        return call

    @property
    def api(self) -> str:
        return f"api/{_path(self.name, self.version)}"

    def _inputs(self, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        names = [p.name for p in self.inputs]
        if len(args) > len(names):
            raise TypeError(f"{self.operation_id}() takes {len(names)} inputs ({', '.join(names)}), {len(args)} given")
        values = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names:
                raise TypeError(f"{self.operation_id}() has no input {key!r}; its inputs: {', '.join(names) or 'none'}")
            if key in values:
                raise TypeError(f"{self.operation_id}() got input {key!r} twice")
            values[key] = value
        return {k: _types.encode(v) for k, v in values.items()}

    def consume(self, *args: Any, **kwargs: Any) -> ServiceResponse:
        body = self._inputs(args, kwargs)
        return ServiceResponse(self._client._transport.json("POST", self.api, json=body), self.outputs)

    def swagger(self) -> dict[str, Any]:
        return self._client._transport.json("GET", f"{self.api}/swagger.json")

    def capabilities(self) -> dict[str, Any]:
        return {"api": f"/{self.api}", "name": self.name, "version": self.version,
                "published_by": self.published_by, "runtime": self.runtime_type, "description": self.description,
                "creation_time": self.creation_time, "snapshot_id": self.snapshot_id,
                "inputs": {p.name: p.type for p in self.inputs}, "outputs": {p.name: p.type for p in self.outputs},
                "artifacts": self.artifacts, "operation_id": self.operation_id,
                "swagger": self._client._transport.url(f"{self.api}/swagger.json"), "permission": self.permission}

    def batch(self, records: Any, *, parallel_count: int = 10) -> Batch:
        """A batch of records (a DataFrame, a dict of columns, or a list of dicts); `start()` sends it."""
        return Batch(self, _records(records, [p.name for p in self.inputs]), parallel_count)

    def get_batch(self, execution_id: str) -> Batch:
        return Batch(self, None, None, execution_id=execution_id)

    def list_batch_executions(self) -> list[str]:
        return self._client._transport.json("GET", f"{self.api}/batch")

    def __repr__(self) -> str:
        return f"Service(name={self.name!r}, version={self.version!r}, operation_id={self.operation_id!r})"


def _records(records: Any, names: list[str]) -> list[dict[str, Any]]:
    if hasattr(records, "to_dict") and hasattr(records, "columns"):
        rows = records.to_dict(orient="records")
    elif isinstance(records, dict):
        columns = {k: list(v) for k, v in records.items()}
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError("every column of the records must have the same length")
        rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    else:
        rows = list(records)
    if not rows:
        raise ValueError("a batch needs at least one record")
    if not names:
        raise ValueError("this service takes no inputs, so it cannot score records")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"record {i} must be a dict of the service's inputs")
        out.append({k: _types.encode(row[k]) for k in names if k in row}
                   | {k: _types.encode(v) for k, v in row.items() if k not in names})
    return out


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


class BatchResult:
    """A batch's state (`Pending`, `InProgress`, `Complete`, `Failed`) and the results so far."""

    def __init__(self, body: dict[str, Any], outputs: list[Parameter]) -> None:
        self.raw = body
        self.state: str = body.get("state") or ""
        self.completed_item_count: int = _int(body.get("completedItemCount"))
        self.total_item_count: int = _int(body.get("totalItemCount"))
        self._results = body.get("batchExecutionResults") or []
        self._outputs = outputs

    @property
    def done(self) -> bool:
        return self.state.lower() in ("complete", "failed")

    def execution(self, index: int) -> ServiceResponse:
        return ServiceResponse(self._results[index], self._outputs)

    def __len__(self) -> int:
        return len(self._results)

    def __iter__(self) -> Any:
        return (self.execution(i) for i in range(len(self._results)))


class Batch:
    def __init__(self, service: Service, records: list[dict] | None, parallel_count: int | None, *,
                 execution_id: str | None = None) -> None:
        if parallel_count is not None and (not isinstance(parallel_count, int) or parallel_count < 1):
            raise ValueError("parallel_count must be a positive integer")
        self.service = service
        self.records = records
        self.parallel_count = parallel_count
        self.execution_id = execution_id

    @property
    def _api(self) -> str:
        if self.execution_id is None:
            raise ValueError("the batch has not been started")
        return f"{self.service.api}/batch/{segment(self.execution_id, 'execution_id')}"

    def start(self) -> Batch:
        if self.records is None:
            raise ValueError("this batch has no records to send")
        answer = self.service._client._transport.json(
            "POST", f"{self.service.api}/batch", json=self.records, params={"parallelCount": self.parallel_count})
        execution_id = answer.get("batchExecutionId") or answer.get("BatchExecutionId") \
            if isinstance(answer, dict) else None
        if not isinstance(execution_id, str) or not execution_id:
            raise HttpResponseError("the server's answer to a batch start named no batch")
        self.execution_id = execution_id
        return self

    def results(self, *, show_partial_results: bool = True) -> BatchResult:
        body = self.service._client._transport.json(
            "GET", self._api, params={"showPartialResults": str(show_partial_results).lower()})
        return BatchResult(body, self.service.outputs)

    def wait(self, *, poll_seconds: float = 1.0, timeout: float | None = None,
             progress: Callable[[BatchResult], None] | None = None) -> BatchResult:
        """Polls until the batch is Complete or Failed; `progress` sees each state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            result = self.results(show_partial_results=False)
            if progress is not None:
                progress(result)
            if result.done:
                return self.results()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"batch {self.execution_id} is still {result.state} after {timeout} s")
            time.sleep(poll_seconds)

    def cancel(self) -> list[str]:
        return self.service._client._transport.json("DELETE", self._api)

    def list_artifacts(self, index: int) -> list[str]:
        return self.service._client._transport.json("GET", f"{self._api}/{int(index)}/files")

    def artifact(self, index: int, name: str) -> bytes:
        return self.service._client._transport.send(
            "GET", f"{self._api}/{int(index)}/files/{segment(name, 'file name')}").content

    def download(self, index: int, name: str, destination: str | os.PathLike = ".", *,
                 overwrite: bool = False) -> Path:
        """Writes the file into `destination` under its base name (never a hidden one), and
        refuses to replace a file there unless `overwrite`."""
        target = Path(destination) / _files.base_name(name)
        data = self.artifact(index, name)
        with open(target, "wb" if overwrite else "xb") as f:
            f.write(data)
        return target
