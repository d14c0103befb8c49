"""Batch throughput: rows per second of one iris batch scored by one local host, then by two
sharing one Azurite, against the baseline measured in the same run: the same rows sent one
consume call at a time over a kept-alive connection (and by 8 clients at once).

    .venv/bin/python bench/batch.py [--rows 10000] [--parallel 8] [--json bench/batch.json]

Needs the project's venv and node_modules (`make deps`)."""
from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from devhost.__main__ import azurite_connection_string, free_port, port_open, start_azurite, stop  # noqa: E402

TRAIN = ("from sklearn.datasets import load_iris\nfrom sklearn.linear_model import LogisticRegression\n"
         "X, y = load_iris(return_X_y=True)\nmodel = LogisticRegression(max_iter=1000).fit(X, y)\n"
         "names = ['I. setosa', 'I. versicolor', 'I. virginica']")
SCORE = "import numpy as np\nspecies = names[int(model.predict(np.array([[sl, sw, pl, pw]]))[0])]"


def host(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "devhost", "serve", "--port", str(port)], cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while not port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("a host did not start")
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}"


def publish(url: str, h: dict[str, str]) -> None:
    sid = requests.post(f"{url}/sessions", json={"runtimeType": "Python"}, headers=h).json()["sessionId"]
    assert requests.post(f"{url}/sessions/{sid}/execute", json={"code": TRAIN}, headers=h).json()["success"]
    snap = requests.post(f"{url}/sessions/{sid}/snapshot", json={}, headers=h).json()["snapshotId"]
    body = {"code": SCORE, "runtimeType": "Python", "snapshotId": snap,
            "inputParameterDefinitions": [{"name": n, "type": "numeric"} for n in ("sl", "sw", "pl", "pw")],
            "outputParameterDefinitions": [{"name": "species", "type": "character"}]}
    r = requests.post(f"{url}/services/Iris/1.0", json=body, headers=h)
    assert r.status_code == 201, r.text


def records(n: int) -> list[dict[str, float]]:
    from sklearn.datasets import load_iris

    data = load_iris().data
    return [dict(zip(("sl", "sw", "pl", "pw"), map(float, data[i % 150]))) for i in range(n)]


def one_at_a_time(url: str, h: dict[str, str], rows: list[dict], clients: int) -> float:
    """Rows per second, each row its own consume call."""
    sessions = [requests.Session() for _ in range(clients)]

    def send(k: int) -> None:
        s = sessions[k]
        for row in rows[k::clients]:
            assert s.post(f"{url}/api/Iris/1.0", json=row, headers=h).json()["success"]

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, range(clients)))
    return len(rows) / (time.perf_counter() - start)


def batch(url: str, h: dict[str, str], rows: list[dict], parallel: int) -> float:
    """Rows per second from the batch's start to its last result."""
    start = time.perf_counter()
    r = requests.post(f"{url}/api/Iris/1.0/batch?parallelCount={parallel}", json=rows, headers=h)
    assert r.status_code == 202, r.text
    bid = r.json()["batchExecutionId"]
    while True:
        st = requests.get(f"{url}/api/Iris/1.0/batch/{bid}", headers=h).json()
        if st["state"] in ("Complete", "Failed"):
            break
        time.sleep(0.1)
    took = time.perf_counter() - start
    assert st["state"] == "Complete" and all(x["success"] for x in st["batchExecutionResults"]), st["state"]
    requests.delete(f"{url}/api/Iris/1.0/batch/{bid}", headers=h)
    return len(rows) / took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    blob, queue, table = free_port(), free_port(), free_port()
    azurite = start_azurite(blob, table, queue_port=queue, location=None)
    conn = azurite_connection_string(blob, table, queue_port=queue)
    password = secrets.token_urlsafe(12)
    env = {**os.environ, "STORAGE_CONNECTION_STRING": conn, "AzureWebJobsStorage": conn,
           "TOKEN_SIGNING_KEY": secrets.token_urlsafe(48), "SNAPSHOT_SIGNING_KEY": secrets.token_urlsafe(48),
           "LOCAL_ADMIN_PASSWORD": password, "STORAGE_PREFIX": "bench" + secrets.token_hex(4)}
    procs = []
    try:
        proc, url = host(env)
        procs.append(proc)
        token = requests.post(f"{url}/login", json={"username": "admin", "password": password}).json()["access_token"]
        h = {"Authorization": f"Bearer {token}"}
        publish(url, h)
        rows = records(args.rows)
        one_at_a_time(url, h, rows[:200], 1)  # warm-up: the worker loads the service
        figures = {"rows": args.rows, "parallelCount": args.parallel,
                   "consume_1_client": one_at_a_time(url, h, rows, 1),
                   "consume_8_clients": one_at_a_time(url, h, rows, 8),
                   "batch_1_host": batch(url, h, rows, args.parallel)}
        procs.append(host(env)[0])  # a second instance on the same storage and queue
        batch(url, h, rows[:400], args.parallel)  # its worker loads the service
        figures["batch_2_hosts"] = batch(url, h, rows, args.parallel)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        stop(azurite)
    base = figures["consume_1_client"]
    print(f"\n{args.rows} iris rows, rows per second (ratio to one consume call at a time, same run):")
    for key in ("consume_1_client", "consume_8_clients", "batch_1_host", "batch_2_hosts"):
        print(f"  {key:<18} {figures[key]:8.0f}   x{figures[key] / base:.2f}")
    if args.json:
        figures["date"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        figures["ratios"] = {k: figures[k] / base for k in ("consume_8_clients", "batch_1_host", "batch_2_hosts")}
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
