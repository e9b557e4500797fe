"""Acknowledged writes that a later search must find, raced from outside a real server.

    python bench/races.py                    # both races, default sizes
    python bench/races.py --trials 300 --import-size 1500 --adds 20

1. keyword: two `memoir serve --transport http` on one database file, embeddings off. Each
   trial adds a memory for a new user through the second server (queued for the user's
   index), then sends a keyword search to the first and adds (a word each) to the second at
   once, then searches the first for each added word. On 649139a, 8 of 300 trials left the acknowledged add unfound.
2. import: a server with embeddings on, its user's vectors loaded; `memoir import` of N
   memories runs as another process; then one semantic search races K adds on other clients,
   and each add is searched for (semantic and hybrid). On 649139a, 15 of 20 adds stayed
   missing until restart.

Prints how many acknowledged writes each race lost (0 is the only right answer).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import start_server  # noqa: E402


WRITERS = int(__import__("os").environ.get("RACE_WRITERS", "2"))  # adds sent beside each trial's search


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


async def call(client: Client, tool: str, **arguments: object) -> dict:
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        raise RuntimeError(f"{tool}: {result.content[0].text}")
    return result.structured_content or {}


async def clients(stack: AsyncExitStack, url: str, n: int) -> list[Client]:
    """`n` MCP clients of `url`, each with a connection of its own, closed with `stack`."""
    out = []
    for _ in range(n):
        http = await stack.enter_async_context(httpx2.AsyncClient(timeout=httpx2.Timeout(60.0)))
        out.append(await stack.enter_async_context(Client(streamable_http_client(url, http_client=http))))
    return out


async def keyword_race(trials: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        # Two servers on one file, as two hosts each running memoir would: the adds go through
        # one, the searches through the other.
        db = Path(tmp) / "race.db"
        first, first_url = start_server(db, {"MEMOIR_EMBEDDINGS": "off"})
        second, second_url = start_server(db, {"MEMOIR_EMBEDDINGS": "off"})
        try:
            async with AsyncExitStack() as stack:
                (searcher,) = await clients(stack, first_url, 1)
                writers = await clients(stack, second_url, WRITERS)
                lost = await keyword_trials(writers, searcher, trials)
        finally:
            stop_server(first)
            stop_server(second)
    return lost


async def keyword_trials(writers: list[Client], searcher: Client, trials: int) -> int:
    lost = 0
    for trial in range(trials):
        user, word = f"racer{trial}", f"zq{trial:05d}x"  # a user of its own: the search also creates the index
        await call(writers[0], "add_memory", memory="Ava likes to ski", user_id=user)  # queued for the index
        await asyncio.gather(
            call(searcher, "search_memories", query="ski", retrieval_method="keyword", user_id=user),
            *(call(w, "add_memory", memory=f"Ava mentioned {word}{i} today", user_id=user) for i, w in enumerate(writers)),
        )
        for i in range(len(writers)):
            found = await call(searcher, "search_memories", query=f"{word}{i}", retrieval_method="keyword", user_id=user)
            lost += not any(f"{word}{i}" in r["memory"] for r in found["results"])
    return lost


async def import_race(import_size: int, adds: int) -> tuple[int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "race.db"
        proc, url = start_server(db, {})
        try:
            async with AsyncExitStack() as stack:
                pool = await clients(stack, url, adds + 1)
                return await import_trial(pool, db, Path(tmp), import_size, adds)
        finally:
            stop_server(proc)


async def import_trial(pool: list[Client], db: Path, tmp: Path, import_size: int, adds: int) -> tuple[int, int]:
    searcher = pool[0]
    await call(searcher, "add_memory", memory="Ava likes to ski")
    await call(searcher, "search_memories", query="skiing", retrieval_method="semantic")  # vectors loaded
    export = tmp / "import.jsonl"
    lines = [{"type": "memoir-export", "version": 1}]
    lines += [
        {"type": "memory", "memory_id": f"{i:012x}", "user_id": "default", "memory": f"Ava noted fact number {i}",
         "topics": [], "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}
        for i in range(import_size)
    ]
    export.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    subprocess.run(
        [sys.executable, "-m", "memoir.server.cli", "import", "--db", str(db), str(export)],
        check=True, capture_output=True, text=True,
    )
    words = [f"qv{i:03d}marmot" for i in range(adds)]
    await asyncio.gather(
        call(searcher, "search_memories", query="skiing", retrieval_method="semantic"),
        *(call(c, "add_memory", memory=f"Ava saw a {w} in the hills") for c, w in zip(pool[1:], words)),
    )
    lost_semantic = lost_hybrid = 0
    for w in words:
        text = f"Ava saw a {w} in the hills"
        semantic = await call(searcher, "search_memories", query=text, retrieval_method="semantic", limit=3)
        hybrid = await call(searcher, "search_memories", query=w, retrieval_method="hybrid", limit=3)
        lost_semantic += not any(r["memory"] == text for r in semantic["results"])
        lost_hybrid += not any(r["memory"] == text for r in hybrid["results"])
    return lost_semantic, lost_hybrid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--import-size", type=int, default=1500)
    parser.add_argument("--adds", type=int, default=20)
    args = parser.parse_args()
    lost = asyncio.run(keyword_race(args.trials))
    print(f"keyword race: {lost} of {args.trials * WRITERS} acknowledged adds unfound by a later keyword search")
    semantic, hybrid = asyncio.run(import_race(args.import_size, args.adds))
    print(
        f"import race: of {args.adds} adds racing a search after importing {args.import_size} memories, "
        f"{semantic} missing from semantic and {hybrid} from hybrid"
    )


if __name__ == "__main__":
    main()
