"""The installed `o16n` command against the local host: every command, human and --json output,
exit codes (0 done, 1 the server said no, 2 usage) and what the sign-in leaves on disk."""
from __future__ import annotations

import json
import pickle
import stat
import uuid

import pytest
import requests
from sklearn import datasets, svm

from tests.client.conftest import PASSWORDS, Cli

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]

IRIS_CODE = '''
def load():
    global names
    names = {0: "I. setosa", 1: "I. versicolor", 2: "I. virginica"}


def predict(flower):
    return [names[int(x)] for x in clf.predict([flower])]
'''


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def alice_cli(server, tmp_path_factory) -> Cli:
    cli = Cli(tmp_path_factory.mktemp("alice") / "config")
    cli.login(server, "alice")
    return cli


@pytest.fixture(scope="module")
def iris(alice_cli, tmp_path_factory):
    """The iris service published with the CLI: code from a file, a pickled model."""
    folder = tmp_path_factory.mktemp("iris")
    (folder / "iris.py").write_text(IRIS_CODE)
    data = datasets.load_iris()
    (folder / "clf.pkl").write_bytes(pickle.dumps(svm.SVC().fit(data.data, data.target)))
    name = unique("Iris")
    done = alice_cli.ok("publish", name, "1.0", "--code", str(folder / "iris.py"), "--function", "predict",
                        "--init", "load", "--model", f"clf={folder / 'clf.pkl'}", "--inputs", "flower=vector",
                        "--outputs", "species=vector", "--description", "iris from the CLI", "--json")
    published = json.loads(done.stdout)
    assert (published["name"], published["version"], published["operationId"]) == (name, "1.0", "predict")
    return name


def test_login_keeps_the_profile_and_tokens_owner_only_and_no_password(server, cli):
    cli.login(server, "bob")
    files = sorted(p.name for p in cli.config.iterdir() if not p.name.endswith(".lock"))
    assert files == ["default.json", "default.tokens.json"]
    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o700
    for path in cli.config.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert PASSWORDS["bob"] not in path.read_text()
    profile = json.loads((cli.config / "default.json").read_text())
    assert profile["server"] == server and profile["method"] == "password" and profile["username"] == "bob"
    status = json.loads(cli.ok("status", "--json").stdout)
    assert status["user"] == "bob" and status["status"]["statusCode"] in ("pass", "warn")
    assert "signed in with password as bob" in cli.ok("status").stdout


def test_logout_revokes_the_refresh_token(server, cli):
    cli.login(server, "bob")
    refresh = json.loads((cli.config / "default.tokens.json").read_text())["refresh_token"]
    assert "Signed out" in cli.ok("logout").stdout
    assert not (cli.config / "default.tokens.json").exists()
    assert requests.post(f"{server}/login/refreshToken", json={"refreshToken": refresh}).status_code == 401
    after = cli("services", "list")
    assert after.returncode == 1 and "sign in" in after.stderr


def test_a_wrong_password_or_server_fails_with_1_and_keeps_nothing(server, cli):
    done = cli("login", server, "--username", "bob", "--password-stdin", stdin="wrong password\n")
    assert done.returncode == 1 and "(401)" in done.stderr and "wrong password" not in done.stderr + done.stdout
    assert not (cli.config / "default.json").exists()
    assert cli("services", "list").returncode == 1


def test_a_token_given_as_is(server, cli):
    token = requests.post(f"{server}/login", json={"username": "alice", "password": PASSWORDS["alice"]}).json()
    cli.ok("--profile", "tok", "login", server, "--token-stdin", stdin=token["access_token"] + "\n")
    assert json.loads(cli.ok("--profile", "tok", "services", "list", "--json").stdout) is not None
    cli.ok("--profile", "tok", "logout")
    assert cli("--profile", "tok", "services", "list").returncode == 1


def test_services_list_show_call_and_swagger(alice_cli, iris):
    listed = json.loads(alice_cli.ok("services", "list", "--json").stdout)
    assert iris in {s["name"] for s in listed}
    table = alice_cli.ok("services", "list", iris).stdout
    assert iris in table and "flower: vector" in table and "standard" in table
    shown = alice_cli.ok("services", "show", iris, "1.0").stdout
    assert "iris from the CLI" in shown and f"/api/{iris}/1.0/swagger.json" in shown

    answer = alice_cli.ok("call", iris, "1.0", "--json", '{"flower": [7, 3.2, 4.7, 1.4]}')
    assert "I. versicolor" in answer.stdout
    raw = json.loads(alice_cli.ok("--json", "call", iris, "1.0", "--input", "flower=[7, 3.2, 4.7, 1.4]").stdout)
    assert raw["outputParameters"] == {"species": ["I. versicolor"]} and raw["success"] is True
    doc = json.loads(alice_cli.ok("swagger", iris, "1.0").stdout)
    assert doc["swagger"] == "2.0" and f"/api/{iris}/1.0" in doc["paths"]


def test_exit_codes_scripts_can_trust(alice_cli, iris):
    missing = alice_cli("call", unique("Nope"), "1.0", "--input", "x=1")
    assert missing.returncode == 1 and "(404)" in missing.stderr and "correlationId=" in missing.stderr
    bad_input = alice_cli("call", iris, "1.0", "--json", '{"flower": "not a vector"}')
    assert bad_input.returncode == 1 and "flower" in bad_input.stderr
    assert alice_cli("call", iris, "1.0", "--json", "{not json").returncode == 2
    assert alice_cli("call", iris).returncode == 2                 # a missing argument
    assert alice_cli("services", "list", "--no-such-option").returncode == 2
    assert alice_cli("login", "localhost:1").returncode == 2       # no way to sign in chosen
    unknown_type = alice_cli("publish", "X", "1", "--code", __file__, "--function", "unique", "--inputs", "prefix=dict",
                             "--outputs", "y=float")
    assert unknown_type.returncode == 2 and "not a parameter type" in unknown_type.stderr


def test_a_failing_service_exits_1_with_its_error(alice_cli, tmp_path):
    (tmp_path / "boom.py").write_text("def boom(x):\n    print('about to fail')\n    raise ValueError('no luck')\n")
    name = unique("Boom")
    alice_cli.ok("publish", name, "v1", "--code", str(tmp_path / "boom.py"), "--function", "boom",
                 "--inputs", "x=float", "--outputs", "y=float")
    done = alice_cli("call", name, "v1", "--input", "x=1")
    assert done.returncode == 1 and "no luck" in done.stderr and "about to fail" in done.stdout


def test_publish_update_and_delete(alice_cli, tmp_path):
    (tmp_path / "add.py").write_text("def add(x, y):\n    return x + y\n")
    name = unique("Add")
    alice_cli.ok("publish", name, "1", "--code", str(tmp_path / "add.py"), "--function", "add",
                 "--inputs", "x=float,y=float", "--outputs", "answer=float")
    assert "3.5" in alice_cli.ok("call", name, "1", "--input", "x=1", "--input", "y=2.5").stdout
    (tmp_path / "add.py").write_text("def add(x, y):\n    return 10 * (x + y)\n")
    alice_cli.ok("publish", name, "1", "--code", str(tmp_path / "add.py"), "--function", "add", "--update",
                 "--description", "times ten")
    assert "35" in alice_cli.ok("call", name, "1", "--input", "x=1", "--input", "y=2.5").stdout
    again = alice_cli("publish", name, "1", "--code", str(tmp_path / "add.py"), "--function", "add",
                      "--inputs", "x=float,y=float", "--outputs", "answer=float")
    assert again.returncode == 1 and "(409)" in again.stderr
    alice_cli.ok("services", "delete", name, "1", "--yes")
    assert alice_cli("services", "show", name, "1").returncode == 1


@pytest.mark.parametrize("kind", ["pkl", "onnx"])
def test_publish_realtime_from_a_pickle_or_onnx(alice_cli, tmp_path, kind):
    import numpy as np
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    data = datasets.load_iris()
    model = LogisticRegression(max_iter=500).fit(data.data.astype(np.float32), data.target)
    blob = pickle.dumps(model) if kind == "pkl" else \
        to_onnx(model, data.data[:1].astype(np.float32), options={id(model): {"zipmap": False}}).SerializeToString()
    (tmp_path / f"model.{kind}").write_bytes(blob)
    name = unique("Rt")
    published = json.loads(alice_cli.ok("publish-realtime", name, "1", str(tmp_path / f"model.{kind}"), "--json").stdout)
    assert published["runtimeType"] == "Realtime"
    answer = json.loads(alice_cli.ok("--json", "call", name, "1", "--json", json.dumps(
        {"inputData": {"a": [7.0], "b": [3.2], "c": [4.7], "d": [1.4]}})).stdout)
    assert next(v for k, v in answer["outputParameters"]["outputData"].items() if "label" in k) == [1]


def test_batch_from_csv_and_json_lines(alice_cli, iris, tmp_path):
    csv_file = tmp_path / "flowers.csv"
    csv_file.write_text("flower\n" + "\n".join('"[7, 3.2, 4.7, 1.4]"' if i % 2 else '"[5.1, 3.5, 1.4, 0.2]"'
                                                for i in range(12)) + "\n")
    done = json.loads(alice_cli.ok("batch", "start", iris, "1.0", str(csv_file), "--parallel", "3", "--wait",
                                   "--json").stdout)
    assert done["state"] == "Complete" and done["totalItemCount"] == 12
    species = [r["outputParameters"]["species"][0] for r in done["batchExecutionResults"]]
    assert species == ["I. setosa", "I. versicolor"] * 6

    lines = tmp_path / "flowers.jsonl"
    lines.write_text("\n".join(json.dumps({"flower": [7, 3.2, 4.7, 1.4]}) for _ in range(3)) + "\n")
    batch_id = alice_cli.ok("batch", "start", iris, "1.0", str(lines)).stdout.strip()
    assert batch_id in json.loads(alice_cli.ok("batch", "list", iris, "1.0", "--json").stdout)
    followed = alice_cli.ok("batch", "results", iris, "1.0", batch_id, "--wait", env={"O16N_PROGRESS": "1"})
    assert "Complete, 3 of 3 done" in followed.stdout and "I. versicolor" in followed.stdout
    assert "3/3" in followed.stderr  # the progress bar's last state
    status = json.loads(alice_cli.ok("batch", "status", iris, "1.0", batch_id, "--json").stdout)
    assert status["state"] == "Complete" and status["completedItemCount"] == 3
    alice_cli.ok("batch", "cancel", iris, "1.0", batch_id)
    assert alice_cli("batch", "status", iris, "1.0", batch_id).returncode == 1

    bad = tmp_path / "bad.csv"
    bad.write_text("flower\nnot-a-list\n")
    refused = alice_cli("batch", "start", iris, "1.0", str(bad))
    assert refused.returncode == 2 and "row 1" in refused.stderr


def test_sessions_and_snapshots(alice_cli, tmp_path):
    sid = json.loads(alice_cli.ok("sessions", "create", "--name", "cli", "--json").stdout)["sessionId"]
    assert sid in alice_cli.ok("sessions", "list").stdout
    ran = alice_cli.ok("sessions", "execute", sid, "y = x + 1\nprint('side effect')", "--input", "x=41",
                       "--output", "y")
    assert "y = 42" in ran.stdout and "side effect" in ran.stdout
    (tmp_path / "train.py").write_text("with open('out.txt', 'w') as f:\n    f.write('trained')\nmodel = 'm'\n")
    alice_cli.ok("sessions", "execute", sid, "--file", str(tmp_path / "train.py"))
    failed = alice_cli("sessions", "execute", sid, "1/0")
    assert failed.returncode == 1 and "ZeroDivisionError" in failed.stderr
    assert "model" in json.loads(alice_cli.ok("sessions", "objects", sid, "--json").stdout)
    (tmp_path / "in.csv").write_text("a\n1\n")
    alice_cli.ok("sessions", "upload", sid, str(tmp_path / "in.csv"))
    assert {"in.csv", "out.txt"} <= set(json.loads(alice_cli.ok("sessions", "files", sid, "--json").stdout))
    alice_cli.ok("sessions", "download", sid, "out.txt", "-o", str(tmp_path / "got.txt"))
    assert (tmp_path / "got.txt").read_text() == "trained"
    assert "1/0" in alice_cli.ok("sessions", "history", sid).stdout
    assert json.loads(alice_cli.ok("sessions", "console", sid, "--json").stdout)["consoleOutput"] is not None
    snap = alice_cli.ok("sessions", "snapshot", sid, "--name", "cli snap").stdout.strip()
    alice_cli.ok("sessions", "close", sid)
    assert sid not in alice_cli.ok("sessions", "list").stdout

    listed = json.loads(alice_cli.ok("snapshots", "list", "--json").stdout)
    assert {"id": snap, "name": "cli snap"}.items() <= next(s for s in listed if s["id"] == snap).items()
    alice_cli.ok("snapshots", "download", snap, "-o", str(tmp_path / "snap.zip"))
    assert (tmp_path / "snap.zip").read_bytes()[:2] == b"PK"
    again = json.loads(alice_cli.ok("sessions", "create", "--snapshot", snap, "--json").stdout)["sessionId"]
    assert "model" in alice_cli.ok("sessions", "objects", again).stdout
    alice_cli.ok("sessions", "close", again, "--force")
    alice_cli.ok("snapshots", "delete", snap)
    assert snap not in alice_cli.ok("snapshots", "list").stdout


def test_a_reader_is_refused_with_1(server, tmp_path):
    rita = Cli(tmp_path / "rita")
    rita.login(server, "rita")
    (tmp_path / "f.py").write_text("def f():\n    return 1\n")
    done = rita("publish", unique("R"), "1", "--code", str(tmp_path / "f.py"), "--function", "f", "--outputs", "y=float")
    assert done.returncode == 1 and "(403)" in done.stderr
    done = rita("sessions", "create")
    assert done.returncode == 1 and "(403)" in done.stderr


COMMANDS = [["login"], ["logout"], ["status"], ["services", "list"], ["services", "show"], ["services", "delete"],
            ["publish"], ["publish-realtime"], ["call"], ["swagger"], ["batch", "start"], ["batch", "status"],
            ["batch", "results"], ["batch", "list"], ["batch", "cancel"], ["sessions", "list"],
            ["sessions", "create"], ["sessions", "execute"], ["sessions", "objects"], ["sessions", "files"],
            ["sessions", "upload"], ["sessions", "download"], ["sessions", "snapshot"], ["sessions", "console"],
            ["sessions", "history"], ["sessions", "close"], ["snapshots", "list"], ["snapshots", "download"],
            ["snapshots", "delete"]]


def test_every_command_has_help_with_examples(cli):
    for command in COMMANDS:
        done = cli.ok(*command, "--help")
        assert "Examples" in done.stdout and f"o16n {' '.join(command)}" in done.stdout, command
        if command not in (["call"], ["swagger"]):
            assert "--json" in done.stdout, command


def test_text_from_the_server_cannot_drive_the_terminal(alice_cli, tmp_path):
    (tmp_path / "loud.py").write_text(
        "def loud():\n    print('\\x1b[2J\\x1b]0;owned\\x07[red]markup[/red] \\u202eevil')\n    return '\\x1b[31m'\n")
    name = unique("Loud")
    alice_cli.ok("publish", name, "1", "--code", str(tmp_path / "loud.py"), "--function", "loud",
                 "--outputs", "y=character")
    shown = alice_cli.ok("call", name, "1").stdout
    assert "\x1b" not in shown and "\u202e" not in shown and "\x07" not in shown
    assert "\\u001b[2J" in shown and "[red]markup[/red]" in shown and "\\u202e" in shown
    raw = alice_cli.ok("--json", "call", name, "1").stdout
    assert "\x1b" not in raw and json.loads(raw)["outputParameters"]["y"] == "\x1b[31m"
