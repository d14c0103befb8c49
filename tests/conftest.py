"""Test settings, and one Azurite (blob + queue + table, in memory, free ports) per test session."""
from __future__ import annotations

import os
import uuid

import pytest

from devhost.__main__ import stop_like_ctrl_c
from tests.constants import TEST_ENV

# Settings are read once, lazily; set them before any test can read them.
for _k, _v in TEST_ENV.items():
    os.environ[_k] = _v
os.environ["STORAGE_PREFIX"] = "t" + uuid.uuid4().hex[:10]

# A test run stopped by a CI runner's SIGTERM or a closed terminal's SIGHUP tears its fixtures
# down as on Ctrl-C: Azurite and the hosts stop.
stop_like_ctrl_c()


def reset_caches() -> None:
    from shared.config import get_settings
    from shared.storage import _clients

    get_settings.cache_clear()
    _clients._blob_service.cache_clear()
    _clients._table_service.cache_clear()
    _clients._queue_service.cache_clear()
    _clients._ready.clear()


@pytest.fixture(scope="session")
def azurite():
    """Connection string of an Azurite started for this session (stopped at the end)."""
    from devhost.__main__ import azurite_connection_string, free_port, start_azurite, stop

    blob_port, queue_port, table_port = free_port(), free_port(), free_port()
    procs = start_azurite(blob_port, table_port, queue_port=queue_port, location=None)
    conn = azurite_connection_string(blob_port, table_port, queue_port=queue_port)
    os.environ["STORAGE_CONNECTION_STRING"] = conn
    os.environ["AzureWebJobsStorage"] = conn  # the host's storage (queue triggers), as `make run` sets it
    reset_caches()
    yield conn
    stop(procs)


@pytest.fixture(autouse=True, scope="session")
def _stop_workers():
    yield
    from shared.sandbox import pool

    pool.services.close_all()
    pool.sessions.close_all()
