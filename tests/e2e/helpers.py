from __future__ import annotations

import uuid

import requests


def new_session(base_url: str, headers: dict) -> str:
    r = requests.post(f"{base_url}/sessions", json={"name": "t", "runtimeType": "Python"}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["sessionId"]


def execute(base_url: str, headers: dict, sid: str, code: str, **extra) -> dict:
    r = requests.post(f"{base_url}/sessions/{sid}/execute", json={"code": code, **extra}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def snapshot(base_url: str, headers: dict, sid: str) -> str:
    r = requests.post(f"{base_url}/sessions/{sid}/snapshot", json={"name": "s"}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["snapshotId"]


def publish(base_url: str, headers: dict, code: str, *, inputs=(), outputs=(), snapshot_id=None, **extra):
    name = "svc" + uuid.uuid4().hex[:8]
    body = {"code": code, "runtimeType": "Python", "inputParameterDefinitions": list(inputs),
            "outputParameterDefinitions": list(outputs), **extra}
    if snapshot_id:
        body["snapshotId"] = snapshot_id
    r = requests.post(f"{base_url}/services/{name}/v1", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return name
