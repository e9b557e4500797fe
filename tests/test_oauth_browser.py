"""memoir's OAuth consent page in a real browser (headless Chromium via selenium): a person pastes a
sign-in code, presses Allow, and the browser lands on the app's redirect URI with a code.

httpx-driven tests (tests/test_oauth.py) send no Origin header; a browser does, and what it sends
depends on the page's referrer policy (under `no-referrer` Chromium sends `Origin: null`, which
memoir's Host/Origin check refuses). Only a browser shows the page works as people use it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest

from tests.oauthflow import make_login_code
from tests.servers import ServerProcess, start_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no headless browser: install Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


class Callback:
    """The app's redirect URI: a listener on 127.0.0.1 that records the query it is sent."""

    def __init__(self) -> None:
        self.seen: list[dict[str, list[str]]] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                seen.append(parse_qs(urlsplit(self.path).query))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"back in the app")

            def log_message(self, *args: object) -> None:
                pass

        self.http = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_port}/callback"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    db = tmp_path / "memoir.db"
    code = asyncio.run(make_login_code(db, "ava"))  # a credential exists: OAuth is on
    server = start_server("http", db, env={"MEMOIR_EMBEDDINGS": "off"})
    yield server, code
    assert server.stop() == 0, server.stderr


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def test_a_person_allows_an_app_from_the_consent_page(server: tuple[ServerProcess, str], browser: webdriver.Chrome) -> None:
    process, sign_in_code = server
    callback = Callback()
    try:
        registered = httpx2.post(
            f"{process.base_url}/register",
            json={"client_name": "Browser app", "redirect_uris": [callback.url], "token_endpoint_auth_method": "none",
                  "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"]},
            timeout=10,
        )
        assert registered.status_code == 201, registered.text
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        browser.get(f"{process.base_url}/authorize?" + urlencode({
            "response_type": "code", "client_id": registered.json()["client_id"], "redirect_uri": callback.url,
            "code_challenge": challenge, "code_challenge_method": "S256", "state": "s1",
            "resource": process.url,
        }))
        assert "Browser app" in browser.find_element(By.TAG_NAME, "h1").text
        browser.find_element(By.ID, "credential").send_keys(sign_in_code)
        browser.find_element(By.CSS_SELECTOR, "button[value=allow]").click()
        WebDriverWait(browser, 10).until(lambda b: callback.seen or "403" in b.page_source or "refused" in b.page_source)
        assert callback.seen, f"the browser never reached the app; it shows: {browser.page_source[:300]}"
        assert callback.seen[0]["state"] == ["s1"] and callback.seen[0]["code"][0]
    finally:
        callback.close()
