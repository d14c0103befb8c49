"""Microsoft's ML Server Python client against o16n, changing nothing but the URL (and the one
client-side Python 3.8+ fault, see sdk_client.py)."""
import json
import subprocess
from pathlib import Path

import pytest

from tests.constants import USERS

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]


@pytest.fixture(scope="module")
def seen(sdk_python, base_url):
    script = Path(__file__).with_name("sdk_client.py")
    run = subprocess.run([str(sdk_python), str(script), base_url, "alice", USERS["alice"]], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    line = next(x for x in run.stdout.splitlines() if x.startswith("SDK-RESULT "))
    return json.loads(line[len("SDK-RESULT "):])


def test_deploy_with_code_fn_init_fn_models_and_artifacts_then_consume(seen):
    c = seen["consume"]
    assert c["type"] == "DataFrame" and c["value"] == pytest.approx(c["expected"])
    assert c["console"] == "scored 1 row\n" and c["error"] == ""
    assert c["artifact"].splitlines()[0] == "am_Pred" and c["missing_artifact"] is None


def test_capabilities_and_swagger_as_the_sdk_reads_them(seen):
    assert seen["capabilities"] == {"name": "TxService", "version": "1.0", "published_by": "alice",
                                    "runtime": "Python", "description": "My first python model",
                                    "operation_id": "manualTransmission", "artifacts": ["answer.csv", "image.png"],
                                    "inputs": ["hp", "wt"]}
    assert "/api/TxService/1.0" in seen["swagger_paths"]


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
    assert seen["deleted"] == [True, True, True, True]
    assert seen["after_delete"] in ("HttpException", "ValueError")
