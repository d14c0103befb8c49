"""Warm scoring through o16n against the floor (bench/floor.py), measured side by side in one
run with wrk, as performance.md describes; figures are reported as ratios to the floor.

    .venv/bin/python bench/consume.py [--seconds 3] [--rounds 3] [--connections 1,8,32]
        [--variant NAME:KEY=VALUE,...]... [--tree NAME:PATH]...

Each --variant is another o16n host with those settings (e.g. `process:SANDBOX=process`), each
--tree one served from another checkout (e.g. the code before a change), all measured in the
same run. Needs wrk (Debian package `wrk`) and the project's venv and node_modules (`make deps`)."""
from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from devhost.__main__ import azurite_connection_string, free_port, port_open, start_azurite, stop  # noqa: E402

BODY = '{"flower_data":[7,3.2,4.7,1.4]}'
REALTIME_BODY = '{"inputData":{"a":[7],"b":[3.2],"c":[4.7],"d":[1.4]}}'
MLFLOW_BODY = '{"inputs":[[7,3.2,4.7,1.4]]}'


def pinned(core: int, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *cmd] if shutil.which("taskset") else cmd


def wait(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("a server did not start")
        time.sleep(0.02)


def wrk(url: str, token: str | None, connections: int, seconds: int, body: str = BODY) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(f'wrk.method = "POST"\nwrk.body = \'{body}\'\nwrk.headers["Content-Type"] = "application/json"\n')
        if token:
            f.write(f'wrk.headers["Authorization"] = "Bearer {token}"\n')
    out = subprocess.run(pinned(1, ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", f.name,
                                    url]), capture_output=True, text=True, check=True).stdout
    os.unlink(f.name)
    if "Non-2xx" in out:
        raise SystemExit(f"non-2xx answers from {url}:\n{out}")

    def latency(pct: str) -> float:
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return {"p50": latency("50"), "p99": latency("99"),
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}


def prepare(base: str, password: str) -> tuple[str, dict[str, float]]:
    """Publish Iris V1.0 and V2.0 from a session; returns a token and the first-call times."""
    token = requests.post(f"{base}/login", json={"username": "admin", "password": password}).json()["access_token"]
    h = {"Authorization": f"Bearer {token}"}
    sid = requests.post(f"{base}/sessions", json={"runtimeType": "Python"}, headers=h).json()["sessionId"]
    code = ("from sklearn import svm, datasets\niris = datasets.load_iris()\nclf = svm.SVC().fit(iris.data, "
            "iris.target)\nnames = {0: 'I. setosa', 1: 'I. versicolor', 2: 'I. virginica'}")
    assert requests.post(f"{base}/sessions/{sid}/execute", json={"code": code}, headers=h).json()["success"]
    snap = requests.post(f"{base}/sessions/{sid}/snapshot", json={}, headers=h).json()["snapshotId"]
    publish = {"code": "iris_species = [names[x] for x in clf.predict([flower_data])]", "runtimeType": "Python",
               "snapshotId": snap, "inputParameterDefinitions": [{"name": "flower_data", "type": "vector"}],
               "outputParameterDefinitions": [{"name": "iris_species", "type": "vector"}]}
    first_call = {}
    versions = ("V1.0", "V2.0", "V3.0")
    for version in versions:
        assert requests.post(f"{base}/services/Iris/{version}", json=publish, headers=h).status_code == 201
    time.sleep(5)  # let the host's template (or spare) finish importing scikit-learn
    for version in versions:  # V1.0 takes the spare; V2.0 and V3.0 come right after it
        start = time.perf_counter()
        r = requests.post(f"{base}/api/Iris/{version}", data=BODY, headers={**h, "Content-Type": "application/json"})
        first_call[version] = (time.perf_counter() - start) * 1000
        assert r.json()["outputParameters"] == {"iris_species": ["I. versicolor"]}, r.text
    return token, first_call


def worker_memory(host_pid: int) -> dict[str, float]:
    """Private memory (MB) of the host's workers, and the template's resident size; a warm Iris
    worker's model is a few KB, so its private memory is what the service costs beyond it."""
    def descendants(pid: int) -> list[int]:
        kids = []
        for name in os.listdir("/proc"):
            try:
                with open(f"/proc/{name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(name))
            except (OSError, ValueError):
                pass
        return kids + [d for k in kids for d in descendants(k)]

    def rollup(pid: int) -> dict[str, int]:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return {line.split(":")[0]: int(line.split()[1]) for line in f if line.split()[-1] == "kB"}

    workers, template = [], {}
    for pid in descendants(host_pid):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
        if b"worker.py" not in cmd:
            continue
        m = rollup(pid)
        if b"--template" in cmd and int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]) == host_pid:
            template = {"template_rss_mb": m["Rss"] / 1024}
        else:
            workers.append((m["Private_Clean"] + m["Private_Dirty"]) / 1024)
    return {"workers": len(workers), "private_mb_median": statistics.median(workers) if workers else 0,
            "private_mb_max": max(workers, default=0), **template}


def session_execute(base: str, token: str, runs: int = 5) -> dict[str, float]:
    """Median ms of executing `x = 1` in a session, empty and beside a 60 MB object."""
    h = {"Authorization": f"Bearer {token}"}
    sid = requests.post(f"{base}/sessions", json={"runtimeType": "Python"}, headers=h).json()["sessionId"]

    def median_ms() -> float:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            assert requests.post(f"{base}/sessions/{sid}/execute", json={"code": "x = 1"}, headers=h).json()["success"]
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)

    empty = median_ms()
    code = "import numpy as np\nbig = np.random.rand(60 * 2**20 // 8)"
    assert requests.post(f"{base}/sessions/{sid}/execute", json={"code": code}, headers=h).json()["success"]
    beside = median_ms()
    requests.delete(f"{base}/sessions/{sid}", headers=h)
    return {"empty_ms": empty, "beside_60mb_ms": beside, "ratio": beside / empty}


def mlflow_server(port: int) -> subprocess.Popen | None:
    """`mlflow models serve` of the floor's model (an SVC on iris), from a venv of its own
    (.venv-mlflow, built once); None, with the reason printed, when it cannot be had."""
    from importlib.metadata import version

    venv = ROOT / ".venv-mlflow"
    python = venv / "bin" / "python"
    wanted = ["mlflow-skinny", "skops", "uvicorn", "fastapi"] + [f"{p}=={version(p)}"
                                                                 for p in ("numpy", "pandas", "scikit-learn")]
    marker = venv / "installed.txt"
    try:
        if not (python.exists() and marker.exists() and marker.read_text() == "\n".join(wanted)):
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *wanted],
                           check=True, capture_output=True)
            marker.write_text("\n".join(wanted))
        model = Path(tempfile.mkdtemp(prefix="o16n-bench-mlflow-")) / "model"
        subprocess.run([str(python), "-c", "import sys, mlflow.sklearn\nfrom sklearn import datasets, svm\n"
                        "iris = datasets.load_iris()\nmlflow.sklearn.save_model(svm.SVC().fit(iris.data, iris.target), "
                        "sys.argv[1], serialization_format='cloudpickle')", str(model)], check=True, capture_output=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"MLflow is left out of this run: it could not be installed or saved ({exc})")
        return None
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}"}
    # its own process group: `mlflow models serve` runs the server as a child, stopped with it
    return subprocess.Popen(pinned(0, [str(venv / "bin" / "mlflow"), "models", "serve", "-m", str(model),
                                       "--env-manager", "local", "-p", str(port), "-w", "1"]),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def prepare_realtime(base: str, token: str) -> None:
    """The floor's model (an SVC on iris) as ONNX, published as the realtime service IrisRT/v1."""
    import numpy as np
    from skl2onnx import to_onnx
    from sklearn import datasets, svm

    iris = datasets.load_iris()
    model = svm.SVC().fit(iris.data, iris.target)
    onnx_model = to_onnx(model, np.zeros((1, 4), np.float32), options={id(model): {"zipmap": False}}).SerializeToString()
    h = {"Authorization": f"Bearer {token}"}
    r = requests.post(f"{base}/realtime-services/IrisRT/v1", files={"model": ("model", onnx_model)}, headers=h)
    assert r.status_code == 201, r.text
    r = requests.post(f"{base}/api/IrisRT/v1", data=REALTIME_BODY, headers={**h, "Content-Type": "application/json"})
    assert r.json()["outputParameters"]["outputData"]["label"] == [1], r.text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", default="1,8,32")
    parser.add_argument("--variant", action="append", default=[], help="NAME:KEY=VALUE,KEY=VALUE")
    parser.add_argument("--tree", action="append", default=[], help="NAME:PATH of another checkout")
    parser.add_argument("--json", help="also write the medians and ratios to this file")
    parser.add_argument("--no-mlflow", action="store_true", help="leave MLflow's scoring server out")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    conns = [int(c) for c in args.connections.split(",")]
    hosts: dict[str, tuple[Path, dict[str, str]]] = {"o16n": (ROOT, {})}
    for v in args.variant:
        name, _, pairs = v.partition(":")
        hosts[name] = (ROOT, dict(p.split("=", 1) for p in pairs.split(",") if p))
    for t in args.tree:
        name, _, path = t.partition(":")
        hosts[name] = (Path(path).resolve(), {})

    blob_port, table_port, queue_port = free_port(), free_port(), free_port()
    azurite = start_azurite(blob_port, table_port, queue_port=queue_port, location=None)
    password = secrets.token_urlsafe(12)
    conn = azurite_connection_string(blob_port, table_port, queue_port=queue_port)
    env = {**os.environ, "STORAGE_CONNECTION_STRING": conn, "AzureWebJobsStorage": conn,
           "TOKEN_SIGNING_KEY": secrets.token_urlsafe(48), "SNAPSHOT_SIGNING_KEY": secrets.token_urlsafe(48),
           "LOCAL_ADMIN_PASSWORD": password}
    floor_port = free_port()
    procs = [subprocess.Popen(pinned(0, [sys.executable, str(ROOT / "bench" / "floor.py"), str(floor_port)]))]
    targets = {"floor": (f"http://127.0.0.1:{floor_port}/", None, BODY)}
    first_calls, executes, memory = {}, {}, {}
    mlflow_proc: list[subprocess.Popen | None] = [None]
    try:
        ports = {}
        for name, (tree, settings) in hosts.items():
            ports[name] = free_port()
            procs.append(subprocess.Popen(
                pinned(0, [sys.executable, "-m", "devhost", "serve", "--port", str(ports[name])]), cwd=tree,
                env={**env, "STORAGE_PREFIX": "bench" + secrets.token_hex(4), **settings}))
        wait(floor_port, procs[0])
        mlflow = None if args.no_mlflow else mlflow_server(mlflow_port := free_port())
        if mlflow is not None:
            procs.append(mlflow)
            mlflow_proc[0] = mlflow
            try:
                wait(mlflow_port, mlflow)
                targets["mlflow"] = (f"http://127.0.0.1:{mlflow_port}/invocations", None, MLFLOW_BODY)
            except SystemExit:
                print("MLflow is left out of this run: its server did not start")
        for (name, port), proc in zip(ports.items(), procs[1:len(ports) + 1]):
            wait(port, proc)
            token, first_calls[name] = prepare(f"http://127.0.0.1:{port}", password)
            executes[name] = session_execute(f"http://127.0.0.1:{port}", token)
            memory[name] = worker_memory(proc.pid)
            targets[name] = (f"http://127.0.0.1:{port}/api/Iris/V1.0", token, BODY)
            if name == "o16n":
                prepare_realtime(f"http://127.0.0.1:{port}", token)
                targets["realtime"] = (f"http://127.0.0.1:{port}/api/IrisRT/v1", token, REALTIME_BODY)
        results: dict[tuple[str, int], list[dict]] = {}
        for url, tok, body in targets.values():
            wrk(url, tok, 1, 1, body)  # warm-up
        for rnd in range(args.rounds):
            order = list(targets)[rnd % len(targets):] + list(targets)[:rnd % len(targets)]
            for c in conns:
                for name in order:
                    url, tok, body = targets[name]
                    results.setdefault((name, c), []).append(wrk(url, tok, c, args.seconds, body))
        print(f"\nwarm consume of Iris V1.0 (realtime: the same SVC as ONNX, IrisRT v1), medians of {args.rounds} rounds of {args.seconds:g}s "
              "(servers on core 0, wrk on core 1)")
        print(f"{'c':>3} {'':10} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}   ratio to floor (p50, p99, req/s)")
        table = []
        for c in conns:
            med = {n: {k: statistics.median(r[k] for r in results[(n, c)]) for k in ("p50", "p99", "rps")}
                   for n in targets}
            for n in targets:
                table.append({"connections": c, "server": n, **med[n],
                              **({f"{k}_ratio": med[n][k] / med["floor"][k] for k in ("p50", "p99", "rps")}
                                 if n != "floor" else {})})
                m = med[n]
                ratio = (f"{m['p50'] / med['floor']['p50']:.2f}x  {m['p99'] / med['floor']['p99']:.2f}x  "
                         f"{m['rps'] / med['floor']['rps']:.2f}x") if n != "floor" else ""
                print(f"{c:>3} {n:10} {m['p50']:8.3f} {m['p99']:8.3f} {m['rps']:8.0f}   {ratio}")
        versus = {}
        if "mlflow" in targets:
            print("\nagainst MLflow's scoring server on the same model (how many times better: p50, req/s):")
            for c in conns:
                med = {n: {k: statistics.median(r[k] for r in results[(n, c)]) for k in ("p50", "rps")}
                       for n in ("o16n", "realtime", "mlflow") if (n, c) in results}
                for n in ("o16n", "realtime"):
                    if n in med:
                        versus[f"{n} c={c}"] = {"p50": med["mlflow"]["p50"] / med[n]["p50"],
                                                "rps": med[n]["rps"] / med["mlflow"]["rps"]}
                        print(f"  c={c:<3} {n:10} {versus[f'{n} c={c}']['p50']:.2f}x  {versus[f'{n} c={c}']['rps']:.2f}x")
        print("\nfirst calls of three services published on a warm host, in a row:")
        for name, times in first_calls.items():
            print(f"  {name:10} " + " / ".join(f"{t:.0f} ms" for t in times.values()))
        print("\nworkers' private memory, median and max MB (the template's resident size):")
        for name, m in memory.items():
            print(f"  {name:10} {m['workers']} workers: {m['private_mb_median']:.1f} / {m['private_mb_max']:.1f} MB"
                  + (f" ({m['template_rss_mb']:.0f} MB)" if "template_rss_mb" in m else ""))
        print("\nsession execute of `x = 1`, median ms: empty session / beside an unchanged 60 MB object (ratio):")
        for name, e in executes.items():
            print(f"  {name:10} {e['empty_ms']:.0f} ms / {e['beside_60mb_ms']:.0f} ms ({e['ratio']:.1f}x)")
        if args.json:
            import json
            import platform

            Path(args.json).write_text(json.dumps({
                "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": f"{platform.node()} {os.cpu_count()} cores",
                "rounds": args.rounds, "seconds": args.seconds, "consume": table, "first_call_ms": first_calls,
                "session_execute": executes, "worker_memory": memory, "versus_mlflow": versus},
                indent=2) + "\n")
    finally:
        for p in procs:
            if p is mlflow_proc[0]:
                os.killpg(p.pid, signal.SIGTERM)
            else:
                p.terminate()
            p.wait(timeout=10)
        stop(azurite)


if __name__ == "__main__":
    main()
