"""`memoir hook ...` and `memoir extract`, as a host runs them: real processes fed the host's JSON.

The model is tests/fake_anthropic.py (a local Messages API server) reached through
ANTHROPIC_BASE_URL, also by the detached extraction worker that `hook stop` starts. Embeddings
are the hashing stand-in except where the real model is the point.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memoir.memory.store import Change, Store
from memoir.server.hooks import parse_transcript
from tests.fake_anthropic import FakeAnthropic, delay, error, fake_anthropic, tool_use  # noqa: F401
from tests.servers import clean_env

ENTRY = [sys.executable, "-m", "memoir.server.entry"]


def env_for(db: Path, log: Path, **extra: str) -> dict[str, str]:
    env = clean_env({"MEMOIR_DB": str(db), "MEMOIR_HOOK_LOG": str(log), "MEMOIR_EMBEDDINGS": "hashing",
                     "MEMOIR_HOOK_WARM": "off", **extra})
    env.pop("ANTHROPIC_API_KEY", None)
    env.pop("ANTHROPIC_BASE_URL", None)
    env.update({k: v for k, v in extra.items()})
    return env


def a_session(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A database, a hook log and a Claude Code transcript (transcript_lines) for one session."""
    transcript = tmp_path / "t.jsonl"
    transcript.write_text("\n".join(transcript_lines()) + "\n")
    return tmp_path / "m.db", tmp_path / "hooks.log", transcript


def hook(event: str, payload: object, env: dict[str, str]) -> subprocess.CompletedProcess:
    stdin = payload if isinstance(payload, str) else json.dumps(payload)
    return subprocess.run([*ENTRY, "hook", event], input=stdin, capture_output=True, text=True, env=env, timeout=60)


def seed(db: Path, user: str, texts: list[str]) -> list[str]:
    async def go() -> list[str]:
        store = await Store.open(db)
        try:
            return [(await store.add(user, t, [], change=Change(actor="cli"))).memory_id for t in texts]
        finally:
            await store.close()

    return asyncio.run(go())


def entry(kind: str, content: object, **extra: object) -> str:
    return json.dumps({"type": kind, "message": {"role": kind, "content": content}, "sessionId": "s", **extra})


def transcript_lines() -> list[str]:
    """A Claude Code transcript: text, tool calls and results, a meta entry, a summary."""
    return [
        json.dumps({"type": "summary", "summary": "Setting up a project"}),
        entry("user", "Caveat: local command output", isMeta=True),
        entry("user", "I'm Ava, I live in Lisbon and I write Rust at work. Please set up the repo."),
        entry("assistant", [{"type": "thinking", "thinking": "secret plan"},
                            {"type": "text", "text": "Sure, Ava. Creating the repo."},
                            {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "git init"}}]),
        entry("user", [{"type": "tool_result", "tool_use_id": "t1", "content": "Initialized empty Git repository"}]),
        entry("assistant", [{"type": "text", "text": "Done."}]),
    ]


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def rows(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise


def add_op(memory: str) -> dict:
    return {"op": "add", "memory": memory, "topics": ["about"], "reason": "the user said so"}


# -- transcripts ---------------------------------------------------------------------------------


def test_a_claude_code_transcript_keeps_only_the_text_of_user_and_assistant_messages() -> None:
    messages = parse_transcript("\n".join(transcript_lines()) + "\n")
    assert messages == [
        ("user", "I'm Ava, I live in Lisbon and I write Rust at work. Please set up the repo."),
        ("assistant", "Sure, Ava. Creating the repo."),
        ("assistant", "Done."),
    ]
    assert parse_transcript('[{"role": "user", "content": "hi"}]') == [("user", "hi")]


# -- user-prompt and session-start ------------------------------------------------------------------


def test_user_prompt_prints_the_relevant_memories_and_counts_them(tmp_path: Path) -> None:
    db, log = tmp_path / "m.db", tmp_path / "hooks.log"
    ids = seed(db, "ava", ["Ava is allergic to peanuts", "Ava lives in Lisbon", "Ava plays the cello"])
    # The real model: the relevance floor is calibrated on its cosines, not the hashing stand-in's.
    env = env_for(db, log, MEMOIR_USER_ID="ava", MEMOIR_EMBEDDINGS="on")
    done = hook("user-prompt", {"session_id": "s", "hook_event_name": "UserPromptSubmit", "cwd": str(tmp_path),
                                "transcript_path": str(tmp_path / "t.jsonl"), "prompt": "Any peanuts allergy I should know about?"}, env)
    assert done.returncode == 0 and done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0] == "<memoir-memories>" and lines[-1] == "</memoir-memories>"
    assert lines[2] == "- Ava is allergic to peanuts"
    assert rows(db, "SELECT memory_id, recalls FROM hook_recalls WHERE memory_id = ?", (ids[0],)) == [(ids[0], 1)]
    # Another user's memories are never shown; a prompt of stop words finds nothing.
    assert hook("user-prompt", {"prompt": "peanuts"}, env_for(db, log, MEMOIR_USER_ID="bob")).stdout == ""
    assert hook("user-prompt", {"prompt": "and what is it?"}, env).stdout == ""
    # Nothing the memories are about: under the relevance floor, so nothing is printed.
    assert hook("user-prompt", {"prompt": "How do I rebase a git branch onto main?"}, env).stdout == ""


def test_user_prompt_with_the_real_embedding_model(tmp_path: Path) -> None:
    db, log = tmp_path / "m.db", tmp_path / "hooks.log"
    seed(db, "default", ["The user's dog is called Biscuit", "The user works as a pharmacist"])
    done = hook("user-prompt", {"prompt": "what's my puppy's name?"}, env_for(db, log, MEMOIR_EMBEDDINGS="on"))
    assert done.returncode == 0, log.read_text() if log.exists() else ""
    assert done.stdout.splitlines()[2] == "- The user's dog is called Biscuit"  # no shared word: the vectors found it


def test_session_start_prints_the_most_recalled_and_the_newest_within_the_budget(tmp_path: Path) -> None:
    db, log = tmp_path / "m.db", tmp_path / "hooks.log"
    texts = [f"Ava's note number {i} about her garden" for i in range(40)]
    seed(db, "default", ["Ava is allergic to peanuts", *texts])
    env = env_for(db, log)
    assert "peanuts" in hook("user-prompt", {"prompt": "peanuts allergy"}, env).stdout
    done = hook("session-start", {"session_id": "s", "hook_event_name": "SessionStart", "source": "startup"},
                env_for(db, log, MEMOIR_HOOK_TOKENS="40"))
    assert done.returncode == 0 and done.stderr == ""
    shown = [line[2:] for line in done.stdout.splitlines() if line.startswith("- ")]
    assert shown[0] == "Ava is allergic to peanuts"  # the most recalled, though the oldest
    assert shown[1] == texts[-1]  # then the newest
    assert sum(-(-len(s) // 4) for s in shown) <= 40 and len(shown) < 41
    # Nothing remembered: nothing printed.
    assert hook("session-start", {"session_id": "s"}, env_for(db, log, MEMOIR_USER_ID="nobody")).stdout == ""


def test_after_a_cold_prompt_a_warm_recall_server_answers_the_same_and_goes_away_when_idle(tmp_path: Path) -> None:
    db, log = tmp_path / "m.db", tmp_path / "hooks.log"
    ids = seed(db, "default", ["Ava is allergic to peanuts", "Ava lives in Lisbon"])
    env = env_for(db, log, MEMOIR_HOOK_WARM="on", MEMOIR_HOOK_WARM_IDLE="3", MEMOIR_HOOK_TRACE="1")
    socket_path = tmp_path / "m.db.hooks" / "recall.sock"
    cold = hook("user-prompt", {"prompt": "peanuts allergy?"}, env)
    assert cold.returncode == 0 and "- Ava is allergic to peanuts" in cold.stdout
    wait_for(lambda: socket_path.exists(), timeout=30)
    assert oct(socket_path.parent.stat().st_mode & 0o777) == "0o700"
    warm = hook("user-prompt", {"prompt": "peanuts allergy?"}, env)
    assert warm.returncode == 0 and warm.stdout == cold.stdout
    answered = [line.split("answered ")[1] for line in log.read_text().splitlines() if "answered" in line]
    assert answered == ["cold", "warm"]
    assert rows(db, "SELECT recalls FROM hook_recalls WHERE memory_id = ?", (ids[0],)) == [(2,)]
    # A hook with other settings is not answered by it (and it makes way).
    other = hook("user-prompt", {"prompt": "peanuts allergy?"}, {**env, "MEMOIR_SECRETS": "allow"})
    assert other.returncode == 0 and "peanuts" in other.stdout
    assert [line.split("answered ")[1] for line in log.read_text().splitlines() if "answered" in line][-1] == "cold"
    wait_for(lambda: not socket_path.exists(), timeout=30)  # idle: gone


@pytest.mark.parametrize("event", ["session-start", "user-prompt", "stop"])
def test_a_broken_database_or_bad_input_prints_nothing_exits_0_and_logs_one_line(tmp_path: Path, event: str) -> None:
    db, log = tmp_path / "m.db", tmp_path / "hooks.log"
    db.write_bytes(b"this is not a database" * 100)
    payload = {"session_id": "s", "prompt": "peanuts", "transcript_path": str(tmp_path / "missing.jsonl")}
    done = hook(event, payload, env_for(db, log, ANTHROPIC_API_KEY="k"))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    logged = log.read_text().splitlines()
    assert len(logged) == 1 and event in logged[0], logged
    assert ("not a database" in logged[0]) if event != "stop" else ("does not exist" in logged[0])
    done = hook(event, "{not json", env_for(db, log))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert "JSON" in log.read_text().splitlines()[-1]


def test_stop_without_a_model_does_nothing_and_says_so_in_the_log(tmp_path: Path) -> None:
    db, log, transcript = a_session(tmp_path)
    done = hook("stop", {"session_id": "s1", "transcript_path": str(transcript)}, env_for(db, log))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert "ANTHROPIC_API_KEY" in log.read_text()
    assert not db.exists()


# -- stop: background extraction ---------------------------------------------------------------------


def test_stop_returns_at_once_and_the_extraction_lands_with_the_session_as_source(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    db, log, transcript = a_session(tmp_path)
    env = env_for(db, log, ANTHROPIC_API_KEY="test", ANTHROPIC_BASE_URL=fake_anthropic.url)
    fake_anthropic.push(delay(2.0, then=tool_use({"operations": [add_op("Ava lives in Lisbon")]})))
    started = time.monotonic()
    done = hook("stop", {"session_id": "sess-1", "transcript_path": str(transcript), "hook_event_name": "Stop",
                         "stop_hook_active": False}, env)
    returned = time.monotonic() - started
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert returned < 2.0  # the model answers after 2 s: the hook did not wait for it
    wait_for(lambda: rows(db, "SELECT memory FROM memories") == [("Ava lives in Lisbon",)])
    events = rows(db, "SELECT operation, actor, source FROM history")
    assert events == [("add", "extraction", "claude-code session sess-1")]
    prompt = fake_anthropic.requests[0].body["messages"][0]["content"]
    assert "I live in Lisbon" in prompt and "Creating the repo" in prompt
    assert "git init" not in prompt and "secret plan" not in prompt and "Caveat" not in prompt
    wait_for(lambda: rows(db, "SELECT lines FROM hook_sessions WHERE session_id = 'sess-1'") == [(6,)])

    # The next turn: only the lines after the cursor go to the model.
    with transcript.open("a") as out:
        out.write(entry("user", "Also, I have a cat called Mochi.") + "\n")
        out.write(entry("assistant", "Noted!") + "\n")
    fake_anthropic.push(tool_use({"operations": [add_op("Ava has a cat called Mochi")]}))
    assert hook("stop", {"session_id": "sess-1", "transcript_path": str(transcript)}, env).returncode == 0
    wait_for(lambda: len(rows(db, "SELECT memory FROM memories")) == 2)
    second = fake_anthropic.requests[1].body["messages"][0]["content"]
    assert "Mochi" in second and "I live in Lisbon" not in second.split("<conversation>")[1]
    wait_for(lambda: rows(db, "SELECT lines FROM hook_sessions WHERE session_id = 'sess-1'") == [(8,)])
    assert fake_anthropic.problems == []


def test_one_extraction_per_session_at_a_time(tmp_path: Path, fake_anthropic: FakeAnthropic) -> None:
    db, log, transcript = a_session(tmp_path)
    env = env_for(db, log, ANTHROPIC_API_KEY="test", ANTHROPIC_BASE_URL=fake_anthropic.url)
    fake_anthropic.push(delay(1.5, then=tool_use({"operations": [add_op("Ava lives in Lisbon")]})))
    for _ in range(3):  # the host fires Stop again while the first extraction still waits on the model
        assert hook("stop", {"session_id": "s", "transcript_path": str(transcript)}, env).returncode == 0
    wait_for(lambda: log.exists() and log.read_text().count("done,") == 3)
    assert len(fake_anthropic.requests) == 1  # the others waited for the lock, then found nothing new
    assert rows(db, "SELECT count(*) FROM memories") == [(1,)]


def test_a_failed_extraction_keeps_the_cursor_and_the_next_stop_redoes_it(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    db, log, transcript = a_session(tmp_path)
    env = env_for(db, log, ANTHROPIC_API_KEY="test", ANTHROPIC_BASE_URL=fake_anthropic.url)
    fake_anthropic.push(error(400, "invalid_request_error", "boom"))
    hook("stop", {"session_id": "s", "transcript_path": str(transcript)}, env)
    wait_for(lambda: log.exists() and "extraction failed" in log.read_text())
    assert rows(db, "SELECT lines FROM hook_sessions") == []
    fake_anthropic.push(tool_use({"operations": [add_op("Ava lives in Lisbon")]}))
    hook("stop", {"session_id": "s", "transcript_path": str(transcript)}, env)
    wait_for(lambda: rows(db, "SELECT memory FROM memories") == [("Ava lives in Lisbon",)])
    assert "I live in Lisbon" in fake_anthropic.requests[1].body["messages"][0]["content"]


# -- memoir extract ----------------------------------------------------------------------------------


def test_extract_from_a_transcript_file_and_from_stdin(tmp_path: Path, fake_anthropic: FakeAnthropic) -> None:
    db, log, transcript = a_session(tmp_path)
    env = env_for(db, log, ANTHROPIC_API_KEY="test", ANTHROPIC_BASE_URL=fake_anthropic.url)
    fake_anthropic.push(tool_use({"operations": [add_op("Ava writes Rust at work")]}))
    done = subprocess.run([*ENTRY, "extract", "--transcript", str(transcript), "--dry-run"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["dry_run"] is True and result["operations"][0]["memory"] == "Ava writes Rust at work"
    assert rows(db, "SELECT count(*) FROM memories") == [(0,)]
    fake_anthropic.push(tool_use({"operations": [add_op("Ava likes tea")]}))
    done = subprocess.run([*ENTRY, "extract", "-", "--user", "ava"], input='[{"role": "user", "content": "I like tea"}]',
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert rows(db, "SELECT user_id, memory FROM memories") == [("ava", "Ava likes tea")]
    assert "user: I like tea" in fake_anthropic.requests[1].body["messages"][0]["content"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--message", "I like tea"], "ANTHROPIC_API_KEY"),
        ([], "exactly one of"),
        (["--transcript", "/no/such/file.jsonl"], "cannot read the transcript"),
    ],
)
def test_extract_errors_are_one_line_with_the_fix(tmp_path: Path, args: list[str], expected: str) -> None:
    done = subprocess.run([*ENTRY, "extract", *args], capture_output=True, text=True,
                          env=env_for(tmp_path / "m.db", tmp_path / "l.log"), timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("memoir: ") and expected in lines[0], done.stderr


# -- memoir config claude-code --hooks -----------------------------------------------------------------


def test_config_prints_hooks_that_run(tmp_path: Path) -> None:
    db, log = tmp_path / "m.db", tmp_path / "hooks.log"
    seed(db, "default", ["Ava is allergic to peanuts"])
    env = env_for(db, log)
    done = subprocess.run([*ENTRY, "config", "claude-code", "--hooks"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    hooks = json.loads(done.stdout)["hooks"]
    assert set(hooks) == {"SessionStart", "UserPromptSubmit", "Stop"}
    command = hooks["UserPromptSubmit"][0]["hooks"][0]["command"]
    assert Path(shlex.split(command)[0]).is_absolute() and str(db) in command
    ran = subprocess.run(command, shell=True, input=json.dumps({"prompt": "peanuts?"}), capture_output=True,
                         text=True, env=env, timeout=60)
    assert ran.returncode == 0 and "- Ava is allergic to peanuts" in ran.stdout


def test_help_lists_extract_and_hook(capsys: pytest.CaptureFixture[str]) -> None:
    from memoir.server.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "\n    extract " in out and "\n    hook " in out
