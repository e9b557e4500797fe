"""The MCP Inspector's CLI completing memoir's OAuth flow, with a script in the person's place.

    python bench/inspector_oauth.py                       # tools/list, then an add_memory as 'ava'
    python bench/inspector_oauth.py --inspector 2.12.0

A manual check, not a test (CI must not depend on npm): it starts `memoir serve --transport http`
on 127.0.0.1 with a fresh database, makes a sign-in code for 'ava' (`memoir token create ava
--code`), and runs `npx -y @modelcontextprotocol/inspector@VERSION --cli URL --method ...` with no
header, under a pseudo-terminal (`script`), because the Inspector does interactive OAuth only on a
TTY ("Interactive OAuth requires a TTY" otherwise). When it prints "Please navigate to: <url>", this
script plays the browser: it opens that URL, answers memoir's consent page with the code, and
follows the redirect to the Inspector's own callback listener (127.0.0.1:6276). The Inspector then
exchanges the code and makes its call; its output is printed.

Inspector 2.12.0 declares node >= 22.19 but runs on node 20 (npm prints EBADENGINE warnings);
0.15.0, the newest that declares node 20, has no OAuth in its CLI at all.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx2

MEMOIR = [sys.executable, "-m", "memoir.server.cli"]
NAVIGATE = re.compile(rb"Please navigate to: (?:\x1b\]8;;)?(http[^\x1b\x07\s]+)")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|\x1b\]8;;[^\x1b\x07]*(?:\x1b\\|\x07)|[\u2800-\u28ff]")


async def inspector(url: str, code: str, version: str, method: list[str], home: str) -> int:
    command = " ".join(["npx", "-y", f"@modelcontextprotocol/inspector@{version}", "--cli", url, *method])
    proc = await asyncio.create_subprocess_exec(
        "script", "-qfc", command, "/dev/null",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "HOME": home},
    )
    assert proc.stdout is not None
    seen = b""
    while (match := NAVIGATE.search(seen)) is None:
        chunk = await asyncio.wait_for(proc.stdout.read(4096), 120)
        if not chunk:
            print(_clean(seen))
            return proc.returncode or 1
        seen += chunk
    authorization_url = match[1].decode()
    print(f"inspector: Please navigate to: {authorization_url[:80]}...")
    async with httpx2.AsyncClient(timeout=10, follow_redirects=False) as browser:
        start = await browser.get(authorization_url)
        print(f"browser: GET /authorize -> {start.status_code} {start.headers.get('location', '')[:60]}")
        page = await browser.get(start.headers["location"])
        fields = {m[1]: html.unescape(m[2]) for m in re.finditer(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page.text)}
        name = re.search(r"<h1>(.*?)</h1>", page.text)
        print(f"browser: consent page {page.status_code}: {html.unescape(re.sub('<[^>]+>', '', name[1])) if name else '?'}")
        answer = await browser.post(start.headers["location"].split("?")[0], data={**fields, "credential": code, "action": "allow"})
        print(f"browser: POST /consent (sign-in code, Allow) -> {answer.status_code} {answer.headers.get('location', '')[:50]}...")
        callback = await browser.get(answer.headers["location"])
        print(f"browser: GET the Inspector's callback -> {callback.status_code}")
    rest, _ = await asyncio.wait_for(proc.communicate(), 120)
    print(_clean(rest))
    print(f"inspector exit code: {proc.returncode}")
    return proc.returncode or 0


def _clean(output: bytes) -> str:
    lines = ANSI.sub("", output.decode(errors="replace")).splitlines()
    return "\n".join(line for line in lines if line.strip() and "EBADENGINE" not in line and "npm warn" not in line)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inspector", default="2.12.0", help="the @modelcontextprotocol/inspector version")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "m.db")
        made = subprocess.run([*MEMOIR, "token", "create", "ava", "--code", "--db", db], capture_output=True, text=True, check=True)
        server = subprocess.Popen(
            [*MEMOIR, "serve", "--transport", "http", "--port", "0", "--db", db], stderr=subprocess.PIPE, text=True
        )
        try:
            assert server.stderr is not None
            url = re.search(r"http://\S+", server.stderr.readline())[0]  # type: ignore[index]
            print(f"memoir: {url}")
            rc = await inspector(url, made.stdout.strip().splitlines()[-1], args.inspector, ["--method", "tools/list"], tmp)
            # A second run signs in again (the Inspector keeps secrets in memory only here: no keychain).
            code = subprocess.run([*MEMOIR, "token", "create", "ava", "--code", "--db", db], capture_output=True, text=True, check=True)
            rc |= await inspector(
                url, code.stdout.strip().splitlines()[-1], args.inspector,
                ["--method", "tools/call", "--tool-name", "add_memory", "--tool-arg", "'memory=Ava tried the Inspector'"], tmp,
            )
        finally:
            server.terminate()
            server.wait(10)
    return rc


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
