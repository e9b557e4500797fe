"""What must not be kept (issue 13, part 4): credentials refused, redacted or allowed on every
write path - add_memory, update_memory, extract_memories' operations and their source, import -
through the MCP tools in both protocol eras. The secrets below are fake but well-formed."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from mcp import Client

from memoir.memory.secrets import LABELS, kinds, scan
from memoir.server.app import build_server, running_app
from memoir.server.settings import Settings
from memoir.tools.context import AppContext

from .conftest import ERAS, held
from .fake_anthropic import FakeAnthropic, fake_anthropic, tool_use  # noqa: F401
from .helpers import op, call, call_error

AWS = "AKIA" + "Q3EGRIWN5KZ7TX2M"
GITHUB = "ghp_" + "x7Rk2LmQ9vT4bN8cJ1pW6sY3hD5fG0aZ2eU7"
STRIPE = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkF2YSJ9."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
CARD = "4539 1488 0343 6467"  # Luhn-valid
ANTHROPIC = "sk-ant-api03-" + "Zx8Kq2Lm9Vt4Bn7Cj1Pw6Sy3Hd5Fg0Ae2Ru7Io4Ty8Ui1Op3As6Df9Gh2Jk5Lz8Xc1Vb4Nm7Qw0Er3Ty6Ui9" + "-AA"

EXAMPLES = [
    (f"Ava's AWS access key is {AWS}", "aws-access-key"),
    (f"Ava's GitHub token: {GITHUB}", "github-token"),
    (f"Ava's shop uses the Stripe key {STRIPE}", "stripe-key"),
    (f"Ava's session token is {JWT}", "jwt"),
    ("Ava's server key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7b9\n-----END RSA PRIVATE KEY-----", "private-key"),
    (f"Ava's card number is {CARD}", "card-number"),
    ("Ava's wifi password: hunter2", "password"),
    ("The password for Ava's laptop is swordfish.", "password"),
    (f"Ava's Claude key is {ANTHROPIC}", "anthropic-key"),
    ("Ava's Maps key is AIza" + "SyD4rT7kL9mQ2vX8bN1cJ6pW3sY5hF0gZ4e", "google-api-key"),
    ("Ava logs in at https://ava:Tr0ub4dor@db.example.com/admin", "url-password"),
]

ORDINARY = [
    "Ava likes to ski in Colorado",
    "Ava's password is too weak, she says, and she wants to change it",
    "Ava keeps her passwords in a password manager",
    "Ava's phone number is 555-201-3344 and her birthday is 1990-04-12",
    "Ava ran 10,000 steps on 2024-03-02 and paid $1,250.00 for the trip",
    "Ava's order number is 1234 5678 9012 3456",  # 16 digits, not Luhn-valid
    "Ava's favourite film is 'The Secret Life of Walter Mitty'",
    "Ava said: secrets: none worth keeping",
]


@pytest.mark.parametrize("text,kind", EXAMPLES, ids=[k for _, k in EXAMPLES])
def test_the_detector_names_each_kind(text: str, kind: str) -> None:
    assert kinds(scan(text)) == [kind]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_memories_are_not_secrets(text: str) -> None:
    assert scan(text) == []


@pytest.fixture(params=ERAS)
async def redacting(request: pytest.FixtureRequest, db_path: Path) -> AsyncIterator[tuple[Client, AppContext]]:
    async with running_app(Settings(db_path=db_path, secrets="redact")) as app:
        async for c in held(Client(build_server(app), mode=request.param)):
            yield c, app


@pytest.mark.parametrize("text,kind", EXAMPLES, ids=[k for _, k in EXAMPLES])
async def test_add_memory_refuses_a_secret_naming_its_kind_and_stores_nothing(
    client: Client, app: AppContext, text: str, kind: str
) -> None:
    error = await call_error(client, "add_memory", memory=text)
    assert f"memory: contains {LABELS[kind]}" in error
    assert "nothing was stored" in error
    for finding in scan(text):
        assert text[finding.start : finding.end] not in error  # the secret is never echoed
    assert await app.store.count() == 0
    assert await app.store.user_history("default") == []


async def test_update_and_topics_are_checked_too(client: Client, app: AppContext) -> None:
    added = await call(client, "add_memory", memory="Ava has an AWS account")
    error = await call_error(client, "update_memory", memory_id=added["memory_id"], memory=f"Ava's key is {AWS}")
    assert "memory: contains an AWS access key" in error and AWS not in error
    error = await call_error(client, "update_memory", memory_id=added["memory_id"], topics=["aws", AWS])
    assert "topics[1]: contains an AWS access key" in error
    error = await call_error(client, "add_memory", memory="Ava has a token", topics=[GITHUB[:40]])
    assert "a GitHub token" in error
    assert (await app.store.get("default", added["memory_id"])).memory == "Ava has an AWS account"
    assert len(await app.store.history(added["memory_id"])) == 1


async def test_redact_keeps_the_rest_with_a_marker(redacting: tuple[Client, AppContext]) -> None:
    client, app = redacting
    added = await call(client, "add_memory", memory=f"Ava's AWS key is {AWS} and her card is {CARD}")
    assert added["memory"] == "Ava's AWS key is [REDACTED aws-access-key] and her card is [REDACTED card-number]"
    updated = await call(client, "update_memory", memory_id=added["memory_id"], memory="Ava's wifi password: hunter2")
    assert updated["memory"] == "Ava's wifi password: [REDACTED password]"
    history = json.dumps([e.model_dump() for e in await app.store.history(added["memory_id"])])
    assert AWS not in history and "hunter2" not in history and "4539" not in history


@pytest.mark.parametrize("mode", ERAS)
async def test_allow_stores_as_is(db_path: Path, mode: str) -> None:
    async with running_app(Settings(db_path=db_path, secrets="allow")) as app:
        async with Client(build_server(app), mode=mode) as client:
            added = await call(client, "add_memory", memory=f"Ava's AWS key is {AWS}")
    assert added["memory"] == f"Ava's AWS key is {AWS}"


# -- extraction -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ERAS)
@pytest.mark.parametrize("dry_run", [False, True])
async def test_extraction_drops_an_operation_holding_a_secret_with_the_reason(
    llm_settings: Settings, fake_anthropic: FakeAnthropic, mode: str, dry_run: bool
) -> None:
    fake_anthropic.push(tool_use({"operations": [
        op("add", "Ava works at Acme"),
        op("add", f"Ava's AWS key is {AWS}", reason=f"she shared {AWS}"),
    ]}))
    message = f"I work at Acme. My AWS key is {AWS}, and my wifi password: hunter2"
    async with running_app(llm_settings) as app, Client(build_server(app), mode=mode) as client:
        result = await call(client, "extract_memories", message=message, dry_run=dry_run)
        assert [o["memory"] for o in result["operations"]] == ["Ava works at Acme"]
        [skipped] = result["skipped"]
        assert skipped["op"] == "add"
        assert skipped["memory"] == "Ava's AWS key is [REDACTED aws-access-key]"
        assert "contains an AWS access key" in skipped["reason"] and "MEMOIR_SECRETS=refuse" in skipped["reason"]
        assert AWS not in json.dumps(result)
        if dry_run:
            assert await app.store.count() == 0
            return
        [memory] = (await app.store.list("default")).memories
        assert memory.memory == "Ava works at Acme"
        # The source conversation kept with it (input, history) has its secrets redacted.
        stored = json.dumps([memory.input] + [e.model_dump() for e in await app.store.history(memory.memory_id)])
        assert AWS not in stored and "hunter2" not in stored
        assert "[REDACTED aws-access-key]" in (memory.input or "")


@pytest.mark.parametrize("mode", ERAS)
async def test_extraction_redacts_under_redact(llm_settings: Settings, fake_anthropic: FakeAnthropic, mode: str) -> None:
    fake_anthropic.push(tool_use({"operations": [op("add", f"Ava's card is {CARD}")]}))
    async with running_app(replace(llm_settings, secrets="redact")) as app, Client(build_server(app), mode=mode) as client:
        result = await call(client, "extract_memories", message=f"my card is {CARD}")
    assert result["skipped"] == []
    assert [m["memory"] for m in result["memories"]] == ["Ava's card is [REDACTED card-number]"]


# -- other write paths ----------------------------------------------------------------------


def test_cli_add_refuses_in_one_line(tmp_path: Path) -> None:
    env = {"MEMOIR_DB": str(tmp_path / "cli.db"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "memoir.server.cli", "add", f"my key is {AWS}"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "contains an AWS access key" in done.stderr
    assert AWS not in done.stderr and "Traceback" not in done.stderr


async def test_import_skips_a_memory_line_with_a_secret(app: AppContext) -> None:
    from memoir.memory.transfer import import_lines

    lines = [
        json.dumps({"type": "entity", "name": "Ava", "entityType": "person", "observations": ["likes tea"]}),
        json.dumps({"type": "entity", "name": "Bo", "entityType": "person", "observations": [f"key {AWS}"]}),
    ]
    report = await import_lines(app.store, lines)
    assert report.memories == 1
    [skipped] = report.skipped
    assert skipped.line == 2 and "an AWS access key" in skipped.reason and AWS not in skipped.reason
