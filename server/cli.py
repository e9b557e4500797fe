"""The `memoir` command: run the server, and work with the memory from a shell.

The sub-commands mirror the library: `serve` runs the MCP server; `add`, `search`, `list`,
`history`, `undo` call the store directly, against the same database.
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
from memoir.memory.budget import check_max_tokens, fit
from memoir.memory.errors import MemoirError, TokenNotFound
from memoir.memory.limits import parse_time
from memoir.memory.oauth_store import LOGIN_CODE_TTL, GrantInfo, OAuthStore, check_user_for_code
from memoir.memory.store import Change, Filters
from memoir.memory import transfer
from memoir.memory.tokens import Tokens
from memoir.tools.context import AppContext

from .app import build_server, running_app
from .settings import DEFAULT_PORT, Settings, parse_tools
from .stdio import run_stdio
from .transports import exit_now, serve_http


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
            db_path=Path(args.db).expanduser() if args.db else None, user_id=getattr(args, "user", None)
        )
    except ValueError as exc:
        print(f"memoir: a MEMOIR_* environment variable is invalid: {exc}", file=sys.stderr)
        return 1
    if args.command not in ("serve", "search") and settings.embeddings == "on":
        # Only serving and searching need the embedding model. What a shell command writes is
        # embedded by the server (or the next search) the first time that user is searched.
        settings = replace(settings, embeddings="off")
    logging.basicConfig(level=settings.log_level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run_loop(args.run(settings, args))
    except KeyboardInterrupt:
        return 130
    except (MemoirError, ValueError, OSError) as exc:
        print(f"memoir: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        print(f"memoir: cannot use the database {settings.db_path}: {exc}", file=sys.stderr)
        return 1


# -- sub-commands ----------------------------------------------------------------------------


async def _serve(settings: Settings, args: argparse.Namespace) -> int:
    settings = settings.with_overrides(transport=args.transport, host=args.host, port=args.port)
    if args.tools is not None:
        settings = replace(settings, tools=parse_tools(args.tools))
    if args.allow_unauthenticated:
        settings = replace(settings, access=replace(settings.access, allow_unauthenticated=True))
    async with running_app(settings) as app:
        if settings.transport == "stdio":
            await run_stdio(build_server(app))
            return 0
        await serve_http(app, settings)
    exit_now(0)  # the store is closed; only in-memory MCP sessions are left (server/transports.py)
    return 0


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
            results, method = await app.judge.search(settings.user_id, query or "", limit, app.llm, filters)
        else:
            outcome = await app.retriever.search(
                settings.user_id, args.query, method=args.method, limit=args.limit, filters=filters
            )
            results, method = outcome.results, outcome.retrieval_method
        kept, tokens, cut = fit(results, max_tokens)
        return {"retrieval_method": method, "results": kept, "tokens": tokens, "truncated_by_budget": cut}

    return await _with_app(settings, run)


async def _list(settings: Settings, args: argparse.Namespace) -> int:
    return await _with_app(
        settings, lambda app: app.store.list(settings.user_id, limit=args.limit, cursor=args.cursor, filters=_validity(args))
    )


async def _history(settings: Settings, args: argparse.Namespace) -> int:
    async def run(app):
        events = await app.store.history(args.memory_id)
        if not events:
            raise MemoirError(f"no history for memory '{args.memory_id}'")
        return events

    return await _with_app(settings, run)


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
    return await _with_app(settings, lambda app: app.store.undo(args.event_id, change=Change(actor="undo")))


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
    async def run(app):
        lines = transfer.export_lines(app.store, args.user, history=args.history)
        if not args.output:
            async for line in lines:
                print(line)
            return
        target = Path(args.output).expanduser()
        partial = target.with_name(target.name + ".partial")
        count = 0
        with partial.open("w", encoding="utf-8") as out:
            async for line in lines:
                out.write(line + "\n")
                count += 1
        partial.replace(target)
        print(f"memoir: wrote {count - 1} records to {target}", file=sys.stderr)

    return await _with_store(settings, run)


async def _import(settings: Settings, args: argparse.Namespace) -> int:
    async def run(app):
        source = "stdin" if args.file == "-" else Path(args.file).name
        lines = sys.stdin if args.file == "-" else open(Path(args.file).expanduser(), encoding="utf-8")  # noqa: SIM115
        with lines:
            report = await transfer.import_lines(
                app.store, lines, user_id=args.user, default_user=settings.user_id, source=source
            )
        print(report.summary())
        for skipped in report.skipped:
            print(f"  skipped line {skipped.line}: {skipped.reason}")

    return await _with_store(settings, run)


async def _backup(settings: Settings, args: argparse.Namespace) -> int:
    written = await transfer.backup(settings.db_path, args.path)
    print(f"memoir: backed up {settings.db_path} to {written} (integrity check ok)")
    return 0


async def _with_store(settings: Settings, action: Callable[..., Awaitable[object]]) -> int:
    """Like `_with_app`, for commands that print their own output."""
    async with running_app(settings) as app:
        await action(app)
    return 0


async def _with_app(settings: Settings, action: Callable[..., Awaitable[object]]) -> int:
    async def printed(app: AppContext) -> None:
        _print_json(await action(app))

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
    )
    parser.add_argument("--version", action="version", version=f"memoir {memoir.__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", help="SQLite database file (env MEMOIR_DB; default: the user data directory)")
    user = argparse.ArgumentParser(add_help=False)
    user.add_argument("--user", help="user id (env MEMOIR_USER_ID; default 'default')")
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

    search = sub.add_parser("search", parents=[common, user, validity], help="search memories")
    search.add_argument("query", nargs="?")
    search.add_argument("--method", help="retrieval method (default: keyword with a query, last_n without)")
    search.add_argument("--limit", type=int, default=10)
    search.add_argument("--max-tokens", type=int, help="a budget for the memory text (ASCII characters 1/4 token, others 1)")
    search.set_defaults(run=_search)

    listing = sub.add_parser("list", parents=[common, user, validity], help="list memories, newest first")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--cursor")
    listing.set_defaults(run=_list)

    history = sub.add_parser("history", parents=[common], help="show every recorded change of a memory")
    history.add_argument("memory_id")
    history.set_defaults(run=_history)

    undo = sub.add_parser("undo", parents=[common], help="revert one recorded change (see `memoir history`)")
    undo.add_argument("event_id", type=int)
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
    export.set_defaults(run=_export)
    importing = sub.add_parser(
        "import", parents=[common], help="read a memoir export or an MCP memory server memory.jsonl (idempotent)"
    )
    importing.add_argument("file", metavar="FILE", help="JSON Lines file ('-' for stdin)")
    importing.add_argument("--user", help="the user for memory.jsonl entities and relations (default: the configured "
                           "user); for a memoir export, import only this user")
    importing.set_defaults(run=_import)
    backup = sub.add_parser("backup", parents=[common], help="copy the database safely, even while a server runs")
    backup.add_argument("path", metavar="PATH", help="the backup file (replaced atomically)")
    backup.set_defaults(run=_backup)

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

    from .hooks import add_parsers as add_hook_parsers

    add_hook_parsers(sub, common, user)  # memoir extract, memoir hook session-start|user-prompt|stop
    return parser


if __name__ == "__main__":
    sys.exit(main())
