"""The `memoir` command line: version, help, the add/search/list/history/undo round trip, and bad input.

The round trip and a few errors run the real command as a subprocess (the console script next to
sys.executable, or `python -m memoir.server.cli`). Every invocation costs a Python start-up, so the
long table of bad inputs calls `main()` in-process, which goes through the same code.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client

import memoir
from memoir.server.cli import main, run_loop
from tests.servers import MEMOIR, clean_env, stdio_params

CONSOLE_SCRIPT = Path(sys.executable).with_name("memoir")


def run(*args: str, env: dict[str, str] | None = None, command: list[str] = MEMOIR) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=60, env=clean_env(env), stdin=subprocess.DEVNULL
    )


def ok(*args: str, **kwargs) -> object:
    """Run a command that must succeed; return its JSON output."""
    done = run(*args, **kwargs)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout)


def assert_one_line_error(returncode: int, stdout: str, stderr: str, *expected: str) -> None:
    assert returncode == 1, (stdout, stderr)
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("memoir: "), stderr
    for part in expected:
        assert part in lines[0], lines[0]
    assert stdout == ""


def test_version_from_the_console_script() -> None:
    assert CONSOLE_SCRIPT.exists(), f"the `memoir` console script is not installed next to {sys.executable}"
    done = run("--version", command=[str(CONSOLE_SCRIPT)])
    assert done.returncode == 0
    assert done.stdout == f"memoir {memoir.__version__}\n"


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "add", "search", "list", "history", "undo"):
        assert f"\n    {command} " in out, out
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "--transport" in out and "{stdio,sse,http}" in out and "--db" in out


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: memoir" in capsys.readouterr().out


def cli(*argv: str) -> object:
    """`memoir ARGV` in-process (same code as the command, no start-up cost); returns its JSON output."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(argv)) == 0
    return json.loads(out.getvalue())


def test_add_search_list_history_undo_round_trip(tmp_path: Path) -> None:
    """Each command runs once as a real process (about 1.5 s each: Python start-up and imports);
    the checks in between run in-process."""
    db = str(tmp_path / "m.db")
    ski = ok("add", "Ava likes to ski", "--topic", "Hobbies", "--topic", "sports", "--db", db)
    assert ski["memory"] == "Ava likes to ski" and ski["topics"] == ["hobbies", "sports"] and ski["user_id"] == "default"
    # MEMOIR_DB and MEMOIR_USER_ID work like --db and --user.
    denver = ok("add", "Ava lives in Denver", env={"MEMOIR_DB": db, "MEMOIR_USER_ID": "ava"})
    assert denver["user_id"] == "ava"
    cli("add", "Ava's brother Bob likes to ski too", "--user", "bob", "--db", db)

    found = ok("search", "skiing", "--method", "keyword", "--db", db)
    assert found["retrieval_method"] == "keyword"
    assert [r["memory_id"] for r in found["results"]] == [ski["memory_id"]]  # not Bob's
    more = cli("add", "Ava prefers window seats", "--db", db)
    listed = ok("list", "--db", db, "--limit", "1")
    assert [m["memory_id"] for m in listed["memories"]] == [more["memory_id"]]  # newest first
    rest = cli("list", "--db", db, "--cursor", listed["next_cursor"])
    assert [m["memory_id"] for m in rest["memories"]] == [ski["memory_id"]] and rest["next_cursor"] is None

    (added,) = ok("history", ski["memory_id"], "--db", db)
    assert added["operation"] == "add" and added["actor"] == "cli" and added["after"]["memory"] == "Ava likes to ski"

    # Undoing the add deletes the memory ...
    removal = ok("undo", str(added["event_id"]), "--db", db)
    assert removal["operation"] == "delete" and removal["undoes"] == added["event_id"]
    assert cli("search", "ski", "--method", "keyword", "--db", db)["results"] == []
    # ... and undoing that delete brings it back, same id, same text and topics.
    restored = cli("undo", str(removal["event_id"]), "--db", db)
    assert restored["operation"] == "restore"
    back = cli("search", "ski", "--method", "keyword", "--db", db)["results"]
    assert [(r["memory_id"], r["memory"], r["topics"]) for r in back] == [
        (ski["memory_id"], "Ava likes to ski", ["hobbies", "sports"])
    ]
    history = cli("history", ski["memory_id"], "--db", db)
    assert [e["operation"] for e in history] == ["add", "delete", "restore"]


async def test_cli_undoes_a_delete_made_over_mcp(tmp_path: Path) -> None:
    """The CLI and a stdio server share the database: a tool's delete shows in `memoir history` and can be undone."""
    db = tmp_path / "m.db"
    async with Client(stdio_params(db), mode="legacy") as client:
        added = (await client.call_tool("add_memory", {"memory": "Ava is allergic to peanuts"})).structured_content
        deleted = await client.call_tool("delete_memory", {"memory_id": added["memory_id"]})
        assert not deleted.is_error
        events = await asyncio.to_thread(cli, "history", added["memory_id"], "--db", str(db))
        assert [(e["operation"], e["actor"]) for e in events] == [("add", "tool"), ("delete", "tool")]
        # The server is still running: the CLI writes next to it (WAL, busy timeout) ...
        await asyncio.to_thread(ok, "undo", str(events[-1]["event_id"]), "--db", str(db))
        # ... and the server sees the restored memory at once.
        found = await client.call_tool("search_memories", {"query": "peanut allergy", "retrieval_method": "keyword", "min_relevance": 0})
        assert [r["memory_id"] for r in found.structured_content["results"]] == [added["memory_id"]]


def test_bad_input_over_a_real_process(tmp_path: Path) -> None:
    done = run("add", "   ", "--db", str(tmp_path / "m.db"))
    assert_one_line_error(done.returncode, done.stdout, done.stderr, "memory")
    # Not a database: used to print a traceback and then hang on aiosqlite's thread.
    junk = tmp_path / "junk.db"
    junk.write_text("this is not a database\n" * 100)
    done = run("list", "--db", str(junk))
    assert_one_line_error(done.returncode, done.stdout, done.stderr, str(junk), "not a database")


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["add", "   "], {}, "memory"),
        (["add", "x" * 2001], {}, "2,000"),
        (["add", "Ava likes to ski", *[a for i in range(17) for a in ("--topic", f"t{i}")]], {}, "topics"),
        (["search", "ski", "--limit", "0"], {}, "limit"),
        (["search", "ski", "--limit", "101"], {}, "limit"),
        (["undo", "999"], {}, "999"),
        (["history", "nope"], {}, "nope"),
        (["list", "--user", "bad user!"], {}, "letters, digits"),
        (["list", "--cursor", "garbage"], {}, "cursor"),
        (["serve", "--transport", "sse"], {"MEMOIR_PORT": "abc"}, "abc"),
        (["list"], {"MEMOIR_SYNCHRONOUS": "bogus"}, "MEMOIR_SYNCHRONOUS"),
        (["list"], {"MEMOIR_USER_ID": "no spaces allowed"}, "MEMOIR_USER_ID"),
        (["serve", "--port", "99999"], {}, "99999"),
    ],
    ids=[
        "blank-memory", "memory-too-long", "too-many-topics", "limit-0", "limit-101", "unknown-event",
        "unknown-memory", "bad-user", "bad-cursor", "bad-MEMOIR_PORT", "bad-MEMOIR_SYNCHRONOUS",
        "bad-MEMOIR_USER_ID", "bad-port",
    ],
)
def test_bad_input_is_exit_1_and_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv, env, expected
) -> None:
    db = tmp_path / "m.db"
    db.touch()  # an empty file is an empty database (read-only commands refuse a missing one)
    for name in [n for n in __import__("os").environ if n.startswith("MEMOIR_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main([*argv, "--db", str(db)])
    out, err = capsys.readouterr()
    assert_one_line_error(code, out, err, expected)
    # Nothing was written by a failed command.
    monkeypatch.delenv("MEMOIR_PORT", raising=False)
    monkeypatch.delenv("MEMOIR_SYNCHRONOUS", raising=False)
    monkeypatch.delenv("MEMOIR_USER_ID", raising=False)
    if db.exists():
        assert main(["list", "--db", str(db)]) == 0
        assert json.loads(capsys.readouterr().out)["memories"] == []


def test_usage_errors_are_argparse_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Malformed command lines (not bad values) get argparse's usage line and exit code 2."""
    with pytest.raises(SystemExit) as exited:
        main(["undo", "abc"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid int value: 'abc'" in err and "Traceback" not in err


def test_purge_forgets_a_user_with_history_only_when_confirmed(tmp_path: Path) -> None:
    db = str(tmp_path / "purge.db")
    ava = ok("add", "Ava likes to ski", "--db", db, "--user", "ava")
    ok("add", "Bob likes chess", "--db", db, "--user", "bob")
    refused = run("purge", "--db", db, "--user", "ava")
    assert_one_line_error(refused.returncode, refused.stdout, refused.stderr, "--yes")
    assert ok("purge", "--db", db, "--user", "ava", "--yes") == {"user_id": "ava", "purged_memories": 1}
    assert run("history", ava["memory_id"], "--db", db).returncode == 1
    assert len(ok("list", "--db", db, "--user", "bob")["memories"]) == 1


def test_semantic_search_from_the_command_line(tmp_path: Path) -> None:
    db = str(tmp_path / "search.db")
    early = ok("add", "Ava wakes up at 5 am every day", "--db", db)
    ok("add", "Ava lives in Denver", "--db", db)
    found = ok("search", "is she a morning person", "--db", db, "--limit", "1")
    assert found["retrieval_method"] == "hybrid"
    assert [r["memory_id"] for r in found["results"]] == [early["memory_id"]]
    refused = run("search", "cook", "--method", "agentic", "--db", db)
    assert_one_line_error(refused.returncode, refused.stdout, refused.stderr, "ANTHROPIC_API_KEY")


def test_the_cli_runs_its_event_loop_on_uvloop_where_it_is_installed() -> None:
    uvloop = pytest.importorskip("uvloop")

    import sniffio

    async def on_uvloop() -> int:
        assert sniffio.current_async_library() == "asyncio"
        return int(isinstance(asyncio.get_running_loop(), uvloop.Loop))

    assert run_loop(on_uvloop()) == 1
    assert sniffio.thread_local.name is None  # declared for the loop's lifetime only
