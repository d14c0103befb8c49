"""The web page at GET /, driven by a person's means: a real browser, the keyboard, a phone-sized
screen. One browser and one host for the module; the tests run in order, as a visit would."""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import requests
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import login
from tests.e2e.conftest import start_host, stop_host
from tests.constants import USERS

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]

DOCS = Path(__file__).resolve().parents[2] / "docs"
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
IRIS_INPUT = "[7, 3.2, 4.7, 1.4]"
TENANT, SPA = "11111111-2222-3333-4444-555555555555", "66666666-7777-8888-9999-000000000000"


def _post(url: str, headers: dict, path: str, body: dict, status: int = 200) -> dict:
    r = requests.post(f"{url}{path}", json=body, headers=headers, timeout=120)
    assert r.status_code == status, r.text
    return r.json() if r.content else {}


@pytest.fixture(scope="module")
def published(web_url):
    """Iris (README's workflow) by alice, and a service with a hostile description by bob."""
    alice, bob = login(web_url, "alice"), login(web_url, "bob")
    sid = _post(web_url, alice, "/sessions", {"name": "web", "runtimeType": "Python"}, 201)["sessionId"]
    _post(web_url, alice, f"/sessions/{sid}/execute", {"code": (
        "from sklearn import svm\nfrom sklearn import datasets\nclf=svm.SVC()\niris=datasets.load_iris()\n"
        "names={0:'I. setosa',1:'I. versicolor',2:'I. virginica'}\nclf.fit(iris.data, iris.target)\n")})
    snap = _post(web_url, alice, f"/sessions/{sid}/snapshot", {"name": "Iris Snapshot"}, 201)["snapshotId"]
    _post(web_url, alice, "/services/Iris/V1.0", {
        "code": "iris_species = [names[x] for x in clf.predict([flower_data])]",
        "description": "Iris classifier: sepal and petal sizes in, species out",
        "inputParameterDefinitions": [{"name": "flower_data", "type": "vector"}],
        "outputParameterDefinitions": [{"name": "iris_species", "type": "vector"}],
        "runtimeType": "Python", "snapshotId": snap}, 201)
    _post(web_url, bob, "/services/Hostile/v1", {
        "code": f"print({HOSTILE!r})\nopen('report.txt', 'w').write({HOSTILE!r})\nanswer = 'ok'",
        "description": HOSTILE, "outputFileNames": ["report.txt"],
        "outputParameterDefinitions": [{"name": "answer", "type": "character"}], "runtimeType": "Python"}, 201)
    # a publisher's means of breaking the page's layout: a 128-character name, a tall description,
    # and an input named like Object.prototype's accessor
    _post(web_url, bob, "/services/Wide/v1", {
        "code": "o" + "W" * 127 + " = str(__proto__)", "description": "tall\n" * 3000,
        "inputParameterDefinitions": [{"name": "__proto__", "type": "character"}],
        "outputParameterDefinitions": [{"name": "o" + "W" * 127, "type": "character"}], "runtimeType": "Python"}, 201)
    _post(web_url, bob, "/services/Slow/v1", {
        "code": "import time\ntime.sleep(3)\nprint('SECRET-OF-THE-LAST-PERSON')\ny = 42",
        "outputParameterDefinitions": [{"name": "y", "type": "numeric"}], "runtimeType": "Python"}, 201)
    requests.delete(f"{web_url}/sessions/{sid}", headers=alice, timeout=30)
    return {"alice": alice, "bob": bob}


def _wait(driver, condition, timeout: float = 30):
    return WebDriverWait(driver, timeout).until(condition)


def _visible(driver, css: str, timeout: float = 30):
    return _wait(driver, ec.visibility_of_element_located((By.CSS_SELECTOR, css)), timeout)


def _card(driver, name: str):
    def find(d):
        for card in d.find_elements(By.CSS_SELECTOR, "#services > li.card"):
            if card.find_element(By.TAG_NAME, "h3").text == name:
                return card
        return False
    return _wait(driver, find)


def _session(driver) -> str | None:
    return driver.execute_script("return window.sessionStorage.getItem('o16n.session')")


def test_the_page_is_served_with_a_strict_policy_and_asks_to_sign_in(web_url, browser, published):
    r = requests.get(f"{web_url}/", timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "unsafe" not in csp and "object-src 'none'" in csp
    browser.get(f"{web_url}/")
    _visible(browser, "#login-form")
    assert not browser.find_element(By.ID, "app").is_displayed()
    assert browser.get_cookies() == []


def test_a_person_signs_in_with_the_keyboard_alone(browser):
    keys = lambda *k: ActionChains(browser).send_keys(*k).perform()  # noqa: E731 - to whatever has focus
    focused = lambda: browser.switch_to.active_element.get_attribute("id")  # noqa: E731
    for _ in range(6):  # the skip link first, then the user name field
        keys(Keys.TAB)
        if focused() == "username":
            break
    assert focused() == "username"
    keys("alice", Keys.TAB)
    assert focused() == "password"
    keys(USERS["alice"], Keys.ENTER)
    _visible(browser, "#catalog")
    assert "alice" in browser.find_element(By.ID, "who-name").text
    stored = json.loads(_session(browser))
    assert stored["kind"] == "local" and stored["accessToken"] and stored["refreshToken"]
    assert browser.get_cookies() == [] and "token" not in browser.current_url.lower()


def test_the_catalog_shows_iris_with_its_inputs_outputs_publisher_and_permission(browser):
    card = _card(browser, "Iris")
    text = card.text
    assert "V1.0" in text and "Iris classifier" in text and "Standard (Python)" in text
    assert "flower_data vector" in text and "iris_species vector" in text
    assert "alice" in text and "read/write" in text
    _wait(browser, lambda d: "database: pass" in d.find_element(By.ID, "health-components").text)
    DOCS.mkdir(exist_ok=True)
    browser.save_screenshot(str(DOCS / "web-catalog.png"))


def test_trying_iris_answers_versicolor(browser):
    _card(browser, "Iris").find_element(By.XPATH, ".//button[text()='Try it']").click()
    field = _visible(browser, "#try-fields textarea")
    assert field.get_attribute("data-name") == "flower_data"
    field.send_keys(IRIS_INPUT)
    browser.find_element(By.ID, "try-run").click()
    out = _visible(browser, '#try-answer pre[data-output="iris_species"]', timeout=90)
    assert json.loads(out.text) == ["I. versicolor"]
    assert "Succeeded" in browser.find_element(By.ID, "try-answer").text
    browser.execute_script("document.getElementById('try').scrollIntoView()")
    browser.save_screenshot(str(DOCS / "web-try-it.png"))


def test_a_wrong_input_is_refused_with_the_servers_message(web_url, browser, published):
    expected = requests.post(f"{web_url}/api/Iris/V1.0", json={"flower_data": {"not": "a vector"}},
                             headers=published["alice"], timeout=60)
    assert expected.status_code == 400
    field = browser.find_element(By.CSS_SELECTOR, "#try-fields textarea")
    field.clear()
    field.send_keys('{"not": "a vector"}')
    browser.find_element(By.ID, "try-run").click()
    alert = _visible(browser, "#try-answer [role=alert]")
    assert expected.json()["message"] in alert.text and "400" in alert.text
    # and a text that is no JSON at all is caught before it is sent
    field.clear()
    field.send_keys("[7, 3.2,")
    browser.find_element(By.ID, "try-run").click()
    _wait(browser, lambda d: "not valid JSON" in d.find_element(By.ID, "try-answer").text)


def test_a_hostile_description_and_console_output_show_as_text_and_run_nothing(browser):
    card = _card(browser, "Hostile")
    assert HOSTILE in card.text
    assert card.find_elements(By.CSS_SELECTOR, "img, script") == []
    assert "bob" in card.text and "read only" in card.text
    card.find_element(By.XPATH, ".//button[text()='Try it']").click()
    _visible(browser, "#try-title")
    browser.find_element(By.ID, "try-run").click()
    console = _visible(browser, '#try-answer pre[data-part="consoleOutput"]', timeout=90)
    assert HOSTILE in console.text
    link = browser.find_element(By.CSS_SELECTOR, "#try-answer .files a")
    assert link.get_attribute("href").startswith("blob:") and link.get_attribute("download") == "report.txt"
    assert link.text == f"report.txt ({len(HOSTILE)} bytes)"
    assert browser.find_elements(By.CSS_SELECTOR, "#main img, #main script") == []
    assert browser.execute_script("return window.__pwned") is None


def test_a_batch_shows_its_progress(web_url, browser, published):
    r = requests.post(f"{web_url}/api/Iris/V1.0/batch?parallelCount=2", headers=published["alice"], timeout=60,
                      json=[{"flower_data": [7, 3.2, 4.7, 1.4]}, {"flower_data": [5.1, 3.5, 1.4, 0.2]}])
    assert r.status_code == 202, r.text
    bid = r.json()["batchExecutionId"]
    deadline = time.monotonic() + 60
    while requests.get(f"{web_url}/api/Iris/V1.0/batch/{bid}", headers=published["alice"],
                       timeout=30).json()["state"] != "Complete":
        assert time.monotonic() < deadline, "the batch did not complete"
        time.sleep(0.5)
    _card(browser, "Iris").find_element(By.XPATH, ".//button[text()='Batches']").click()
    _wait(browser, lambda d: "Complete" in d.find_element(By.ID, "batch-list").text)
    item = browser.find_element(By.ID, "batch-list").text
    assert bid in item and "2 / 2 records" in item


def test_the_page_fits_a_phone_and_still_works_there(browser):
    # a phone's viewport, as Chromium's device mode sets it (the meta viewport applies)
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
    try:
        browser.refresh()  # the session survives a reload of this tab
        card = _card(browser, "Iris")
        width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1] == 390, width
        button = card.find_element(By.XPATH, ".//button[text()='Try it']")
        assert button.size["height"] >= 40 and button.location["x"] + button.size["width"] <= width[1]
        button.click()
        field = _visible(browser, "#try-fields textarea")
        field.send_keys(IRIS_INPUT)
        browser.find_element(By.ID, "try-run").click()
        out = _visible(browser, '#try-answer pre[data-output="iris_species"]', timeout=60)
        assert "I. versicolor" in out.text
        browser.execute_script("document.getElementById('try').scrollIntoView()")
        browser.save_screenshot(str(DOCS / "web-phone.png"))
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_a_publisher_cannot_break_the_layout_or_an_input_name(browser):
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
    try:
        card = _card(browser, "Wide")
        assert card.size["height"] < 1000  # 3,000 lines of description (60,000 px) scroll inside their box
        card.find_element(By.XPATH, ".//button[text()='Try it']").click()
        _visible(browser, "#try-fields input, #try-fields textarea").send_keys("through the prototype")
        browser.find_element(By.ID, "try-run").click()
        out = _visible(browser, '#try-answer pre[data-output="o' + "W" * 127 + '"]', timeout=60)
        assert "through the prototype" in out.text and out.size["width"] > 100
        width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], width
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_signing_out_forgets_the_token_and_revokes_it(web_url, browser):
    token = json.loads(_session(browser))["accessToken"]
    # what this person typed must not be there for the next one at this tab
    browser.find_element(By.ID, "catalog-filter").send_keys("iris")
    browser.execute_script("document.getElementById('batch-records').value = '[{\"x\": \"a patient record\"}]'")
    browser.find_element(By.ID, "sign-out").click()
    _visible(browser, "#login-form")
    assert _session(browser) is None
    assert not browser.find_element(By.ID, "app").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "#services li") == []
    for field in ("catalog-filter", "batch-records", "username", "password"):
        assert browser.find_element(By.ID, field).get_attribute("value") == "", field
    assert browser.find_element(By.ID, "batch-parallel").get_attribute("value") == "4"
    # the server refuses the old token: revoking the refresh token ended its family
    deadline = time.monotonic() + 10
    while requests.get(f"{web_url}/services", headers={"Authorization": f"Bearer {token}"},
                       timeout=30).status_code != 401:
        assert time.monotonic() < deadline, "the token still works after signing out"
        time.sleep(0.2)
    browser.refresh()
    _visible(browser, "#login-form")
    assert not browser.find_element(By.ID, "app").is_displayed()


def _sign_in(browser, user: str) -> None:
    browser.find_element(By.ID, "username").send_keys(user)
    browser.find_element(By.ID, "password").send_keys(USERS[user], Keys.ENTER)
    _visible(browser, "#catalog")


def test_an_answer_that_arrives_after_sign_out_is_shown_to_no_one(browser):
    _sign_in(browser, "alice")
    _card(browser, "Slow").find_element(By.XPATH, ".//button[text()='Try it']").click()
    _visible(browser, "#try-run").click()
    browser.find_element(By.ID, "sign-out").click()  # while the call runs (3 s)
    _visible(browser, "#login-form")
    _sign_in(browser, "bob")
    _card(browser, "Iris").find_element(By.XPATH, ".//button[text()='Try it']").click()
    time.sleep(5)  # the call made before the sign-out has answered by now
    assert "SECRET-OF-THE-LAST-PERSON" not in browser.page_source
    assert "bob" in browser.find_element(By.ID, "who-name").text
    browser.find_element(By.ID, "sign-out").click()
    _visible(browser, "#login-form")


def test_with_entra_configured_the_page_offers_both_sign_ins_and_breaks_nothing(azurite, browser):
    proc, url = start_host(STORAGE_PREFIX="w" + uuid.uuid4().hex[:10], AAD_TENANT_ID=TENANT,
                           AAD_AUDIENCE="api://o16n-test", AAD_SPA_CLIENT_ID=SPA)
    try:
        assert "https://login.microsoftonline.com" in requests.get(f"{url}/", timeout=30).headers[
            "Content-Security-Policy"]
        browser.get(f"{url}/")
        _visible(browser, "#entra-sign-in")  # MSAL.js loaded and initialised under the page's policy
        assert browser.execute_script("return typeof window.msal.PublicClientApplication") == "function"
        keys = ActionChains(browser).send_keys
        browser.find_element(By.ID, "username").send_keys("bob")
        browser.find_element(By.ID, "password").send_keys(USERS["bob"])
        keys(Keys.ENTER).perform()
        _visible(browser, "#catalog")
        browser.find_element(By.ID, "sign-out").click()
        _visible(browser, "#login-form")
    finally:
        stop_host(proc)


def test_the_page_broke_no_rule_of_its_policy(browser):
    logs = browser.get_log("browser")
    violations = [e["message"] for e in logs if "Content Security Policy" in e["message"]
                  or "TrustedHTML" in e["message"] or "Trusted Type" in e["message"]]
    assert violations == []
    errors = [e["message"] for e in logs if e["level"] == "SEVERE" and "favicon" not in e["message"]
              and " 400 " not in e["message"] and " 401 " not in e["message"]]
    assert errors == []
