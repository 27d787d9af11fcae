"""The operator console in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium; nothing downloaded), against the whole mesh with
mutual TLS: the gateway's console calls Session and Routing with the operator's
certificate. Handovers and a dead letter are produced the way users meet them (a CCaaS
that refuses a message); the operator logs in, sees them, replays the dead letter from
the page, reads the timeline, asks Routing to explain, and a forged POST is refused.
A screenshot of each page is kept next to the mesh's logs (docs/img/console.png is one)."""

from __future__ import annotations

import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ccbridge.services.local.supervisor import free_port
from tests.e2e.conftest import ROUTING_RULES
from tests.support.mesh import Mesh, running_mesh, wait_for

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
HOW_TO = (
    "the console's browser test needs Debian's chromium and chromium-driver: "
    "apt-get install -y chromium chromium-driver (.ci/run installs them as root)"
)
ADMIN_TOKEN = secrets.token_urlsafe(24)
SECRET_TEXT = "refused once, my card is 4111"


@pytest.fixture(scope="module")
def console_mesh(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(HOW_TO)
    rules = tmp_path_factory.mktemp("routing") / "rules.yaml"
    rules.write_text(ROUTING_RULES)
    log_dir = Path(tmp_path_factory.mktemp("console-mesh"))
    pki = log_dir / "pki"  # running_mesh's throwaway CA writes <identity>.crt/.key here
    admin_port = free_port()
    gateway_env = {
        "CCBRIDGE_ADMIN_TOKEN": ADMIN_TOKEN,
        "CCBRIDGE_ADMIN_PORT": str(admin_port),
        "CCBRIDGE_ADMIN_TLS_CERT": str(pki / "operator.crt"),
        "CCBRIDGE_ADMIN_TLS_KEY": str(pki / "operator.key"),
    }
    with running_mesh(
        redis_url,
        log_dir,
        {"CCBRIDGE_ROUTING_RULES": str(rules)},
        own_env={"gateway": gateway_env},
    ) as mesh:
        mesh.ports["console"] = admin_port
        yield mesh


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(HOW_TO)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1500,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    # A loaded machine (CI runs suites side by side) may render a page late: look for an
    # element for up to this long before failing.
    driver.implicitly_wait(15)
    try:
        yield driver
    finally:
        driver.quit()


def _active(mesh: Mesh, **extra: object) -> str:
    cid = str(mesh.conversation(history=2)["id"])
    assert mesh.escalate(cid, **extra).status_code == 202
    wait_for("ACTIVE", lambda: mesh.handover(cid).get("state") == "ACTIVE")
    return cid


def _submit(browser: object, css: str) -> None:
    """Clicks the form button and waits until the next page has replaced this one."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    assert isinstance(browser, WebDriver)
    page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.CSS_SELECTOR, css).click()
    # Chromium may answer a probe of the old page's node mid-navigation with "Node with
    # given id does not belong to the document" (a WebDriverException, not a stale
    # element): that probe is retried, the next one sees the node stale.
    wait = WebDriverWait(browser, 60, ignored_exceptions=(WebDriverException,))
    wait.until(expected_conditions.staleness_of(page))
    # And until the next page is whole (WebDriver's own script, which the pages' CSP does
    # not govern).
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")


def test_console_in_a_real_browser(console_mesh: Mesh, browser: object, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    mesh = console_mesh
    base = f"http://127.0.0.1:{mesh.ports['console']}"
    # Seed: two ACTIVE handovers, one of them with a dead letter (the CCaaS refuses it).
    quiet = _active(mesh, tags=["vip"])
    cid = _active(mesh)
    mesh.ccaas.post("/_sim/fail", json={"count": 1, "status": 422, "retryAfter": None})
    mesh.send(cid, SECRET_TEXT)
    mesh.send(cid, "after the refusal")
    wait_for("the next message", lambda: "after the refusal" in mesh.customer_texts(cid))
    wait_for("the dead letter", lambda: mesh.handover(cid).get("deadLetters") == 1)
    # And the other way: an agent's reply, delivered to the end user through Infobip.
    case = mesh.case_for(cid)
    assert case is not None
    reply = mesh.ccaas.post(f"/_sim/cases/{case['caseId']}/reply", json={"text": "hello"})
    assert reply.json()["bridgeStatus"] == 200
    wait_for("the agent's reply", lambda: len(mesh.agent_messages(cid)) == 1)

    # Log in: every page sends an operator without a session to the login form.
    browser.get(f"{base}/handovers")
    assert browser.current_url == f"{base}/login"
    browser.find_element(By.NAME, "token").send_keys(ADMIN_TOKEN)
    _submit(browser, "form[action='/login'] button")
    assert browser.current_url == f"{base}/handovers", browser.page_source
    overview = browser.page_source
    assert cid in overview and quiet in overview
    active = browser.find_element(By.ID, "ACTIVE").text
    assert active.startswith("ACTIVE (")
    browser.save_screenshot(str(tmp_path / "console.png"))

    # The dead letter: listed with its error, its text hidden until asked.
    browser.get(f"{base}/dead-letters")
    letters = browser.page_source
    assert cid in letters and "FAILED_PRECONDITION" in letters
    assert SECRET_TEXT not in letters
    _submit(browser, "form[action$='/text'] button")
    assert SECRET_TEXT in browser.page_source
    browser.save_screenshot(str(tmp_path / "console-dead-letter.png"))

    # A forged POST with the operator's own session cookie but without the page's CSRF
    # token is refused, and nothing is replayed.
    cookie = browser.get_cookie("ccb_console")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    action = browser.find_element(By.CSS_SELECTOR, "form[action$='/replay']").get_attribute(
        "action"
    )
    assert action is not None
    forged = httpx.post(
        action,
        data={"csrf": "forged", "back": "/dead-letters"},
        cookies={"ccb_console": cookie["value"]},
    )
    assert forged.status_code == 403 and "CSRF" in forged.text
    assert mesh.handover(cid).get("deadLetters") == 1

    # Replay from the page: the message reaches the CCaaS, the letter is gone.
    browser.get(f"{base}/dead-letters")
    _submit(browser, "form[action$='/replay'] button")
    assert "queued for delivery again" in browser.page_source
    wait_for("the replayed message", lambda: SECRET_TEXT in mesh.customer_texts(cid))
    assert mesh.handover(cid).get("deadLetters", 0) == 0

    # The timeline: every step both ways, with times.
    browser.get(f"{base}/handovers/{cid}")
    timeline = browser.page_source
    rows = [
        [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        for row in browser.find_elements(
            By.XPATH, "//h2[starts-with(., 'Timeline')]/following-sibling::table[1]//tbody/tr"
        )
    ]
    seen = {(row[1], row[2]) for row in rows}
    for event in (
        ("state", "handover"),
        ("stored", "inbox → CCaaS"),
        ("delivered", "inbox → CCaaS"),
        ("dead-lettered", "inbox → CCaaS"),
        ("replayed", "inbox → CCaaS"),
        ("stored", "outbox → end user"),
        ("delivered", "outbox → end user"),
    ):
        assert event in seen, (event, rows)
    assert SECRET_TEXT not in timeline
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", timeline)
    browser.save_screenshot(str(tmp_path / "console-timeline.png"))

    # Routing explain: the vip rule matches a vip-tagged conversation.
    browser.get(f"{base}/explain")
    browser.find_element(By.NAME, "channel").send_keys("WHATSAPP")
    browser.find_element(By.NAME, "tags").send_keys("vip")
    _submit(browser, "form[action='/explain'] button")
    rules = {
        row.find_elements(By.TAG_NAME, "td")[0].text: row.find_elements(By.TAG_NAME, "td")[1].text
        for row in browser.find_elements(
            By.XPATH, "//h2[.='Rules evaluated']/following-sibling::table[1]//tbody/tr"
        )
    }
    assert rules == {"vip": "yes"}

    # The public port serves none of it.
    assert mesh.gateway.get("/login").status_code == 404
    assert mesh.gateway.get("/dead-letters").status_code == 404
