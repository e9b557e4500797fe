"""The dashboard over plain HTTP (no browser): `memoir ui` as a real process, its headers, CSRF, Host/Origin
checks, sessions that end with their token, the export download. The flows in a browser: test_ui_browser.py."""

from __future__ import annotations

import json
import re
from email.utils import parsedate_to_datetime
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from memoir.memory.store import Store
from tests.netclients import make_token, revoke_token
from tests.servers import MEMOIR, ServerProcess, clean_env, serve  # noqa: F401  (serve: fixture)

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[ServerProcess]:
    """`memoir ui --port 0` on a database with two memories of ava and one of bob."""
    db = tmp_path / "m.db"
    for user, text in (("ava", "Ava likes tea"), ("ava", "Ava plays chess"), ("bob", "Bob likes jazz")):
        subprocess.run([*MEMOIR, "add", "--db", str(db), "--user", user, text], check=True, capture_output=True, env=clean_env())
    proc = subprocess.Popen(
        [*MEMOIR, "ui", "--db", str(db), "--user", "ava", "--port", "0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=clean_env({"MEMOIR_EMBEDDINGS": "off"}),
    )
    server = ServerProcess(proc=proc, transport="ui")
    server._reader = threading.Thread(target=server._drain, daemon=True)
    server._reader.start()
    server.wait_ready()
    server.db = db  # type: ignore[attr-defined]
    yield server
    assert server.stop() == 0, server.stderr
    assert proc.stdout is not None
    assert proc.stdout.read().strip() == server.url  # the URL, printed for the person who ran it
    proc.stdout.close()


def origin(url: str) -> str:
    return url.split("/ui")[0]


def csrf_of(page: httpx2.Response) -> str:
    match = CSRF.search(page.text)
    assert match, page.text[:300]
    return match.group(1)


async def memories(db: Path, user: str) -> list[str]:
    store = await Store.open(db)
    try:
        return [m.memory for m in (await store.list(user)).memories]
    finally:
        await store.close()


async def test_memoir_ui_serves_the_list_with_strict_headers(ui: ServerProcess) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/ui/", ui.url)
    with httpx2.Client() as http:
        page = http.get(ui.url)
        assert page.status_code == 200
        assert "Ava likes tea" in page.text and "Ava plays chess" in page.text and "Bob likes jazz" not in page.text
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert page.headers["x-frame-options"] == "DENY"
        cookie = page.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
        assert "<script>" not in page.text and " style=" not in page.text  # nothing inline for the CSP to refuse
        assert http.get(f"{origin(ui.url)}/ui/static/ui.js").headers["content-type"].startswith("text/javascript")
        # The open local dashboard may show any user, as stdio may.
        assert "Bob likes jazz" in http.get(ui.url, params={"user": "bob"}).text


async def test_a_change_without_the_forms_csrf_token_is_refused_and_changes_nothing(ui: ServerProcess) -> None:
    with httpx2.Client() as http:
        page = http.get(ui.url)
        token = csrf_of(page)
        ids = re.findall(r'data-id="([0-9a-f]+)"', page.text)
        assert len(ids) == 2
        target = f"{origin(ui.url)}/ui/m/{ids[0]}/delete?user=ava"
        assert http.post(target, data={"csrf": "forged"}).status_code == 403
        with httpx2.Client() as stranger:  # no session cookie: a cross-site form carries none (SameSite=Strict)
            assert stranger.post(target, data={"csrf": token}).status_code == 403
        assert len(await memories(ui.db, "ava")) == 2  # type: ignore[attr-defined]
        done = http.post(target, data={"csrf": token})
        assert done.status_code == 303 and "note=deleted" in done.headers["location"]
        assert len(await memories(ui.db, "ava")) == 1  # type: ignore[attr-defined]


async def test_host_and_origin_are_checked_as_for_mcp(ui: ServerProcess) -> None:
    with httpx2.Client() as http:
        assert http.get(ui.url, headers={"Host": "evil.example"}).status_code == 421
        page = http.get(ui.url)
        refused = http.post(f"{origin(ui.url)}/ui/clear?user=ava", data={"csrf": csrf_of(page), "confirm": "yes"},
                            headers={"Origin": "http://evil.example"})
        assert refused.status_code == 403
        assert len(await memories(ui.db, "ava")) == 2  # type: ignore[attr-defined]


async def test_export_downloads_the_users_memories_and_history(ui: ServerProcess) -> None:
    with httpx2.Client() as http:
        download = http.get(f"{origin(ui.url)}/ui/export", params={"user": "ava"})
    assert download.status_code == 200
    assert download.headers["content-disposition"] == 'attachment; filename="memoir-ava.jsonl"'
    records = [json.loads(line) for line in download.text.splitlines()]
    assert records[0]["user_id"] == "ava" and records[0]["history"] is True
    assert sorted(r["memory"] for r in records if r["type"] == "memory") == ["Ava likes tea", "Ava plays chess"]


async def test_a_session_ends_when_its_token_is_revoked(serve, tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    token_id, token = await make_token(db, "ava")
    server = serve("sse", db, env={"MEMOIR_EMBEDDINGS": "off"})
    base = server.base_url
    with httpx2.Client(base_url=base) as http:
        first = http.get("/ui/")
        assert first.status_code == 303 and first.headers["location"].startswith("/ui/login")
        login = http.get("/ui/login")
        wrong = http.post("/ui/login", data={"csrf": csrf_of(login), "token": "memoir_wrong"})
        assert wrong.status_code == 401 and "not a current memoir token" in wrong.text
        signed = http.post("/ui/login", data={"csrf": csrf_of(login), "token": token, "next": "https://evil.example/"})
        assert signed.status_code == 303 and signed.headers["location"] == "/ui/"  # never a redirect elsewhere
        assert http.get("/ui/").status_code == 200
        assert http.get("/ui/", params={"user": "bob"}).status_code == 403
        await revoke_token(db, token_id)
        assert http.get("/ui/").headers["location"].startswith("/ui/login")


async def test_pages_filters_and_charts(serve, tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    store = await Store.open(db)
    try:
        for i in range(25):
            await store.add("ava", f"Fact number {i}", ["odd" if i % 2 else "even", "all"])
    finally:
        await store.close()
    server = serve("http", db, env={"MEMOIR_EMBEDDINGS": "off", "MEMOIR_USER_ID": "ava"})
    rows = re.compile(r'<li class="memory" data-id="[0-9a-f]+"><a class="text" href="[^"]+">Fact number (\d+)</a>')
    with httpx2.Client(base_url=server.base_url) as http:
        first = http.get("/ui/")
        assert [int(n) for n in rows.findall(first.text)] == list(range(24, 4, -1))  # newest first, 20 a page
        older = re.search(r'rel="next" href="([^"]+)"', first.text)
        assert older is not None
        second = http.get(older.group(1).replace("&amp;", "&"))
        assert [int(n) for n in rows.findall(second.text)] == [4, 3, 2, 1, 0] and 'rel="next"' not in second.text

        odd = http.get("/ui/", params={"topic": "odd"})
        assert sorted(int(n) for n in rows.findall(odd.text)) == list(range(1, 25, 2))
        day = parsedate_to_datetime(first.headers["date"]).date().isoformat()  # the server's day (UTC)
        assert len(rows.findall(http.get("/ui/", params={"from": day, "to": day}).text)) == 20
        assert rows.findall(http.get("/ui/", params={"from": "2999-01-01"}).text) == []
        assert rows.findall(http.get("/ui/", params={"to": "2000-01-01"}).text) == []
        assert http.get("/ui/", params={"from": "yesterday"}).status_code == 400

        # Charts: per topic (most used first) and over time, as inline SVG.
        assert '<svg class="chart" role="img" aria-label="memories per topic"' in first.text
        assert first.text.index("<title>all: 25</title>") < first.text.index("<title>even: 13</title>") < first.text.index("<title>odd: 12</title>")
        assert f"<title>{day}: 25</title>" in first.text
