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
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import memoir
from memoir.memory.errors import MemoirError
from memoir.memory.store import Change

from .app import build_server, close_app, open_app
from .settings import DEFAULT_PORT, Settings
from .transports import run_http, run_stdio


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        settings = Settings.from_env().with_overrides(
            db_path=Path(args.db).expanduser() if args.db else None, user_id=getattr(args, "user", None)
        )
    except ValueError as exc:
        print(f"memoir: a MEMOIR_* environment variable is invalid: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(level=settings.log_level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(args.run(settings, args))
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
    app = await open_app(settings)
    try:
        server = build_server(app)
        if settings.transport == "stdio":
            await run_stdio(server)
        else:
            await run_http(server, settings)
    finally:
        await close_app(app)
    return 0


async def _add(settings: Settings, args: argparse.Namespace) -> int:
    return await _with_app(settings, lambda app: app.store.add(
        settings.user_id, args.memory, args.topic or [], change=Change(actor="cli")
    ))


async def _search(settings: Settings, args: argparse.Namespace) -> int:
    async def run(app):
        outcome = await app.retriever.search(settings.user_id, args.query, method=args.method, limit=args.limit)
        return {"retrieval_method": outcome.retrieval_method, "results": outcome.results}

    return await _with_app(settings, run)


async def _list(settings: Settings, args: argparse.Namespace) -> int:
    return await _with_app(settings, lambda app: app.store.list(settings.user_id, limit=args.limit, cursor=args.cursor))


async def _history(settings: Settings, args: argparse.Namespace) -> int:
    async def run(app):
        events = await app.store.history(args.memory_id)
        if not events:
            raise MemoirError(f"no history for memory '{args.memory_id}'")
        return events

    return await _with_app(settings, run)


async def _undo(settings: Settings, args: argparse.Namespace) -> int:
    return await _with_app(settings, lambda app: app.store.undo(args.event_id, change=Change(actor="undo")))


async def _with_app(settings: Settings, action: Callable[..., Awaitable[object]]) -> int:
    app = await open_app(settings)
    try:
        _print_json(await action(app))
    finally:
        await close_app(app)
    return 0


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
    serve.set_defaults(run=_serve)

    add = sub.add_parser("add", parents=[common, user], help="add a memory")
    add.add_argument("memory")
    add.add_argument("--topic", action="append", help="a topic (repeat for several)")
    add.set_defaults(run=_add)

    search = sub.add_parser("search", parents=[common, user], help="search memories")
    search.add_argument("query", nargs="?")
    search.add_argument("--method", help="retrieval method (default: keyword with a query, last_n without)")
    search.add_argument("--limit", type=int, default=10)
    search.set_defaults(run=_search)

    listing = sub.add_parser("list", parents=[common, user], help="list memories, newest first")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--cursor")
    listing.set_defaults(run=_list)

    history = sub.add_parser("history", parents=[common], help="show every recorded change of a memory")
    history.add_argument("memory_id")
    history.set_defaults(run=_history)

    undo = sub.add_parser("undo", parents=[common], help="revert one recorded change (see `memoir history`)")
    undo.add_argument("event_id", type=int)
    undo.set_defaults(run=_undo)
    return parser


if __name__ == "__main__":
    sys.exit(main())
