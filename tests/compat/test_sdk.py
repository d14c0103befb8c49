"""Microsoft's ML Server Python client against o16n, changing nothing but the URL (and the one
client-side Python 3.8+ fault, see sdk_client.py)."""
import json
import subprocess
from pathlib import Path

import pytest

from tests.constants import USERS

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]


def _cars_onnx(path: Path) -> Path:
    """The SDK script's cars model as ONNX (the same data and estimator, fitted here)."""
    import numpy as np
    import pandas as pd
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    cars = pd.DataFrame({"hp": [110, 93, 175, 105, 245, 62, 95, 123, 180, 205, 66, 52, 97, 150, 91, 113, 264, 335],
                         "wt": [2.62, 2.32, 3.44, 3.46, 3.57, 3.19, 3.15, 3.44, 4.07, 5.25, 2.2, 1.615, 2.465, 3.52,
                                2.14, 1.513, 3.17, 3.57],
                         "am": [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 1]})
    model = LogisticRegression().fit(cars[["hp", "wt"]].values, cars["am"])
    path.write_bytes(to_onnx(model, np.zeros((1, 2), np.float32), options={id(model): {"zipmap": False}})
                     .SerializeToString())
    return path


@pytest.fixture(scope="module")
def seen(sdk_python, base_url, tmp_path_factory):
    script = Path(__file__).with_name("sdk_client.py")
    onnx_file = _cars_onnx(tmp_path_factory.mktemp("onnx") / "cars.onnx")
    run = subprocess.run([str(sdk_python), str(script), base_url, "alice", USERS["alice"], str(onnx_file)],
                         capture_output=True, text=True, timeout=300,
                         cwd=tmp_path_factory.mktemp("sdk"))  # the SDK downloads artifacts into the folder it runs in
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    line = next(x for x in run.stdout.splitlines() if x.startswith("SDK-RESULT "))
    return json.loads(line[len("SDK-RESULT "):])


def test_deploy_with_code_fn_init_fn_models_and_artifacts_then_consume(seen):
    c = seen["consume"]
    assert c["type"] == "DataFrame" and c["value"] == pytest.approx(c["expected"])
    assert c["console"] == "scored 1 row\n" and c["error"] == ""
    assert c["artifact"].splitlines()[0] == "am_Pred" and c["missing_artifact"] is None


def test_the_sdks_batch_flow(seen):
    b = seen["batch"]
    assert (b["state"], b["completed"], b["total"]) == ("Complete", 12, 12)
    assert b["values"] == pytest.approx(b["expected"])
    assert b["listed"] and b["again"] == 12
    assert b["artifacts"] == ["answer.csv"] and b["artifact"] == "am_Pred"
    assert b["downloaded"] == ["answer.csv"]
    assert b["after_cancel"] is False


def test_capabilities_and_swagger_as_the_sdk_reads_them(seen):
    assert seen["capabilities"] == {"name": "TxService", "version": "1.0", "published_by": "alice",
                                    "runtime": "Python", "description": "My first python model",
                                    "operation_id": "manualTransmission", "artifacts": ["answer.csv", "image.png"],
                                    "inputs": ["hp", "wt"]}
    assert "/api/TxService/1.0" in seen["swagger_paths"]
    assert "/api/TxService/1.0/batch/{executionId}" in seen["swagger_paths"]


def test_typed_inputs_and_outputs_decode_to_the_declared_python_types(seen):
    assert seen["typed"] == {"n": 4, "r": 0.75, "f": False, "s": "ABC", "v": [2, 4, 6], "m": [[1, 3], [2, 4]]}
    assert seen["typed_types"] == {"n": "int", "r": "float", "f": "bool", "s": "str", "v": "ndarray",
                                   "m": "matrix"}


def test_a_data_frame_service(seen):
    assert seen["frame"] == {"a": [1, 2], "b": [10, 20], "total": [11, 22]}


def test_list_get_redeploy_and_delete(seen):
    assert seen["listed"] == [["Frame", "v1"], ["TxService", "1.0"], ["Typed", "v1"]]
    assert seen["by_name"] == ["1.0"] and seen["one"] == "My first python model"
    assert seen["redeploy"]["description"] == "patched by redeploy"
    assert seen["redeploy"]["inputs"] == ["hp", "wt"] and seen["redeploy"]["outputs"] == ["answer"]
    assert seen["redeploy"]["artifacts"] == ["answer.csv", "image.png"]
    assert seen["redeploy"]["answer"] == pytest.approx(seen["consume"]["expected"])
    assert seen["latest_version"] == "1.0"
    assert seen["dev"] == {"version_len": 36, "y": 2.5}
    assert seen["deleted"] == [True, True, True, True, True]
    assert seen["after_delete"] in ("HttpException", "ValueError")


def test_a_realtime_service_published_as_onnx_behind_the_revoscale_mark(seen):
    rt = seen["realtime"]
    assert rt["runtime"] == "Realtime" and rt["inputs"] == ["inputData"]
    assert rt["type"] == "DataFrame" and rt["columns"] == ["label", "probabilities_0", "probabilities_1"]
    assert 0.0 < rt["p1"] < 1.0
    # redeployed as a pickled scikit-learn model (the SDK's own full cars data): converted by o16n,
    # its columns matched by name although sent in another order
    assert rt["redeployed"]["description"] == "cars, converted"
    assert rt["redeployed"]["p1"] == pytest.approx(seen["consume"]["expected"], abs=1e-4)
