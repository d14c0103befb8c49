"""Runs in its own venv with Microsoft's ML Server client, azureml-model-management-sdk
1.0.1b6.post1, and drives o16n the way ML Server's Python documentation does. Prints one JSON
object of what the client saw. Usage: python sdk_client.py URL USER PASSWORD ONNX_FILE
(ONNX_FILE: the cars model below as ONNX, made by the test: this venv has no skl2onnx)"""
import json
import sys

import azureml.deploy.server.service as sdk_service
import numpy as np
import pandas as pd
from azureml.deploy import DeployClient
from azureml.deploy.server import MLServer
from sklearn.linear_model import LogisticRegression


def function_beget(fn, fn_name, fn_args, doc=""):
    """The SDK builds each service's consume method with types.CodeType as it was in Python 3.7
    (TypeError on 3.8+). This builds the same method: named after the operationId, positional
    parameters in inputParameterDefinitions order, collecting the inputs by name and calling
    self._consume. Every HTTP call and decoding stays the SDK's own."""
    self_name, *inputs = fn_args
    body = ", ".join(f"{name!r}: {name}" for name in inputs)
    src = f"def {fn_name}({', '.join(fn_args)}):\n    return {self_name}._consume({{{body}}})\n"
    namespace = {}
    exec(compile(src, "<consume>", "exec"), namespace)
    method = namespace[fn_name]
    method.__doc__ = doc
    return method


sdk_service.function_beget = function_beget  # the one client-side fault replaced

url, user, password, onnx_file = sys.argv[1:5]
seen = {}

# --- ML Server's "Deploy and manage web services in Python" walkthrough, with scikit-learn ---
client = DeployClient(url, use=MLServer, auth=(user, password))
cars = pd.DataFrame({
    "hp": [110, 110, 93, 110, 175, 105, 245, 62, 95, 123, 123, 180, 180, 180, 205, 215, 230, 66, 52, 65, 97, 150,
           150, 245, 175, 66, 91, 113, 264, 175, 335, 109],
    "wt": [2.62, 2.875, 2.32, 3.215, 3.44, 3.46, 3.57, 3.19, 3.15, 3.44, 3.44, 4.07, 3.73, 3.78, 5.25, 5.424, 5.345,
           2.2, 1.615, 1.835, 2.465, 3.52, 3.435, 3.84, 3.845, 1.935, 2.14, 1.513, 3.17, 2.77, 3.57, 2.78],
    "am": [1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]})
cars_model = LogisticRegression().fit(cars[["hp", "wt"]], cars["am"])
expected = float(cars_model.predict_proba(pd.DataFrame({"hp": [120], "wt": [2.8]}))[:, 1][0])


def init():
    global scale
    scale = 1.0


def manualTransmission(hp, wt):
    import pandas as pd
    newdata = pd.DataFrame({"hp": [hp], "wt": [wt]})
    answer = pd.DataFrame({"am_Pred": cars_model.predict_proba(newdata)[:, 1] * scale})
    print("scored", len(newdata), "row")
    answer.to_csv("answer.csv", index=False)
    return answer


service = (client.service("TxService")
           .version("1.0")
           .code_fn(manualTransmission, init)
           .inputs(hp=float, wt=float)
           .outputs(answer=pd.DataFrame)
           .models(cars_model=cars_model)
           .artifacts(["answer.csv", "image.png"])
           .description("My first python model")
           .deploy())
res = service.manualTransmission(120, 2.8)
answer = res.output("answer")
seen["consume"] = {"type": type(answer).__name__, "value": float(answer["am_Pred"][0]), "expected": expected,
                   "console": res.console_output, "error": res.error,
                   "artifact": res.artifact("answer.csv").decode(), "missing_artifact": res.artifacts["image.png"]}
# asynchronous batch, as ML Server's documentation drives it
import tempfile  # noqa: E402
import time  # noqa: E402

records = cars[["hp", "wt"]].head(12).astype(float)
batch = service.batch(records, parallel_count=3).start()
execution_id = batch.execution_id
deadline = time.time() + 180
while True:
    done = batch.results(show_partial_results=False)
    if done.state in ("Complete", "Failed") or time.time() > deadline:
        break
    time.sleep(0.5)
download_to = tempfile.mkdtemp()
seen["batch"] = {
    "state": done.state, "completed": done.completed_item_count, "total": done.total_item_count,
    "values": [float(done.execution(i).output("answer")["am_Pred"][0]) for i in range(12)],
    "expected": [float(p) for p in cars_model.predict_proba(records)[:, 1]],
    "listed": execution_id in service.list_batch_executions(),
    "again": service.get_batch(execution_id).results(show_partial_results=True).completed_item_count,
    "artifacts": batch.list_artifacts(0),
    "artifact": batch.artifact(0, "answer.csv").decode().splitlines()[0],
    "downloaded": [p.rsplit("/", 1)[1] for p in batch.download(0, "answer.csv", destination=download_to)],
}
batch.cancel()
seen["batch"]["after_cancel"] = execution_id in service.list_batch_executions()

caps = service.capabilities()
seen["capabilities"] = {k: caps[k] for k in ("name", "version", "published_by", "runtime", "description",
                                             "operation_id", "artifacts")}
seen["capabilities"]["inputs"] = [i["name"] for i in caps["inputs"]]
seen["swagger_paths"] = sorted(json.loads(service.swagger())["paths"])

# typed scalars and arrays
svc2 = (client.service("Typed").version("v1")
        .code_str("n = count + 1\nr = ratio / 2\nf = not flag\ns = label.upper()\nv = values * 2\nm = grid.T")
        .inputs(count=int, ratio=float, flag=bool, label=str, values=np.array, grid=np.matrix)
        .outputs(n=int, r=float, f=bool, s=str, v=np.array, m=np.matrix)
        .alias("compute")
        .deploy())
res2 = svc2.compute(3, 1.5, True, "abc", np.array([1, 2, 3]), np.matrix([[1, 2], [3, 4]]))
seen["typed"] = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in res2.outputs.items()}
seen["typed_types"] = {k: type(v).__name__ for k, v in res2.outputs.items()}

# a data.frame service
frame = (client.service("Frame").version("v1")
         .code_str("import pandas as pd\nout = df.assign(total=df['a'] + df['b'])")
         .inputs(df=pd.DataFrame).outputs(out=pd.DataFrame).deploy())
res3 = frame.consume(pd.DataFrame({"a": [1, 2], "b": [10, 20]}))
seen["frame"] = res3.output("out").to_dict(orient="list")

# management
seen["listed"] = sorted({(s["name"], s["version"]) for s in client.list_services()
                         if s["name"] in ("TxService", "Typed", "Frame")})
seen["by_name"] = [s["version"] for s in client.list_services("TxService")]
seen["one"] = client.list_services("TxService", version="1.0")[0]["description"]
# redeploy sends a new snapshot, code, inputs, outputs and description; the absent artifacts are kept
# (with code_fn the SDK needs inputs and outputs again to build the call line)
redeployed = (client.service("TxService").version("1.0").code_fn(manualTransmission, init)
              .inputs(hp=float, wt=float).outputs(answer=pd.DataFrame).models(cars_model=cars_model)
              .description("patched by redeploy").redeploy())
got = client.get_service("TxService", version="1.0")
seen["redeploy"] = {"description": got.capabilities()["description"],
                    "outputs": [o["name"] for o in got.capabilities()["outputs"]],
                    "artifacts": got.capabilities()["artifacts"],
                    "inputs": [i["name"] for i in got.capabilities()["inputs"]],
                    "answer": float(redeployed.manualTransmission(120, 2.8).output("answer")["am_Pred"][0])}
latest = client.get_service("TxService")
seen["latest_version"] = latest.capabilities()["version"]

# a development version (no version: the server makes a GUID)
dev = client.service("DevOnly").code_str("y = 2.5").outputs(y=float).deploy()
seen["dev"] = {"version_len": len(dev.capabilities()["version"]), "y": dev.consume().output("y")}

# a realtime service: ONNX behind revoscalepy's mark (the SDK refuses models without it)
with open(onnx_file, "rb") as f:
    onnx_model = f.read()
realtime = (client.realtime_service("TxRealtime").version("v1").serialized_model(b"blob" + onnx_model)
            .description("cars as ONNX").deploy())
frame_out = realtime.consume(pd.DataFrame({"hp": [120.0], "wt": [2.8]})).output("outputData")
caps = realtime.capabilities()
seen["realtime"] = {"runtime": caps["runtime"], "inputs": [i["name"] for i in caps["inputs"]],
                    "type": type(frame_out).__name__, "columns": sorted(frame_out.columns),
                    "p1": float(frame_out["probabilities_1"][0])}
# redeploy with a pickled scikit-learn model, converted to ONNX by o16n
import pickle  # noqa: E402

redeployed_rt = (client.realtime_service("TxRealtime").version("v1")
                 .serialized_model(b"blob" + pickle.dumps(cars_model)).description("cars, converted").redeploy())
again = redeployed_rt.consume(pd.DataFrame({"wt": [2.8], "hp": [120.0]})).output("outputData")
seen["realtime"]["redeployed"] = {"description": redeployed_rt.capabilities()["description"],
                                  "p1": float(again["probabilities_1"][0])}

dev_version = dev.capabilities()["version"]
for name, version in (("TxService", "1.0"), ("Typed", "v1"), ("Frame", "v1"), ("DevOnly", dev_version),
                      ("TxRealtime", "v1")):
    seen.setdefault("deleted", []).append(client.delete_service(name, version=version))
try:
    client.get_service("TxService", version="1.0")
    seen["after_delete"] = "still there"
except Exception as exc:  # the SDK raises HttpException(404) or ValueError
    seen["after_delete"] = type(exc).__name__

print("SDK-RESULT " + json.dumps(seen))
