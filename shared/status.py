"""GET /status: ML Server's status tree, with this app's own components."""
from __future__ import annotations

import platform

from .errors import ApiError
from .sandbox import policy, pool
from .storage import _clients


_STORAGE = "Azure Storage (Blob + Table)"


def storage_down() -> dict:
    """What anyone may learn while storage is down, as no caller can be identified then."""
    return {"statusCode": "fail", "components": {"database": _failing("storage is not answering")}}


def _failing(error: str) -> dict:
    return {"statusCode": "fail", "details": {"type": _STORAGE, "error": error}}


def status() -> dict:
    try:
        _clients.ping()
        storage = {"statusCode": "pass", "details": {"type": _STORAGE,
                                                     "requestsSent": _clients.requests_sent}}
    except ApiError as exc:
        storage = _failing(exc.message)
    sandbox = policy.describe()
    return {
        "statusCode": "fail" if "fail" in (storage["statusCode"], sandbox["statusCode"]) else storage["statusCode"],
        "details": {"version": "o16n 0.1", "python": platform.python_version()},
        "components": {
            "database": storage,
            "authentication": {"statusCode": "pass", "details": {"type": "local accounts, o16n-issued tokens"}},
            "backends": {"statusCode": "pass", "details": {
                "pythonRuntime": "Python " + platform.python_version(),
                "warmServiceWorkers": pool.services.size(), "warmSessionWorkers": pool.sessions.size(),
                "serviceWorkers": dict(pool.services.counts), "sessionWorkers": dict(pool.sessions.counts)}},
            "sandbox": sandbox,
        },
    }
