"""The dashboard as a person uses it: a real headless Chromium (Debian's `chromium`, driven
through `chromium-driver` by Selenium) against `jobrunner dashboard` and a running daemon, both
real processes on a real database.

Skipped only where chromium or its driver is missing; .ci/run installs both. Each page is
screenshotted; with JOBRUNNER_TEST_SCREENSHOTS_DIR=docs/assets the screenshots are written where
docs/how-to/dashboard.md shows them (otherwise into the test's temporary directory).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from tests.support import jobrunner_process

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)
WAIT = 30.0


def _until(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn


def _fetch(db: psycopg.Connection[Any], sql: str, *args: Any) -> Any:
    row = db.execute(sql, args).fetchone()
    return row[0] if row else None


def _enqueue(db: psycopg.Connection[Any], job_type: str, payload: dict[str, Any], **columns: Any) -> int:
    names = ["job_type", "payload", *columns]
    values = [job_type, json.dumps(payload), *columns.values()]
    placeholders = ", ".join(["%s"] * len(values))
    job_id: int = _fetch(
        db, f"INSERT INTO background_jobs ({', '.join(names)}) VALUES ({placeholders}) RETURNING id", *values
    )
    return job_id


@pytest.fixture
def dashboard_url(db_url: str) -> Iterator[str]:
    """`jobrunner dashboard --port 0` on the test's database; its URL, from the line it prints."""
    process = jobrunner_process(
        db_url,
        "dashboard",
        "--port",
        "0",
        env={"JOBRUNNER_DASHBOARD_REFRESH_INTERVAL": "0.3", "JOBRUNNER_DASHBOARD_BULK_BATCH": "2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + WAIT
    url = None
    try:
        while url is None:
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError(f"the dashboard did not start: {process.stdout.read1().decode(errors='replace')}")
            if selector.select(0.1):
                line = process.stdout.readline().decode()
                if line.startswith("jobrunner dashboard: http://"):
                    url = line.split()[2].rstrip("/")
        yield url
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture
def daemon(db_url: str) -> Iterator[subprocess.Popen[bytes]]:
    process = jobrunner_process(
        db_url,
        "run",
        "--handlers",
        "tests.dashboard_handlers",
        "--queues",
        "default,held",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(60)


def _chromium(javascript: bool = True) -> WebDriver:
    options = webdriver.ChromeOptions()
    assert CHROMIUM is not None and DRIVER is not None
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,1000")
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    driver.implicitly_wait(0)
    return driver


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    driver = _chromium()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshot(tmp_path: Path) -> Callable[[WebDriver, str], None]:
    folder = Path(os.environ.get("JOBRUNNER_TEST_SCREENSHOTS_DIR") or tmp_path)

    def take(driver: WebDriver, name: str) -> None:
        path = folder / f"dashboard-{name}.png"
        # the whole page, as tall as it is
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1400, max(700, min(int(height) + 40, 2400)))
        driver.save_screenshot(str(path))
        driver.set_window_size(1400, 1000)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    return take


def _click(driver: WebDriver, css: str) -> None:
    """Click what `css` finds now: a live update may replace the element between finding it and
    clicking it, then it is found again."""

    def clicked() -> bool:
        try:
            driver.find_element(By.CSS_SELECTOR, css).click()
        except (StaleElementReferenceException, NoSuchElementException):
            return False
        return True

    _until(clicked, f"a click on {css}")


def _text(driver: WebDriver, css: str) -> str:
    """The text of what `css` finds now ("" while a live update replaces it)."""
    try:
        return str(driver.find_element(By.CSS_SELECTOR, css).text)
    except (StaleElementReferenceException, NoSuchElementException):
        return ""


def _wait_text(driver: WebDriver, element_id: str, text: str) -> None:
    WebDriverWait(driver, WAIT).until(expected_conditions.text_to_be_present_in_element((By.ID, element_id), text))


def _dead_flaky_jobs(db: psycopg.Connection[Any], flag: Path, count: int) -> list[int]:
    flag.write_text("down")
    ids = [_enqueue(db, "flaky", {"fail_while": str(flag)}, max_attempts=1) for _ in range(count)]
    _until(
        lambda: _fetch(db, "SELECT count(*) FROM background_jobs WHERE id = ANY(%s) AND status = 'dead'", ids) == count,
        "the flaky jobs to die",
    )
    return ids


def test_find_a_dead_job_retry_it_and_see_it_complete(
    dashboard_url: str,
    daemon: subprocess.Popen[bytes],
    browser: WebDriver,
    db: psycopg.Connection[Any],
    tmp_path: Path,
    screenshot: Callable[[WebDriver, str], None],
) -> None:
    for n in range(6):
        _enqueue(db, "noop", {"n": n})
    [dead] = _dead_flaky_jobs(db, tmp_path / "flag", 1)
    _until(lambda: _fetch(db, "SELECT count(*) FROM background_jobs WHERE status = 'completed'") == 6, "noop jobs")

    browser.get(dashboard_url + "/")
    _until(lambda: "flaky" in _text(browser, "#live"), "the overview to list flaky")
    screenshot(browser, "overview")

    # the list, filtered to dead jobs with the form, as a person would
    browser.find_element(By.LINK_TEXT, "Jobs").click()
    browser.find_element(By.CSS_SELECTOR, "input[name=status][value=dead]").click()
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    _until(lambda: "status=dead" in browser.current_url, "the filtered list")
    rows = browser.find_elements(By.CSS_SELECTOR, "#jobs tbody tr[data-job]")
    assert [row.get_attribute("data-job") for row in rows] == [str(dead)]
    screenshot(browser, "jobs")

    browser.find_element(By.LINK_TEXT, str(dead)).click()
    assert "upstream unavailable" in browser.find_element(By.ID, "last-error").text
    assert browser.find_element(By.ID, "job-status").text == "dead"
    screenshot(browser, "job")

    (tmp_path / "flag").unlink()
    _click(browser, "[data-testid=job-retry]")
    _wait_text(browser, "notice", "retry: 1 of 1 changed")
    # the page updates itself (server-sent events) once the daemon has run it
    _wait_text(browser, "job-status", "completed")
    assert _fetch(db, "SELECT status FROM background_jobs WHERE id = %s", dead) == "completed"


def test_bulk_retry_of_everything_matching_the_filter(
    dashboard_url: str,
    daemon: subprocess.Popen[bytes],
    browser: WebDriver,
    db: psycopg.Connection[Any],
    tmp_path: Path,
    screenshot: Callable[[WebDriver, str], None],
) -> None:
    dead = _dead_flaky_jobs(db, tmp_path / "flag", 5)
    (tmp_path / "flag").unlink()
    browser.get(dashboard_url + "/jobs?status=dead&job_type=flaky")
    browser.find_element(By.CSS_SELECTOR, "[data-testid=bulk-retry]").click()
    assert browser.find_element(By.TAG_NAME, "h1").text == "Retry 5 job(s)?"
    screenshot(browser, "confirm")
    browser.find_element(By.CSS_SELECTOR, "[data-testid=confirm-bulk]").click()
    _wait_text(browser, "state", "finished")  # the audit entry, updated live
    assert browser.find_element(By.ID, "affected").text == "5"
    screenshot(browser, "audit-entry")
    _until(
        lambda: (
            _fetch(db, "SELECT count(*) FROM background_jobs WHERE id = ANY(%s) AND status = 'completed'", dead) == 5
        ),
        "the retried jobs to complete",
    )
    browser.get(dashboard_url + "/audit")
    _until(lambda: "retry" in _text(browser, "#live"), "the audit trail to list the retry")
    screenshot(browser, "audit")


def test_a_paused_queue_starts_nothing_until_it_is_resumed(
    dashboard_url: str,
    daemon: subprocess.Popen[bytes],
    browser: WebDriver,
    db: psycopg.Connection[Any],
    screenshot: Callable[[WebDriver, str], None],
) -> None:
    browser.get(dashboard_url + "/")
    form = browser.find_element(By.CSS_SELECTOR, "form.bar")
    form.find_element(By.NAME, "queue").send_keys("held")
    form.find_element(By.NAME, "reason").send_keys("upstream maintenance")
    form.find_element(By.CSS_SELECTOR, "button").click()
    _until(lambda: browser.find_elements(By.CSS_SELECTOR, "[data-testid=resume-held]"), "the paused queue")

    held = [_enqueue(db, "noop", {"n": n}, queue="held") for n in range(3)]
    marker = _enqueue(db, "noop", {"after": "held"})  # once it has run, the daemon claimed since
    _until(lambda: _fetch(db, "SELECT status FROM background_jobs WHERE id = %s", marker) == "completed", "marker")
    assert _fetch(db, "SELECT count(*) FROM background_jobs WHERE id = ANY(%s) AND attempts = 0", held) == 3
    # the page settles on the state after the last change: the held jobs waiting, the marker job
    # no longer pending in default
    _until(
        lambda: "held paused 3 3" in (shown := _text(browser, "#live tbody")) and "default 1" not in shown,
        "the overview to show the held jobs waiting and nothing else",
    )
    screenshot(browser, "paused")

    _click(browser, "[data-testid=resume-held]")
    _until(
        lambda: (
            _fetch(db, "SELECT count(*) FROM background_jobs WHERE id = ANY(%s) AND status = 'completed'", held) == 3
        ),
        "the held jobs to run after the resume",
    )
    _until(lambda: not browser.find_elements(By.CSS_SELECTOR, "[data-testid=resume-held]"), "the pause gone")


def test_a_script_in_a_job_shows_as_text(
    dashboard_url: str, browser: WebDriver, db: psycopg.Connection[Any], screenshot: Callable[[WebDriver, str], None]
) -> None:
    attack = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
    job_id = _enqueue(db, "<b>bold</b>", {"comment": attack}, status="dead", last_error=attack, attempts=5)
    for path in ("/", "/jobs", f"/jobs/{job_id}"):
        browser.get(dashboard_url + path)
        assert browser.title != "pwned"
        assert not browser.find_elements(By.CSS_SELECTOR, "main script, main img, main b")
    assert attack in browser.find_element(By.ID, "last-error").text
    assert attack.replace('"', '\\"') in browser.find_element(By.ID, "payload").text
    screenshot(browser, "xss")


def test_it_reads_with_javascript_off(
    dashboard_url: str, db: psycopg.Connection[Any], screenshot: Callable[[WebDriver, str], None]
) -> None:
    db.execute(
        "INSERT INTO jobrunner_schedules (name, definition) VALUES ('nightly-cleanup', %s)",
        [json.dumps({"cron": "0 3 * * *", "job_type": "noop", "timezone": "Europe/Berlin"})],
    )
    job_id = _enqueue(db, "flaky", {"fail_while": "/nowhere"}, status="dead", last_error="it broke", attempts=5)
    driver = _chromium(javascript=False)
    try:
        driver.get(dashboard_url + "/schedules")
        assert "nightly-cleanup" in driver.find_element(By.ID, "live").text
        screenshot(driver, "schedules")
        driver.find_element(By.LINK_TEXT, "Failed").click()
        driver.find_element(By.LINK_TEXT, str(job_id)).click()
        assert driver.find_element(By.ID, "last-error").text == "it broke"
        # the actions are plain forms: they work without JavaScript too
        driver.find_element(By.CSS_SELECTOR, "[data-testid=job-retry]").click()
        _wait_text(driver, "notice", "retry: 1 of 1 changed")
        assert driver.find_element(By.ID, "job-status").text == "pending"
    finally:
        driver.quit()
