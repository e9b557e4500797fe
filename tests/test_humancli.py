"""The CLI as people use it: tables on a real terminal (a pty), JSON through pipes, the new verbs,
`config` and `doctor`, and the rough edges of issue 11 (each a one-line error, not a traceback).

Terminal tests run `memoir` on a pseudo-terminal (`pty.fork`), as a shell would; pipe tests run
it as a subprocess with captured output, as a script would.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from memoir.memory.store import Store
from memoir.server.cli import main
from tests.servers import MEMOIR, clean_env
from tests.test_cli import assert_one_line_error, cli, ok, run

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pty is POSIX")

KEYWORD = {"MEMOIR_EMBEDDINGS": "off"}


def on_terminal(*args: str, env: dict[str, str] | None = None, ctrl_c_when: str | None = None,
                timeout: float = 30) -> tuple[int, str]:
    """Run `memoir ARGS` with stdin, stdout and stderr on a pty; send Ctrl-C once `ctrl_c_when` is shown."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once
        os.execvpe(MEMOIR[0], [*MEMOIR, *args], {**clean_env(env), "COLUMNS": "120", "TERM": "xterm"})
    out = b""
    deadline = time.monotonic() + timeout
    sent = False
    try:
        while time.monotonic() < deadline:
            if ctrl_c_when is not None and not sent and ctrl_c_when.encode() in out:
                os.write(fd, b"\x03")  # the terminal turns it into SIGINT for the foreground process
                sent = True
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                out += data
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode("utf-8", errors="replace")


def seeded(tmp_path: Path) -> tuple[str, dict, dict]:
    db = str(tmp_path / "m.db")
    ski = cli("add", "Ava likes to ski", "--topic", "hobbies", "--db", db)
    denver = cli("add", "Ava lives in Denver", "--db", db)
    return db, ski, denver


def imported(tmp_path: Path, count: int, text: Callable[[int], str]) -> Path:
    """A database of `count` memories of ava, `text(i)` each, made by `memoir import`."""
    db, lines = tmp_path / "m.db", tmp_path / "many.jsonl"
    lines.write_text("".join(
        json.dumps({"type": "memory", "memory_id": f"m{i}", "user_id": "ava", "memory": text(i),
                    "created_at": "2025-01-01T00:00:00Z"}) + "\n"
        for i in range(count)
    ))
    assert run("import", str(lines), "--db", str(db), env=KEYWORD).returncode == 0
    return db


# -- tables on a terminal, JSON otherwise ---------------------------------------------------


def test_list_is_a_table_on_a_terminal_and_json_through_a_pipe(tmp_path: Path) -> None:
    db, ski, denver = seeded(tmp_path)
    code, screen = on_terminal("list", "--db", db, env=KEYWORD)
    assert code == 0, screen
    assert "┏" in screen and "memory" in screen and "topics" in screen and "age" in screen, screen
    assert ski["memory_id"] in screen and "Ava likes to ski" in screen and "hobbies" in screen
    assert "just now" in screen
    assert '"memory_id"' not in screen
    # --json on a terminal, and any pipe, keep today's JSON.
    code, screen = on_terminal("list", "--json", "--db", db, env=KEYWORD)
    assert code == 0 and json.loads(screen)["memories"][0]["memory_id"] == denver["memory_id"]
    assert [m["memory_id"] for m in ok("list", "--db", db)["memories"]] == [denver["memory_id"], ski["memory_id"]]


def test_search_show_log_history_users_tables_on_a_terminal(tmp_path: Path) -> None:
    db, ski, _ = seeded(tmp_path)
    code, screen = on_terminal("search", "ski", "--method", "keyword", "--db", db, env=KEYWORD)
    assert code == 0 and "score" in screen and ski["memory_id"] in screen and "keyword" in screen, screen
    assert "relevance" in screen and re.search(r"\b(0|1)\.\d\d\b", screen), screen  # the 0-1 relevance of the hit
    code, screen = on_terminal("show", ski["memory_id"], "--db", db, env=KEYWORD)
    assert code == 0 and "created_at" in screen and "Ava likes to ski" in screen and "{" not in screen, screen
    code, screen = on_terminal("log", "--db", db, env=KEYWORD)
    assert code == 0 and "event" in screen and "add" in screen and "Ava lives in Denver" in screen, screen
    code, screen = on_terminal("users", "--db", db, env=KEYWORD)
    assert code == 0 and "default" in screen and "2" in screen and "┏" in screen, screen
    code, screen = on_terminal("delete", ski["memory_id"], "--db", db, env=KEYWORD)
    assert code == 0 and f"deleted {ski['memory_id']}" in screen and "memoir undo" in screen, screen
    event = screen.split("memoir undo ")[1].split("`")[0]
    code, screen = on_terminal("undo", event, "--db", db, env=KEYWORD)
    assert code == 0 and f"undid event {event}: restore of {ski['memory_id']}" in screen, screen


# -- new verbs -------------------------------------------------------------------------------


def test_show_update_delete_users_log_and_undo(tmp_path: Path) -> None:
    db, ski, denver = seeded(tmp_path)
    cli("add", "Bob plays chess", "--user", "bob", "--db", db)
    assert cli("show", ski["memory_id"], "--db", db)["memory"] == "Ava likes to ski"
    changed = cli("update", ski["memory_id"], "--memory", "Ava likes to snowboard", "--db", db)
    assert changed["memory"] == "Ava likes to snowboard" and changed["topics"] == ["hobbies"]
    gone = cli("delete", denver["memory_id"], "--db", db)
    assert gone["deleted"] is True
    assert cli("users", "--db", db) == [
        {"user_id": "bob", "memories": 1, "last_change": cli("list", "--user", "bob", "--db", db)["memories"][0]["updated_at"]},
        {"user_id": "default", "memories": 1, "last_change": changed["updated_at"]},
    ]
    log = cli("log", "--db", db)
    assert [e["operation"] for e in log] == ["delete", "update", "add", "add"]  # newest first, Bob's not included
    cli("undo", str(gone["event_id"]), "--db", db)
    assert cli("show", denver["memory_id"], "--db", db)["memory"] == "Ava lives in Denver"
    # Another user's memory is not found when --user names someone else.
    refused = run("show", ski["memory_id"], "--user", "bob", "--db", db)
    assert_one_line_error(refused.returncode, refused.stdout, refused.stderr, ski["memory_id"], "bob")


def test_undo_clear_brings_a_whole_clear_back(tmp_path: Path) -> None:
    db, ski, denver = seeded(tmp_path)

    async def clear() -> None:
        store = await Store.open(db)
        try:
            assert await store.clear("default") == 2
        finally:
            await store.close()

    asyncio.run(clear())
    assert cli("list", "--db", db)["memories"] == []
    last = cli("log", "--db", db, "--limit", "1")[0]
    assert last["operation"] == "clear"
    done = cli("undo", "--clear", str(last["event_id"]), "--db", db)
    assert done["restored"] == 2 and {e["operation"] for e in done["events"]} == {"restore"}
    assert {m["memory_id"] for m in cli("list", "--db", db)["memories"]} == {ski["memory_id"], denver["memory_id"]}
    # Again: both exist, so nothing is restored and the error says why.
    again = run("undo", "--clear", str(last["event_id"]), "--db", db)
    assert_one_line_error(again.returncode, again.stdout, again.stderr, "exists again")
    # A non-clear event is pointed to plain undo.
    add_event = cli("history", ski["memory_id"], "--db", db)[0]["event_id"]
    wrong = run("undo", "--clear", str(add_event), "--db", db)
    assert_one_line_error(wrong.returncode, wrong.stdout, wrong.stderr, "not a clear", f"memoir undo {add_event}")


# -- config and doctor -----------------------------------------------------------------------


def test_config_names_this_memoir_by_its_absolute_path(tmp_path: Path) -> None:
    for host, key in (("claude-desktop", "mcpServers"), ("cursor", "mcpServers"), ("vscode", "servers")):
        done = run("config", host)
        assert done.returncode == 0, done.stderr
        comment, _, body = done.stdout.partition("\n")
        assert comment.startswith("# ")
        entry = json.loads(body)[key]["memoir"]
        assert Path(entry["command"]).is_absolute() and Path(entry["command"]).exists()
        assert entry["args"][-1] == "serve"
    done = run("config", "claude-code", "--db", str(tmp_path / "m.db"))
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("claude mcp add memoir -e MEMOIR_DB=") and line.endswith(" serve")
    command = line.split(" -- ", 1)[1].split()[0]
    assert Path(command).is_absolute() and Path(command).exists()


def test_doctor_passes_a_good_database_and_names_the_fix_for_a_damaged_one(tmp_path: Path) -> None:
    db, _, _ = seeded(tmp_path)
    done = run("doctor", "--db", db, env=KEYWORD)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "integrity ok, 2 memories of 1 users" in done.stdout and "schema" in done.stdout and "LLM" in done.stdout
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"SQLite format 3\x00" + b"\x07" * 8000)
    done = run("doctor", "--db", str(junk), env=KEYWORD)
    assert done.returncode == 1 and "BAD" in done.stdout and "fix:" in done.stdout and "memoir export" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr


def test_doctor_finds_a_keyword_index_out_of_step_and_reindex_rebuilds_it(tmp_path: Path) -> None:
    import sqlite3

    db, _, _ = seeded(tmp_path)
    assert run("search", "ski", "--db", db, env=KEYWORD).returncode == 0  # indexes the user's memories
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM keyword_postings WHERE term = (SELECT min(term) FROM keyword_postings)")
    done = run("doctor", "--db", db, env=KEYWORD)
    assert done.returncode == 1 and "keyword index" in done.stdout and f"memoir reindex --db {db}" in done.stdout, done.stdout
    done = run("reindex", "--db", db, env=KEYWORD)
    assert done.returncode == 0 and "rebuilt the keyword index" in done.stderr, done.stderr
    done = run("doctor", "--db", db, env=KEYWORD)
    assert done.returncode == 0 and "in step with the memories" in done.stdout, done.stdout


def test_doctor_checks_the_embedding_model_hash(tmp_path: Path) -> None:
    db, _, _ = seeded(tmp_path)
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"not the model")
    done = run("doctor", "--db", db, env={"MEMOIR_EMBEDDING_MODEL_PATH": str(fake)})
    assert done.returncode == 1 and "sha256" in done.stdout and "reinstall" in done.stdout, done.stdout


# -- rough edges -----------------------------------------------------------------------------


def test_serve_on_a_terminal_says_what_it_waits_for_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    started = time.monotonic()
    code, screen = on_terminal("serve", "--db", str(tmp_path / "m.db"), env=KEYWORD,
                               ctrl_c_when="Ctrl-C to stop", timeout=40)
    assert "waiting for an MCP host on stdin; Ctrl-C to stop" in screen, screen
    assert code == 130, screen
    assert "Traceback" not in screen
    assert time.monotonic() - started < 30


def test_export_into_a_closed_pipe_is_quiet_and_succeeds(tmp_path: Path) -> None:
    db = imported(tmp_path, 3000, lambda i: f"fact number {i} " + "x" * 100)
    # `memoir export | head -1`
    done = subprocess.run(
        f"{' '.join(MEMOIR)} export --db {db} | head -1; exit ${{PIPESTATUS[0]}}",
        shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=60, env=clean_env(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert json.loads(done.stdout)["type"] == "memoir-export"


def test_a_failed_export_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db, _, _ = seeded(tmp_path)
    from memoir.memory import transfer

    async def failing(*args, **kwargs):
        yield "{}"
        raise OSError("disk full")

    monkeypatch.setattr(transfer, "export_lines", failing)
    target = tmp_path / "out.jsonl"
    target.write_text("the previous export\n")
    assert main(["export", "-o", str(target), "--db", db]) == 1
    assert target.read_text() == "the previous export\n"
    assert list(tmp_path.glob("*.partial")) == []


def test_export_to_a_device_writes_to_it_and_never_replaces_it(tmp_path: Path) -> None:
    db, _, _ = seeded(tmp_path)
    done = run("export", "-o", "/dev/stdout", "--db", db)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[0])["type"] == "memoir-export"
    assert len(done.stdout.splitlines()) == 3  # the header and both memories, written through the pipe


def test_a_read_only_location_is_one_line_without_event_loop_noise(tmp_path: Path) -> None:
    if not Path("/proc/self").exists():
        pytest.skip("needs /proc (a directory no one can create files in)")
    done = run("add", "hello", "--db", "/proc/memoir-test.db", env=KEYWORD)
    assert_one_line_error(done.returncode, done.stdout, done.stderr, "/proc/memoir-test.db", "--db")
    assert "Event loop is closed" not in done.stderr


def test_read_only_commands_refuse_a_missing_database(tmp_path: Path) -> None:
    typo = tmp_path / "tpyo" / "memoir.db"
    for argv in (["list"], ["search", "ski"], ["show", "abc"], ["history", "abc"], ["log"], ["users"], ["export"],
                 ["backup", str(tmp_path / "b.db")]):
        done = run(*argv, "--db", str(typo))
        assert_one_line_error(done.returncode, done.stdout, done.stderr, f"no database at {typo}", "--db")
    assert not typo.parent.exists()


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["list", "--limit", "0"], {}, "--limit"),
        (["list"], {"MEMOIR_LOG_LEVEL": "loud"}, "MEMOIR_LOG_LEVEL"),
        (["list", "--user", "bad user"], {}, "--user"),
        (["backup", "nodir/x.db"], {}, "no directory nodir"),
        (["serve", "--transport", "http"], {"MEMOIR_PORT": "abc"}, "MEMOIR_PORT"),
    ],
    ids=["list-limit-0", "log-level", "bad-user-names-flag", "backup-blames-destination", "port-only-for-serve"],
)
def test_rough_edges_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv, env, expected
) -> None:
    db, _, _ = seeded(tmp_path)
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main([*argv, "--db", db])
    out, err = capsys.readouterr()
    assert_one_line_error(code, out, err, expected)
    if "--user" in argv:
        assert "MEMOIR_USER_ID" not in err


def test_a_bad_port_variable_does_not_fail_commands_that_do_not_listen(tmp_path: Path) -> None:
    db, ski, _ = seeded(tmp_path)
    assert ok("show", ski["memory_id"], "--db", db, env={"MEMOIR_PORT": "abc"})["memory_id"] == ski["memory_id"]


def test_importing_a_database_file_says_what_it_is(tmp_path: Path) -> None:
    db, _, _ = seeded(tmp_path)
    done = run("import", db, "--db", str(tmp_path / "other.db"))
    assert_one_line_error(done.returncode, done.stdout, done.stderr, "is a SQLite database", "--db")
    binary = tmp_path / "photo.jpg"
    binary.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 20)
    done = run("import", str(binary), "--db", str(tmp_path / "other.db"))
    assert_one_line_error(done.returncode, done.stdout, done.stderr, "not UTF-8")


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*MEMOIR, "serve", "--transport", "http", "--port", str(port), "--db", str(tmp_path / "m.db")],
            capture_output=True, text=True, timeout=60, env=clean_env(KEYWORD), stdin=subprocess.DEVNULL,
        )
    assert_one_line_error(done.returncode, done.stdout, done.stderr, f"port {port}", "in use", "--port")


def test_serve_refuses_a_damaged_database_naming_file_and_fix(tmp_path: Path) -> None:
    db = imported(tmp_path, 500, lambda i: f"fact {i} " + "y" * 300)
    data = bytearray(db.read_bytes())
    page = 4096
    for start in range(page * (len(data) // page // 2), len(data) - page, page * 3):  # scribble over later pages
        data[start + 8:start + 200] = b"\xee" * 192
    db.write_bytes(bytes(data))
    done = subprocess.run(
        [*MEMOIR, "serve", "--db", str(db)], capture_output=True, text=True, timeout=60,
        env=clean_env(KEYWORD), stdin=subprocess.DEVNULL,
    )
    assert_one_line_error(done.returncode, done.stdout, done.stderr, str(db), "damaged", "memoir backup", "memoir export")


def test_help_names_hybrid_the_methods_the_examples_and_the_database(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    out = capsys.readouterr().out
    assert "default: hybrid" in out and "{hybrid,keyword,semantic,agentic,last_n,first_n}" in out
    assert "keyword with a query" not in out
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "database: " in out and "memoir.db" in out


def test_stopping_sse_with_a_client_connected_logs_no_asgi_error(tmp_path: Path) -> None:
    import http.client
    import socket

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    server = subprocess.Popen(
        [*MEMOIR, "serve", "--transport", "sse", "--port", str(port), "--db", str(tmp_path / "m.db")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=clean_env(KEYWORD),
    )
    try:
        assert b"serving sse" in server.stderr.readline()
        for _ in range(100):  # uvicorn takes the signals over once it is listening
            try:
                stream = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                stream.request("GET", "/sse")
                response = stream.getresponse()
                break
            except ConnectionRefusedError:
                time.sleep(0.1)
        assert response.status == 200
        assert any(response.fp.readline().startswith(b"event: endpoint") for _ in range(5))
        time.sleep(0.5)
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0
        err = server.stderr.read().decode()
        assert "ASGI callable returned without completing response" not in err, err
        assert "Traceback" not in err
        stream.close()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        server.stderr.close()


def test_import_embeds_with_a_progress_bar_so_no_search_pays(tmp_path: Path) -> None:
    """A bulk import used to leave every vector to the next search (20,000 memories: 36 s)."""
    import sqlite3

    db = tmp_path / "m.db"
    lines = tmp_path / "many.jsonl"
    lines.write_text("".join(
        json.dumps({"type": "memory", "memory_id": f"m{i}", "user_id": "ava", "memory": f"Ava fact {i}",
                    "created_at": "2025-01-01T00:00:00Z"}) + "\n"
        for i in range(200)
    ))
    hashing = {"MEMOIR_EMBEDDINGS": "hashing"}
    code, screen = on_terminal("import", str(lines), "--db", str(db), env=hashing)
    assert code == 0, screen
    assert "embedding" in screen and "200/200" in screen and "embedded 200 memories" in screen, screen
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 200
    done = run("reindex", "--db", str(db), env=hashing)
    assert done.returncode == 0 and "already has its vector" in done.stderr, done.stderr
    # Memories written with embeddings off get theirs from `memoir reindex`.
    assert run("add", "Ava likes tea", "--db", str(db), env=KEYWORD).returncode == 0
    done = run("reindex", env={**hashing, "MEMOIR_DB": str(db)})
    assert done.returncode == 0 and "embedded 1 memories" in done.stderr, done.stderr
    done = run("reindex", "--db", str(db), env=KEYWORD)  # the keyword index only, and says why
    assert done.returncode == 0 and "in step" in done.stderr and "MEMOIR_EMBEDDINGS=off" in done.stderr, done.stderr


def test_ctrl_c_on_a_busy_stdio_server_is_quiet(tmp_path: Path) -> None:
    """SIGINT (Ctrl-C in the terminal a host runs in) while a session is open and a call is sent: exit 130, no traceback."""
    server = subprocess.Popen(
        [*MEMOIR, "serve", "--db", str(tmp_path / "m.db")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=clean_env(KEYWORD),
    )
    try:
        def send(message: dict) -> None:
            server.stdin.write((json.dumps(message) + "\n").encode())
            server.stdin.flush()

        send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        assert json.loads(server.stdout.readline())["id"] == 1
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        for i in range(20):
            send({"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call",
                  "params": {"name": "add_memory", "arguments": {"memory": f"Ava fact {i}"}}})
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 130
        err = server.stderr.read().decode()
        assert "Traceback" not in err, err
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        for stream in (server.stdin, server.stdout, server.stderr):
            stream.close()


async def test_a_tool_on_a_damaged_database_names_the_file_and_the_fix() -> None:
    import sqlite3
    from types import SimpleNamespace

    from mcp.server.mcpserver.exceptions import ToolError

    from memoir.tools.context import tool_errors

    @tool_errors
    async def list_memories(ctx) -> None:
        raise sqlite3.DatabaseError("database disk image is malformed")

    ctx = SimpleNamespace(request_context=SimpleNamespace(lifespan_context=SimpleNamespace(store=SimpleNamespace(path="/x/m.db"))))
    with pytest.raises(ToolError) as raised:
        await list_memories(ctx=ctx)
    assert "/x/m.db" in str(raised.value) and "malformed" in str(raised.value) and "memoir backup" in str(raised.value)


def test_rich_is_not_imported_when_output_is_a_pipe(tmp_path: Path) -> None:
    """Hooks and scripts pipe the CLI: they must not pay for rendering tables."""
    db, _, _ = seeded(tmp_path)
    code = (
        "import sys; from memoir.server.cli import main; "
        f"rc = main(['list', '--db', {db!r}]); "
        "print('RICH' if 'rich' in sys.modules else 'NO-RICH', file=sys.stderr); sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=clean_env(KEYWORD))
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().endswith("NO-RICH"), done.stderr
