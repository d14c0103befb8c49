"""A real headless Chromium (Debian's chromium, driven through its chromedriver) against the
local host serving the real function_app on its own storage prefix, one of each per module."""
from __future__ import annotations

import shutil
import uuid

import pytest
import requests

from tests.constants import USERS
from tests.e2e.conftest import start_host, stop_host


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        # Fail, not skip: a run without the browser would pass while testing none of the page.
        pytest.fail("the browser tests need Debian's chromium and chromium-driver "
                    "(apt-get install -y chromium chromium-driver; .ci/run installs them)")
    return browser, driver


@pytest.fixture(scope="module")
def web_url(azurite):
    """A host with a storage prefix of its own: its catalog holds only what this module publishes."""
    proc, url = start_host(STORAGE_PREFIX="w" + uuid.uuid4().hex[:10])
    yield url
    stop_host(proc)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary, chromedriver = _chromium()
    options = Options()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                "--disable-extensions", "--window-size=1280,1000", "--force-device-scale-factor=1",
                "--lang=en-US"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def login(url: str, user: str) -> dict[str, str]:
    r = requests.post(f"{url}/login", json={"username": user, "password": USERS[user]}, timeout=30)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}
