"""The `memoir` command: run the server, and work with the memory from a shell.

The sub-commands mirror the library: `serve` runs the MCP server; `add`, `search`, `list`,
`show`, `update`, `delete`, `users`, `log`, `history`, `undo` call the store directly, against the
same database. On a terminal the reading commands print tables (server/human.py); with `--json`,
or when their output is a pipe or a file, they print JSON.

Commands that only read (`list`, `search`, `show`, `history`, `log`, `users`, `export`, `backup`)
refuse a database that does not exist, so a mistyped `--db` does not create an empty one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import replace
from pathlib import Path

import sniffio

import memoir
from memoir.memory.backends import is_postgres, redacted
from memoir.memory.budget import check_max_tokens, fit
from memoir.memory.errors import MemoirError, MemoryNotFound, TokenNotFound
from memoir.memory.limits import Limits, parse_time
from memoir.memory.oauth_store import LOGIN_CODE_TTL, GrantInfo, OAuthStore, check_user_for_code
from memoir.memory.store import Change, Filters
from memoir.memory import transfer
from memoir.memory.tokens import Tokens
from memoir.tools.context import AppContext

from .app import build_server, running_app
from .entry import quiet_stdout
from .settings import DEFAULT_PORT, Settings, database_location, default_db_path, parse_tools
from .stdio import run_stdio
from .transports import exit_now, serve_http
from . import ui


def run_loop(main: Coroutine[object, object, int]) -> int:
    """`asyncio.run`, on uvloop where it is installed (a dependency everywhere but Windows).

    The MCP SDK takes about fifteen turns of the event loop per tool call, and uvloop's turns are
    cheaper: over stdio an add took 0.55 ms of server CPU instead of 0.61 (1,085 adds/s instead
    of 1,020, one at a time), and a search about 0.1 ms less.

    The loop's library is also declared to sniffio, which anyio asks on every await of its
    streams: left to find out, sniffio calls asyncio.current_task(), and on Python 3.11 that is a
    getpid() system call each time, 16 of the 33 an add made (0.02-0.03 ms of server CPU).
    """
    sniffio.thread_local.name = "asyncio"  # uvloop is asyncio to every library
    try:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(main)
        return uvloop.run(main)
    finally:
        sniffio.thread_local.name = None


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if hasattr(args, "sync_run"):  # memoir extract / memoir hook (server/hooks.py; server/entry.py goes there directly)
        return args.sync_run(args)
    try:
        settings = Settings.from_env().with_overrides(
            db_path=database_location(args.db) if getattr(args, "db", None) else None, user_id=getattr(args, "user", None)
        )
    except ValueError as exc:
        print(f"memoir: a MEMOIR_* environment variable is invalid: {exc}", file=sys.stderr)
        return 1
    try:
        settings.check_log_level()
        if getattr(args, "user", None) is not None:
            Limits().user_id(args.user, "--user")  # named as the user typed it, not as MEMOIR_USER_ID
        if getattr(args, "reads_only", False) and not is_postgres(settings.db_path) and not Path(settings.db_path).exists():
            raise MemoirError(
                f"no database at {settings.db_path}; check --db or MEMOIR_DB (default {default_db_path()}); "
                "`memoir add` or `memoir serve` creates one"
            )
    except (ValueError, MemoirError) as exc:
        print(f"memoir: {exc}", file=sys.stderr)
        return 1
    if args.command not in ("serve", "search", "ui", "doctor", "import", "reindex") and settings.embeddings == "on":
        # Only serving, searching, importing and reindexing need the embedding model. What another
        # shell command writes is embedded by the server (or the next search) when that user is searched.
        settings = replace(settings, embeddings="off")
    logging.basicConfig(level=settings.log_level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run_loop(args.run(settings, args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `memoir export | head -1`: the reader has all it wanted. Quiet, and success.
        quiet_stdout()
        return 0
    except (MemoirError, ValueError, OSError) as exc:
        print(f"memoir: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        print(f"memoir: {database_problem(settings.db_path, exc)}", file=sys.stderr)
        return 1


def database_problem(path: Path | str, exc: BaseException) -> str:
    """One line naming the database, what is wrong and the fix."""
    text = " ".join(str(exc).split())  # SQLite's reports span lines; the error is one
    if is_postgres(path):
        return (
            f"cannot use the PostgreSQL database {redacted(path)}: {text} (check that the server is up, "
            "that the database exists and that the URL's user may use it)"
        )
    if "malformed" in text or "not a database" in text or "corrupt" in text:
        return (
            f"the database {path} is damaged ({text}): restore a backup made by `memoir backup` (copy it over this "
            f"file), or save what is readable with `memoir export --db {path} -o rescue.jsonl` and import that into a new database"
        )
    if "unable to open" in text or "readonly" in text or "read-only" in text:
        return f"cannot open the database {path} ({text}): check that its directory exists and is writable, or choose another with --db or MEMOIR_DB"
    return f"cannot use the database {path}: {text}"


# -- sub-commands ----------------------------------------------------------------------------


async def _serve(settings: Settings, args: argparse.Namespace) -> int:
    settings = settings.with_overrides(transport=args.transport, host=args.host, port=args.port)
    if settings.transport != "stdio" and args.port is None and settings.port_error:
        raise ValueError(settings.port_error)
    if args.tools is not None:
        settings = replace(settings, tools=parse_tools(args.tools))
    if args.allow_unauthenticated:
        settings = replace(settings, access=replace(settings.access, allow_unauthenticated=True))
    interrupted = False
    async with running_app(settings) as app:
        # A damaged file would otherwise start, then fail every tool call with no word of why.
        # quick_check reads every page: 55 ms for 20,000 memories with their vectors (56 MB).
        check = await app.store.quick_check()
        if check != "ok":
            raise sqlite3.DatabaseError(f"database disk image is malformed: {check}")
        if settings.transport == "stdio":
            from .human import is_terminal

            if is_terminal(sys.stdin):
                print("memoir: waiting for an MCP host on stdin; Ctrl-C to stop", file=sys.stderr, flush=True)
            # Ctrl-C (and SIGTERM) stop the server even while a thread is blocked reading a terminal,
            # or a tool call is running: the store is closed, then the process ends (exit_now).
            interrupted = await _until_signal(run_stdio(build_server(app)))
        else:
            await serve_http(app, settings)
    if interrupted:
        exit_now(130)
    if settings.transport == "stdio":
        return 0
    exit_now(0)  # the store is closed; only in-memory MCP sessions are left (server/transports.py)
    return 0


STOP_GRACE = 2.0  # seconds between Ctrl-C and ending the process when the server does not stop by itself


async def _until_signal(work: Coroutine[object, object, object]) -> bool:
    """Run `work`; True if SIGINT or SIGTERM stopped it first."""
    import signal

    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    stopped = False

    def stop() -> None:
        nonlocal stopped
        stopped = True
        task.cancel()
        # The SDK reads a terminal in a worker thread that a cancel cannot interrupt: if the server
        # has not wound down in a moment, end the process (every acknowledged write is committed).
        loop.call_later(STOP_GRACE, exit_now, 130)

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
            pass
    try:
        await task
    except BaseException:  # cancelled mid-call, the SDK's task groups raise what broke (BrokenResourceError, ...)
        if not stopped:
            raise
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    return stopped


async def _add(settings: Settings, args: argparse.Namespace) -> int:
    return await _with_app(settings, lambda app: app.store.add(
        settings.user_id, args.memory, args.topic or [], change=Change(actor="cli"),
        supersedes=args.supersedes, valid_from=args.valid_from,
    ))


def _validity(args: argparse.Namespace) -> Filters:
    return Filters(as_of=parse_time(args.as_of, "--as-of"), include_superseded=args.include_superseded)


async def _search(settings: Settings, args: argparse.Namespace) -> int:
    async def run(app):
        filters = _validity(args)
        max_tokens = check_max_tokens(args.max_tokens, "--max-tokens")
        if args.method == "agentic":
            if app.llm is None:
                raise MemoirError("agentic search from the command line needs ANTHROPIC_API_KEY")
            query, _, limit = app.retriever.check(args.query, "agentic", args.limit)
            app.retriever.check_min_relevance(args.min_relevance)
            results, method = await app.judge.search(
                settings.user_id, query or "", limit, app.llm, filters, min_relevance=args.min_relevance
            )
        else:
            outcome = await app.retriever.search(
                settings.user_id, args.query, method=args.method, limit=args.limit, filters=filters,
                min_relevance=args.min_relevance,
            )
            results, method = outcome.results, outcome.retrieval_method
        kept, tokens, cut = fit(results, max_tokens)
        return {"retrieval_method": method, "results": kept, "tokens": tokens, "truncated_by_budget": cut}

    def table(result: dict) -> None:
        from .human import print_search

        print_search(result, user_id=settings.user_id, query=args.query)

    return await _with_app(settings, run, table if _table(args) else None)


def _table(args: argparse.Namespace) -> bool:
    from .human import wants_table

    return wants_table(getattr(args, "json", False))


async def _list(settings: Settings, args: argparse.Namespace) -> int:
    async def run(app):
        limit = app.store.limits.limit(args.limit, LIST_MAX, "--limit")
        return await app.store.list(settings.user_id, limit=limit, cursor=args.cursor, filters=_validity(args))

    def table(page) -> None:
        from .human import print_memories

        print_memories(page.memories, user_id=settings.user_id, next_cursor=page.next_cursor)

    return await _with_app(settings, run, table if _table(args) else None)


LIST_MAX = 1_000  # a page of `memoir list` (the list_memories tool pages by at most 100)


async def _history(settings: Settings, args: argparse.Namespace) -> int:
    async def run(app):
        # --user: only that user's events; without it the memory's owner's (Store.history).
        events = await app.store.history(args.memory_id, user_id=args.user)
        if not events:
            who = f" for user '{args.user}'" if args.user else ""
            raise MemoirError(f"no history for memory '{args.memory_id}'{who}")
        return events

    def table(events) -> None:
        from .human import print_events

        print_events(events, title=f"history of memory {args.memory_id} (undo one with `memoir undo EVENT`)")

    return await _with_app(settings, run, table if _table(args) else None)


async def _owned(app: AppContext, settings: Settings, args: argparse.Namespace, memory_id: str):
    """The memory `memory_id`: of --user / MEMOIR_USER_ID when given, else of whoever owns it (a local shell is trusted)."""
    app.store.limits.memory_id(memory_id)
    found = await app.store.find(memory_id)
    explicit = args.user or None
    if found is None or (explicit is not None and found.user_id != explicit):
        raise MemoryNotFound(memory_id, explicit or settings.user_id)
    return found


async def _show(settings: Settings, args: argparse.Namespace) -> int:
    async def run(app):
        return await _owned(app, settings, args, args.memory_id)

    def table(memory) -> None:
        from .human import print_memory

        print_memory(memory)

    return await _with_app(settings, run, table if _table(args) else None)


async def _update(settings: Settings, args: argparse.Namespace) -> int:
    async def run(app):
        found = await _owned(app, settings, args, args.memory_id)
        return await app.store.update(
            found.user_id, found.memory_id, memory=args.memory, topics=args.topic, change=Change(actor="cli")
        )

    return await _with_app(settings, run)


async def _delete(settings: Settings, args: argparse.Namespace) -> int:
    async def run(app):
        found = await _owned(app, settings, args, args.memory_id)
        await app.store.delete(found.user_id, found.memory_id, change=Change(actor="cli"))
        events = await app.store.history(found.memory_id)
        return {"memory_id": found.memory_id, "deleted": True, "event_id": events[-1].event_id}

    def said(result: dict) -> None:
        print(f"deleted {result['memory_id']} (event {result['event_id']}; `memoir undo {result['event_id']}` brings it back)")

    return await _with_app(settings, run, said if _table(args) else None)


async def _users(settings: Settings, args: argparse.Namespace) -> int:
    async def run(app):
        rows = await app.store.fetch(
            "SELECT user_id, count(*) AS memories, max(updated_at) AS last_change FROM memories GROUP BY user_id ORDER BY user_id"
        )
        return [dict(r) for r in rows]

    def table(users) -> None:
        from .human import print_users

        print_users(users)

    return await _with_app(settings, run, table if _table(args) else None)


async def _log(settings: Settings, args: argparse.Namespace) -> int:
    async def run(app):
        limit = app.store.limits.limit(args.limit, LIST_MAX, "--limit")
        return await app.store.user_history(settings.user_id, limit=limit)

    def table(events) -> None:
        from .human import print_log

        print_log(events, user_id=settings.user_id)

    return await _with_app(settings, run, table if _table(args) else None)


async def _purge(settings: Settings, args: argparse.Namespace) -> int:
    if not args.yes:
        raise MemoirError(
            f"purge forgets user '{settings.user_id}' entirely, history included, and cannot be undone; "
            "add --yes to do it"
        )

    async def run(app):
        return {"user_id": settings.user_id, "purged_memories": await app.store.purge(settings.user_id)}

    return await _with_app(settings, run)


async def _undo(settings: Settings, args: argparse.Namespace) -> int:
    if args.clear:
        async def run(app):
            row = await app.store.fetch("SELECT user_id FROM history WHERE event_id = ?", [args.event_id])
            owner = args.user or (row[0]["user_id"] if row else settings.user_id)
            restored = await app.store.undo_clear(owner, args.event_id, change=Change(actor="undo"))
            return {"user_id": owner, "restored": len(restored), "events": restored}

        def restored(result: dict) -> None:
            print(f"brought back {result['restored']} memories of '{result['user_id']}'")

        return await _with_app(settings, run, restored if _table(args) else None)

    def said(event) -> None:
        state = event.after or event.before
        print(f"undid event {args.event_id}: {event.operation} of {event.memory_id}"
              + (f" ({state.memory})" if state is not None else "") + f", recorded as event {event.event_id}")

    return await _with_app(
        settings, lambda app: app.store.undo(args.event_id, change=Change(actor="undo")), said if _table(args) else None
    )


async def _token_create(settings: Settings, args: argparse.Namespace) -> int:
    async def run(app):
        if args.code:
            info, code = await OAuthStore(app.store).create_login_code(check_user_for_code(args.user, args.admin))
            print(f"created one-time sign-in code {info.code_id} for user '{info.user_id}'")
            print(f"paste it on memoir's authorize page within {LOGIN_CODE_TTL / 60:.0f} minutes; it works once")
            print(code)
            return
        info, secret = await Tokens(app.store).create(args.user, admin=args.admin, label=args.label)
        print(f"created token {info.token_id} for " + ("admin" if info.admin else f"user '{info.user_id}'"))
        print("store it now: it is shown only once (send it as 'Authorization: Bearer <token>')")
        print(secret)

    return await _with_store(settings, run)


async def _token_list(settings: Settings, args: argparse.Namespace) -> int:
    async def run(app):
        tokens = await Tokens(app.store).list()
        oauth = OAuthStore(app.store)
        grants, codes = await oauth.grants(), await oauth.login_codes()
        for info in [*tokens, *grants, *codes]:
            print(info.describe())
        if not (tokens or grants or codes):
            print("no tokens: SSE/HTTP on a loopback address is open to local clients", file=sys.stderr)

    return await _with_store(settings, run)


async def _token_revoke(settings: Settings, args: argparse.Namespace) -> int:
    async def run(app):
        try:
            info = await Tokens(app.store).revoke(args.token)
        except TokenNotFound:
            other = await OAuthStore(app.store).revoke(args.token)
            if other is None:
                raise
            if isinstance(other, GrantInfo):
                print(f"revoked OAuth grant {other.grant_id} ({other.user_id}, client {other.client_name or other.client_id})")
            else:
                print(f"revoked sign-in code {other.code_id} ({other.user_id})")
            return
        print(f"revoked token {info.token_id} ({'admin' if info.admin else info.user_id})")

    return await _with_store(settings, run)


async def _export(settings: Settings, args: argparse.Namespace) -> int:
    from .human import progress

    async def run(app):
        lines = transfer.export_lines(app.store, args.user, history=args.history)
        if not args.output:
            async for line in lines:
                print(line)
            return
        target = Path(args.output).expanduser()
        if target.exists() and not target.is_file():  # /dev/stdout, a FIFO: write to it, never replace it
            with target.open("w", encoding="utf-8") as out:
                async for line in lines:
                    out.write(line + "\n")
            return
        if not target.parent.is_dir():
            raise MemoirError(f"no directory {target.parent} for {target.name}; create it first or choose another -o")
        total = None if args.history else 1 + (await app.store.count(args.user) if args.user else await app.store.count())
        partial = target.with_name(target.name + ".partial")
        count = 0
        try:
            with partial.open("w", encoding="utf-8") as out, progress(f"exporting to {target.name}", total) as bar:
                async for line in lines:
                    out.write(line + "\n")
                    count += 1
                    bar.advance()
            partial.replace(target)
        except BaseException:
            partial.unlink(missing_ok=True)  # a failed export leaves nothing behind; the old file is untouched
            raise
        print(f"memoir: wrote {count - 1} records to {target}", file=sys.stderr)

    return await _with_store(settings, run)


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _open_import(path: Path):
    """The file to import, as text lines; a one-line error for what is not JSON Lines."""
    if path.is_dir():
        raise MemoirError(f"{path} is a directory; give a JSON Lines file from `memoir export` or a memory.jsonl")
    with path.open("rb") as raw:
        head = raw.read(4096)
    if head.startswith(_SQLITE_MAGIC):
        raise MemoirError(
            f"{path} is a SQLite database (a memoir database or backup?), not JSON Lines: use it with --db {path}, "
            f"or copy it in with `memoir export --db {path} | memoir import -`"
        )
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not merely a character cut at the 4,096th byte
            raise MemoirError(f"{path} is not UTF-8 text (byte {exc.start}); import reads JSON Lines from `memoir export` or a memory.jsonl") from None
    return path.open(encoding="utf-8", errors="strict")


async def _import(settings: Settings, args: argparse.Namespace) -> int:
    from .human import progress

    async def run(app):
        source = "stdin" if args.file == "-" else Path(args.file).name
        lines = sys.stdin if args.file == "-" else _open_import(Path(args.file).expanduser())
        total = None
        if args.file != "-":
            with Path(args.file).expanduser().open("rb") as raw:
                total = sum(1 for _ in raw)
        with lines, progress(f"reading {source}", total) as bar:
            def counted():
                for line in lines:
                    bar.advance()
                    yield line

            try:
                report = await transfer.import_lines(
                    app.store, counted(), user_id=args.user, default_user=settings.user_id, source=source
                )
            except UnicodeDecodeError as exc:
                raise MemoirError(f"{source} is not UTF-8 text ({exc.reason}); nothing was imported") from None
        print(report.summary())
        for skipped in report.skipped:
            print(f"  skipped line {skipped.line}: {skipped.reason}")
        if report.memories and not args.no_embed:
            # Embed now, with a progress bar, rather than in the next search (20,000 memories: 36 s).
            embedded = await _embed_missing(app)
            if embedded:
                print(f"memoir: embedded {embedded} memories for semantic search", file=sys.stderr)

    return await _with_store(settings, run)


async def _embed_missing(app: AppContext) -> int:
    vectors = app.retriever.vectors
    if vectors is None:  # MEMOIR_EMBEDDINGS=off
        return 0
    from .human import progress

    with progress("embedding") as bar:
        return await vectors.reindex(bar.step)


async def _reindex(settings: Settings, args: argparse.Namespace) -> int:
    async def run(app):
        if wrong := await app.store.keyword_index_problems():
            indexed = await app.store.rebuild_keyword_index()
            print(f"memoir: rebuilt the keyword index ({len(wrong)} problem(s) found; {indexed} memories indexed)",
                  file=sys.stderr)
        else:
            print("memoir: the keyword index is in step with the memories", file=sys.stderr)
        if app.retriever.vectors is None:
            print("memoir: embeddings are off (MEMOIR_EMBEDDINGS=off): no vectors to compute", file=sys.stderr)
            return
        embedded = await _embed_missing(app)
        print(f"memoir: embedded {embedded} memories" if embedded else "memoir: every memory already has its vector",
              file=sys.stderr)

    return await _with_store(settings, run)


async def _backup(settings: Settings, args: argparse.Namespace) -> int:
    if is_postgres(settings.db_path):
        raise MemoirError(
            "memoir backup copies an SQLite file; a PostgreSQL database is backed up with PostgreSQL's own tools, "
            f"e.g. `pg_dump --format=custom --file=memoir.dump '{redacted(settings.db_path)}'` "
            "(restore with pg_restore), or `memoir export --history -o memoir.jsonl` for memoir's own format"
        )
    target = Path(args.path).expanduser()
    if not target.parent.is_dir():
        raise MemoirError(f"no directory {target.parent} for the backup {target.name}; create it first or choose another path")
    from .human import progress

    with progress(f"backing up to {target.name}") as bar:
        written = await transfer.backup(settings.db_path, target, bar.step)
    print(f"memoir: backed up {settings.db_path} to {written} (integrity check ok)")
    return 0


def _migration_location(text: str) -> str:
    if is_postgres(text):
        return text
    path = text.removeprefix("sqlite:")
    return str(Path(path).expanduser())


async def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from memoir.memory.migrate import migrate_database

    source, target = _migration_location(args.source), _migration_location(args.target)
    if not is_postgres(source) and not Path(source).exists():
        raise MemoirError(f"no database at {source} to migrate from")
    from .human import progress

    try:
        with progress("copying") as bar:
            done = await migrate_database(source, target, on_progress=bar.step)
    except sqlite3.Error as exc:
        raise MemoirError(f"cannot migrate {redacted(source)} to {redacted(target)}: {' '.join(str(exc).split())}") from exc
    counts = ", ".join(f"{n:,} {table}" for table, n in done.counts.items() if n)
    print(f"memoir: copied {redacted(source)} to {redacted(target)}: {counts or 'nothing (it was empty)'}; "
          f"verified: every table's count, {done.searches_compared} sample searches alike")
    return 0


async def _with_store(settings: Settings, action: Callable[..., Awaitable[object]]) -> int:
    """Like `_with_app`, for commands that print their own output."""
    async with running_app(settings) as app:
        await action(app)
    return 0


async def _with_app(
    settings: Settings, action: Callable[..., Awaitable[object]], table: Callable[[object], None] | None = None
) -> int:
    """Run `action` on the open app and print what it returns: as JSON, or with `table` (a terminal, no --json)."""
    async def printed(app: AppContext) -> None:
        result = await action(app)
        if table is not None:
            table(result)
        else:
            _print_json(result)

    return await _with_store(settings, printed)


def _print_json(value: object) -> None:
    def plain(v: object) -> object:
        if hasattr(v, "model_dump"):
            return v.model_dump()  # type: ignore[union-attr]
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    print(json.dumps(plain(value), indent=2, ensure_ascii=False))


# -- argument parsing ------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memoir",
        description="memoir: an MCP server that gives agents a long-term memory about their users.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"""examples:
  memoir config claude-code         how to add memoir to Claude Code (also claude-desktop, cursor, vscode)
  memoir add "Ava likes to ski" --topic hobbies
  memoir search "winter sports"     hybrid search; --method keyword|semantic|agentic|last_n|first_n
  memoir list                       a table on a terminal; --json (or a pipe) for JSON
  memoir log                        recent changes, with the event ids `memoir undo EVENT` takes
  memoir backup ~/memoir-backup.db
  memoir migrate --from sqlite:~/memoir.db --to postgresql://memoir@db.example/memoir
  memoir doctor                     check the database, the model and the configuration

database: {default_db_path()} (change with --db or MEMOIR_DB)""",
    )
    parser.add_argument("--version", action="version", version=f"memoir {memoir.__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", help="SQLite database file, or a postgresql:// URL (env MEMOIR_DB; default: a file in the user data directory)")
    user = argparse.ArgumentParser(add_help=False)
    user.add_argument("--user", help="user id (env MEMOIR_USER_ID; default 'default')")
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print JSON (the default when output is not a terminal)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", parents=[common, user], help="run the MCP server (stdio by default)")
    serve.add_argument("--transport", choices=["stdio", "sse", "http"], default="stdio",
                       help="stdio (default), sse (/sse), or http (streamable HTTP at /mcp)")
    serve.add_argument("--host", help="address to bind for sse/http (env MEMOIR_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help=f"port for sse/http (env MEMOIR_PORT; default {DEFAULT_PORT}; 0 = any)")
    serve.add_argument("--tools", help="the tools offered, comma-separated names or presets (all, read-only, "
                       "no-delete) (env MEMOIR_TOOLS; default all)")
    serve.add_argument("--allow-unauthenticated", action="store_true",
                       help="serve a non-loopback --host even though no token exists (env MEMOIR_ALLOW_UNAUTHENTICATED)")
    serve.set_defaults(run=_serve)

    ui.register(sub, [common, user])

    add = sub.add_parser("add", parents=[common, user], help="add a memory")
    add.add_argument("memory")
    add.add_argument("--topic", action="append", help="a topic (repeat for several)")
    add.add_argument("--supersedes", metavar="MEMORY_ID",
                     help="the current memory this one replaces because the world changed (kept as history)")
    add.add_argument("--valid-from", metavar="ISO", help="since when the fact holds (default: now)")
    validity = argparse.ArgumentParser(add_help=False)
    validity.add_argument("--as-of", metavar="ISO", help="what was valid at that moment (default: current memories)")
    validity.add_argument("--include-superseded", action="store_true", help="superseded memories too")
    add.set_defaults(run=_add)

    search = sub.add_parser("search", parents=[common, user, validity, output], help="search memories")
    search.add_argument("query", nargs="?")
    search.add_argument("--method", choices=["hybrid", "keyword", "semantic", "agentic", "last_n", "first_n"],
                        help="retrieval method (default: hybrid with a query - keyword and semantic fused, keyword "
                        "alone when MEMOIR_EMBEDDINGS=off - and last_n without)")
    search.add_argument("--limit", type=int, default=10)
    search.add_argument("--max-tokens", type=int, help="a budget for the memory text (ASCII characters 1/4 token, others 1)")
    search.add_argument(
        "--min-relevance", type=float, default=None, metavar="R",
        help="drop results whose relevance (0-1) is below R (default 0.3; 0 keeps every result)",
    )
    search.set_defaults(run=_search, reads_only=True)

    listing = sub.add_parser("list", parents=[common, user, validity, output], help="list memories, newest first")
    listing.add_argument("--limit", type=int, default=20, help=f"how many (1-{LIST_MAX:,}; default 20)")
    listing.add_argument("--cursor")
    listing.set_defaults(run=_list, reads_only=True)

    show = sub.add_parser("show", parents=[common, user, output], help="show one memory")
    show.add_argument("memory_id", metavar="ID")
    show.set_defaults(run=_show, reads_only=True)

    update = sub.add_parser("update", parents=[common, user], help="change a memory's text or topics (recorded; undoable)")
    update.add_argument("memory_id", metavar="ID")
    update.add_argument("--memory", help="the new text")
    update.add_argument("--topic", action="append", help="a topic (repeat for several; replaces the topics)")
    update.set_defaults(run=_update)

    delete = sub.add_parser("delete", parents=[common, user, output], help="delete a memory (recorded; `memoir undo EVENT` brings it back)")
    delete.add_argument("memory_id", metavar="ID")
    delete.set_defaults(run=_delete)

    users = sub.add_parser("users", parents=[common, output], help="the users with memories, and how many each has")
    users.set_defaults(run=_users, reads_only=True)

    log = sub.add_parser("log", parents=[common, user, output], help="a user's recent changes, newest first, with event ids to undo")
    log.add_argument("--limit", type=int, default=30, help="how many events (default 30)")
    log.set_defaults(run=_log, reads_only=True)

    history = sub.add_parser("history", parents=[common, output], help="show every recorded change of a memory")
    history.add_argument("memory_id")
    history.add_argument("--user", help="only this user's events (default: the memory's owner's)")
    history.set_defaults(run=_history, reads_only=True)

    undo = sub.add_parser("undo", parents=[common, output], help="revert one recorded change (see `memoir log`, `memoir history`)")
    undo.add_argument("event_id", type=int, metavar="EVENT")
    undo.add_argument("--clear", action="store_true",
                      help="EVENT is one of a clear's events: bring back every memory that clear removed, at once")
    undo.add_argument("--user", help="with --clear: the user whose clear it was (default: the event's)")
    undo.set_defaults(run=_undo)

    purge = sub.add_parser(
        "purge", parents=[common, user], help="forget a user entirely, history included (cannot be undone)"
    )
    purge.add_argument("--yes", action="store_true", help="confirm")
    purge.set_defaults(run=_purge)

    export = sub.add_parser("export", parents=[common], help="write memories as JSON Lines (all users, or --user)")
    export.add_argument("--user", help="only this user's memories (default: every user)")
    export.add_argument("--history", action="store_true", help="include every recorded change")
    export.add_argument("--output", "-o", help="write to this file (replaced atomically) instead of stdout")
    export.set_defaults(run=_export, reads_only=True)
    importing = sub.add_parser(
        "import", parents=[common], help="read a memoir export or an MCP memory server memory.jsonl (idempotent)"
    )
    importing.add_argument("file", metavar="FILE", help="JSON Lines file ('-' for stdin)")
    importing.add_argument("--user", help="the user for memory.jsonl entities and relations (default: the configured "
                           "user); for a memoir export, import only this user")
    importing.add_argument("--no-embed", action="store_true",
                           help="do not embed the imported memories now (`memoir reindex` or the first search will)")
    importing.set_defaults(run=_import)
    reindex = sub.add_parser("reindex", parents=[common],
                             help="check the keyword index (rebuilt if wrong) and embed every memory that has no vector "
                             "for the current model (so no search pays for it)")
    reindex.set_defaults(run=_reindex, reads_only=True)
    backup = sub.add_parser("backup", parents=[common], help="copy the database safely, even while a server runs")
    backup.add_argument("path", metavar="PATH", help="the backup file (replaced atomically)")
    backup.set_defaults(run=_backup, reads_only=True)

    migrate = sub.add_parser(
        "migrate", help="copy a whole database to another backend (SQLite <-> PostgreSQL): memories, history, tokens, vectors, OAuth",
    )
    migrate.add_argument("--from", dest="source", required=True, metavar="DB",
                         help="the database to copy: sqlite:PATH (or a path), or a postgresql:// URL")
    migrate.add_argument("--to", dest="target", required=True, metavar="DB",
                         help="an empty (or new) database: sqlite:PATH, or a postgresql:// URL")
    migrate.set_defaults(run=_migrate)

    token = sub.add_parser("token", help="bearer tokens, OAuth sign-in codes and grants for SSE / HTTP: create, list, revoke")
    token_sub = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = token_sub.add_parser("create", parents=[common], help="make a token; prints it alone on the last line")
    create.add_argument("user", nargs="?", metavar="USER", help="the user the token acts for (with --admin: its default)")
    create.add_argument("--admin", action="store_true", help="an admin token, which may name any user")
    create.add_argument("--label", help="a note shown by `memoir token list`")
    create.add_argument("--code", action="store_true",
                        help="instead: a one-time code (10 minutes) for USER to sign in on the OAuth authorize page")
    create.set_defaults(run=_token_create)
    token_list = token_sub.add_parser(
        "list", parents=[common], help="list tokens, OAuth grants and unused sign-in codes (ids and users, never secrets)"
    )
    token_list.set_defaults(run=_token_list)
    revoke = token_sub.add_parser(
        "revoke", parents=[common], help="revoke a token, OAuth grant or sign-in code at once, also on a running server"
    )
    revoke.add_argument("token", metavar="ID_OR_TOKEN", help="an id from `memoir token list`, or the secret itself")
    revoke.set_defaults(run=_token_revoke)

    config_parser(sub, common)
    doctor = sub.add_parser("doctor", parents=[common, user], help="check the database, the model, the LLM and token setup; each problem with its fix")
    doctor.set_defaults(run=_doctor)

    from .hooks import add_parsers as add_hook_parsers

    add_hook_parsers(sub, common, user)  # memoir extract, memoir hook session-start|user-prompt|stop
    return parser


def config_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`memoir config HOST`; returned so more options (e.g. --hooks for claude-code) can be added to it."""
    from .hostconfig import HOSTS

    config = sub.add_parser("config", parents=[common],
                            help="print the configuration that adds this memoir to an MCP host, with its absolute path")
    config.add_argument("host", choices=list(HOSTS), metavar="HOST", help=f"one of {', '.join(HOSTS)}")
    # Served by server/hooks.py through server/entry.py before this parser runs; listed here for --help.
    config.add_argument("--hooks", action="store_true",
                        help="claude-code only: the settings.json hooks block that recalls and remembers by itself")
    config.set_defaults(run=_config)
    return config


async def _config(settings: Settings, args: argparse.Namespace) -> int:
    from .hostconfig import snippet

    if args.hooks:  # reached only without server/entry.py (python -m memoir.server.cli)
        if args.host != "claude-code":
            print("memoir: --hooks is for claude-code only (the host whose hooks memoir knows)", file=sys.stderr)
            return 2
        from .hooks import claude_code_hooks

        print(json.dumps(claude_code_hooks(settings.db_path, getattr(args, "user", None)), indent=2))
        return 0
    print(snippet(args.host, db=Path(args.db).expanduser().resolve() if args.db else None))
    return 0


async def _doctor(settings: Settings, args: argparse.Namespace) -> int:
    from .doctor import run_doctor

    return await run_doctor(settings)


if __name__ == "__main__":
    sys.exit(main())
