"""The dashboard in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`) via selenium,
against a real `memoir serve --transport http` whose memories come over MCP and through extraction (a real
local fake of the Anthropic API, tests/fake_anthropic.py).

One server and one browser for the module; the tests run in order and build on each other (the last
one creates tokens, which closes the open server). Set MEMOIR_UI_SCREENSHOTS=DIR to save the
screenshots the README shows (docs/ui-*.png).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_anthropic import FakeAnthropic, tool_use
from tests.netclients import connect, make_token
from tests.servers import ServerProcess, start_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no headless browser: install Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
)

from selenium import webdriver  # noqa: E402  (selenium is in the test extras; the browser may be missing)
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException, WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

XSS = "<img src=x onerror=alert(1)>"
SHOTS = os.environ.get("MEMOIR_UI_SCREENSHOTS")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui") / "memoir.db"


@pytest.fixture(scope="module")
def server(db: Path, fake: FakeAnthropic) -> Iterator[ServerProcess]:
    env = {"MEMOIR_USER_ID": "ava", "MEMOIR_EMBEDDINGS": "off", "ANTHROPIC_API_KEY": "sk-test",
           "ANTHROPIC_BASE_URL": fake.url, "MEMOIR_LLM_MAX_RETRIES": "0"}
    server = start_server("http", db, env=env)
    yield server
    assert server.stop() == 0, server.stderr


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.implicitly_wait(0)  # pages are waited for explicitly (click); absence checks must not wait
    yield driver
    driver.quit()


def shot(browser: webdriver.Chrome, name: str, height: int = 900) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        browser.set_window_size(1200, height)
        browser.save_screenshot(str(Path(SHOTS) / f"ui-{name}.png"))
        browser.set_window_size(1200, 900)


def no_alert(browser: webdriver.Chrome) -> bool:
    try:
        browser.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


async def call(server: ServerProcess, tool: str, token: str | None = None, **arguments: object) -> dict:
    async with connect(server.url, token) as client:
        result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content  # type: ignore[return-value]


def click(browser: webdriver.Chrome, element: WebElement, *, confirm: bool = False) -> None:
    """Click something that loads a new page, and wait until it has (accepting ui.js's confirm() first)."""
    page = browser.find_element(By.TAG_NAME, "html")
    element.click()
    if confirm:
        browser.switch_to.alert.accept()
    loaded(browser, page)


def loaded(browser: webdriver.Chrome, page: WebElement) -> None:
    wait = WebDriverWait(browser, 10)
    wait.until(lambda _: gone(page))
    wait.until(lambda b: b.execute_script("return document.readyState") == "complete")


def gone(element: WebElement) -> bool:
    """Whether `element` left the document (its page was replaced). selenium's staleness_of, but
    chromedriver sometimes reports a replaced page's node with an inspector error instead of a
    stale reference (the test failed about 1 run in 4 that way)."""
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc):
            return True
        raise
    return False


def text(browser: webdriver.Chrome, css: str) -> str:
    found = browser.find_elements(By.CSS_SELECTOR, css)
    assert found, f"no {css} on {browser.current_url}: {browser.page_source[:800]}"
    return found[0].text


async def test_a_memory_added_over_mcp_appears_and_search_finds_it(server, browser) -> None:
    await call(server, "add_memory", memory="Ava is learning the cello on Tuesdays", topics=["music", "hobbies"])
    await call(server, "add_memory", memory="Ava's cat is called Miso", topics=["pets"])
    await call(server, "add_memory", memory="Ava prefers window seats on long flights", topics=["travel"])
    browser.get(f"{server.base_url}/ui")
    assert "Ava is learning the cello on Tuesdays" in text(browser, "#memories")
    assert text(browser, "#user") == "ava"
    shot(browser, "list")

    box = browser.find_element(By.ID, "q")
    box.send_keys("cello")
    page = browser.find_element(By.TAG_NAME, "html")
    Select(browser.find_element(By.ID, "method")).select_by_value("keyword")  # ui.js submits on change
    loaded(browser, page)
    assert "keyword" in text(browser, "#search-summary")
    results = browser.find_elements(By.CSS_SELECTOR, "#memories .memory")
    assert len(results) == 1 and "cello" in results[0].text
    assert float(results[0].find_element(By.CSS_SELECTOR, ".score").text) > 0
    shot(browser, "search")

    click(browser, browser.find_element(By.LINK_TEXT, "pets 1"))  # a topic chip narrows the list
    assert [m.text.splitlines()[0] for m in browser.find_elements(By.CSS_SELECTOR, "#memories .memory")] == []  # cello AND pets: none
    browser.get(f"{server.base_url}/ui/?user=ava&topic=pets")
    assert [m.text.splitlines()[0] for m in browser.find_elements(By.CSS_SELECTOR, "#memories .memory")] == ["Ava's cat is called Miso"]


async def test_edit_delete_and_undo(server, browser) -> None:
    listed = await call(server, "list_memories")
    if "Ava is learning the cello on Tuesdays" not in [m["memory"] for m in listed["memories"]]:  # run on its own
        await call(server, "add_memory", memory="Ava is learning the cello on Tuesdays", topics=["music", "hobbies"])
    browser.get(f"{server.base_url}/ui/")
    click(browser, browser.find_element(By.LINK_TEXT, "Ava is learning the cello on Tuesdays"))
    area = browser.find_element(By.ID, "memory")
    area.clear()
    area.send_keys("Ava is learning the cello on Thursdays")
    topics = browser.find_element(By.ID, "topics")
    topics.clear()
    topics.send_keys("music, lessons")
    click(browser, browser.find_element(By.CSS_SELECTOR, "#edit button"))
    assert text(browser, "#note").startswith("Saved.")
    assert text(browser, "#memory-text") == "Ava is learning the cello on Thursdays"
    assert "changed by this dashboard" in text(browser, "#timeline")
    found = await call(server, "search_memories", query="thursdays", retrieval_method="keyword")
    [memory] = found["results"]
    assert memory["topics"] == ["music", "lessons"]

    click(browser, browser.find_element(By.ID, "delete"), confirm=True)  # ui.js asks first
    assert text(browser, "#note").startswith("Memory deleted.")
    assert "Thursdays" not in text(browser, "#memories")
    assert (await call(server, "search_memories", query="thursdays", retrieval_method="keyword"))["results"] == []

    click(browser, browser.find_element(By.ID, "undo-now"))  # the undo right there
    assert text(browser, "#note").startswith("Undone.")
    assert text(browser, "#memory-text") == "Ava is learning the cello on Thursdays"
    again = await call(server, "search_memories", query="thursdays", retrieval_method="keyword")
    assert [m["memory_id"] for m in again["results"]] == [memory["memory_id"]]

    # Undo of an older event from the timeline: the edit goes back to Tuesdays.
    timeline = browser.find_elements(By.CSS_SELECTOR, "#timeline .event")
    edit = next(e for e in timeline if "changed by this dashboard" in e.text)
    click(browser, edit.find_element(By.TAG_NAME, "button"))
    assert text(browser, "#memory-text") == "Ava is learning the cello on Tuesdays"
    shot(browser, "memory", 1350)


async def test_history_shows_the_extractions_reason_and_source(server, browser, fake) -> None:
    reason = "Ava said she moved to Lisbon last week"
    fake.push(tool_use({"operations": [{"op": "add", "memory": "Ava lives in Lisbon", "topics": ["home"], "reason": reason}]}))
    result = await call(server, "extract_memories", message="I moved to Lisbon last week, finally!")
    [added] = result["memories"]
    browser.get(f"{server.base_url}/ui/m/{added['memory_id']}")
    timeline = text(browser, "#timeline")
    assert "added by extraction" in timeline and f"Reason: {reason}" in timeline
    browser.find_element(By.CSS_SELECTOR, "#timeline details.source summary").click()
    assert "I moved to Lisbon last week, finally!" in text(browser, "#timeline details.source pre")
    shot(browser, "extraction", 1000)


async def test_memory_text_is_shown_as_text_and_runs_nothing(server, browser) -> None:
    added = await call(server, "add_memory", memory=XSS, topics=["<script>alert(2)</script>"])
    browser.get(f"{server.base_url}/ui/")
    assert XSS in text(browser, "#memories")
    assert browser.find_elements(By.CSS_SELECTOR, "main img, main script") == []
    assert no_alert(browser)
    browser.get(f"{server.base_url}/ui/m/{added['memory_id']}")
    assert text(browser, "#memory-text") == XSS
    assert browser.find_elements(By.CSS_SELECTOR, "main img, main script") == []
    assert no_alert(browser)


async def test_clear_and_undo_the_whole_clear_in_one_step(server, browser) -> None:
    before = await call(server, "list_memories", limit=100)
    browser.get(f"{server.base_url}/ui/")
    browser.find_element(By.NAME, "confirm").click()
    click(browser, browser.find_element(By.CSS_SELECTOR, "form.danger button"), confirm=True)
    assert text(browser, "#note").startswith(f"Deleted all {len(before['memories'])} memories.")
    assert (await call(server, "list_memories"))["memories"] == []
    browser.get(f"{server.base_url}/ui/changes")
    assert f"cleared {len(before['memories'])} memories" in text(browser, "#changes")
    click(browser, browser.find_element(By.XPATH, "//button[text()='Undo the whole clear']"))
    assert text(browser, "#note").startswith(f"Restored {len(before['memories'])} memories.")
    after = await call(server, "list_memories", limit=100)
    assert {m["memory_id"] for m in after["memories"]} == {m["memory_id"] for m in before["memories"]}


async def test_with_tokens_a_user_sees_only_their_own_memories(server, browser, db) -> None:
    _, ava = await make_token(db, "ava")
    _, bob = await make_token(db, "bob")
    _, admin = await make_token(db, None, admin=True)
    bobs = await call(server, "add_memory", token=bob, memory="Bob hates jazz")

    browser.get(f"{server.base_url}/ui/")  # the server is no longer open: sign in
    assert "/ui/login" in browser.current_url
    browser.find_element(By.ID, "token").send_keys("memoir_not-a-token")
    click(browser, browser.find_element(By.CSS_SELECTOR, "form.login button"))
    assert "not a current memoir token" in text(browser, ".error")
    browser.find_element(By.ID, "token").send_keys(ava)
    click(browser, browser.find_element(By.CSS_SELECTOR, "form.login button"))
    assert text(browser, "#user") == "ava"
    assert browser.find_elements(By.NAME, "user") == [browser.find_element(By.CSS_SELECTOR, "form.search [name=user]")]  # no switch

    browser.get(f"{server.base_url}/ui/?user=bob")
    assert "Not your memories" in text(browser, "h1")
    assert "jazz" not in browser.page_source
    browser.get(f"{server.base_url}/ui/m/{bobs['memory_id']}")
    assert f"no memory '{bobs['memory_id']}' for user 'ava'" in text(browser, ".error")
    assert "jazz" not in browser.page_source

    click(browser, browser.find_element(By.XPATH, "//button[text()='Sign out']"))
    browser.find_element(By.ID, "token").send_keys(admin)
    click(browser, browser.find_element(By.CSS_SELECTOR, "form.login button"))
    browser.get(f"{server.base_url}/ui/?user=bob")
    assert "Bob hates jazz" in text(browser, "#memories")
