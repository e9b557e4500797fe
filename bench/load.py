"""Load on a real `memoir serve --transport http`: N concurrent MCP clients, a fixed number of mixed
operations, throughput and latency percentiles per N.

    python bench/load.py                          # --clients 1,4,16 --ops 1000
    python bench/load.py --clients 1,8 --ops 4000 --mode auto --env MEMOIR_EMBEDDINGS=off
    python bench/load.py --instances 2 --clients 32 --db postgresql://...   # two servers, one database

The server runs on 127.0.0.1 on a free port with a fresh temporary database (or --db), with
memoir's defaults unless --env says otherwise. With --instances N, N servers share the database
and client i talks to server i mod N; afterwards memories written through each server are looked
for through another one by every search method (--verify of them per server), and misses counted. Each run with N clients does --ops operations in total:
40% add_memory, 30% search_memories, 15% list_memories, 10% update_memory, 5% delete_memory,
each client on its own user plus a shared one. Latency is per tool call, as the client sees it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

READY = re.compile(r"memoir: serving http on (?P<url>http://\S+)")
WORDS = "ski tea chess paris violin garden sailing denver sushi jazz marathon python novels hiking".split()
MIX = [("add", 40), ("search", 30), ("list", 15), ("update", 10), ("delete", 5)]


def start_server(db: Path | str, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "memoir.server.cli", "serve", "--transport", "http", "--host", "127.0.0.1",
         "--port", "0", "--db", str(db)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("MEMOIR_")}, **env},
    )
    found: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if not found and (m := READY.search(line)):
                found.append(m["url"])
                ready.set()
            elif "Traceback" in line or "locked" in line:
                print(f"server: {line.rstrip()}", file=sys.stderr)
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(30) or not found:
        proc.kill()
        raise SystemExit("memoir serve did not start")
    return proc, found[0]


async def client_run(url: str, mode: str, index: int, ops: int, seed: int) -> tuple[list[float], int, list[str], list[str]]:
    rng = random.Random(seed * 1000 + index)
    user = f"load{seed}-{index}"
    kinds = [k for k, w in MIX for _ in range(w)]
    latencies: list[float] = []
    errors: list[str] = []
    mine: list[str] = []
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(60.0)) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            for _ in range(ops):
                kind = rng.choice(kinds)
                if kind in ("update", "delete") and not mine:
                    kind = "add"
                target_user = user if rng.random() < 0.8 else "shared"
                if kind == "add":
                    name, args = "add_memory", {
                        "memory": f"{user} likes {rng.choice(WORDS)} and {rng.choice(WORDS)}",
                        "topics": [rng.choice(WORDS)], "user_id": target_user,
                    }
                elif kind == "search":
                    name, args = "search_memories", {"query": f"who likes {rng.choice(WORDS)}", "user_id": target_user}
                elif kind == "list":
                    name, args = "list_memories", {"user_id": target_user, "limit": 20}
                elif kind == "update":
                    name, args = "update_memory", {"memory_id": rng.choice(mine), "memory": f"{user} now likes "
                                                   f"{rng.choice(WORDS)}", "user_id": user}
                else:
                    name, args = "delete_memory", {"memory_id": mine.pop(rng.randrange(len(mine))), "user_id": user}
                started = time.perf_counter()
                try:
                    result = await client.call_tool(name, args)
                except Exception as exc:  # noqa: BLE001 - counted, shown
                    errors.append(f"{name}: {type(exc).__name__}: {exc}")
                    continue
                latencies.append(time.perf_counter() - started)
                if result.is_error:
                    errors.append(f"{name}: {result.content[0].text[:200]}")
                elif name == "add_memory" and target_user == user:
                    mine.append(result.structured_content["memory_id"])
    return latencies, ops, errors, mine


async def verify(urls: list[str], mode: str, written: list[tuple[int, str]], per_server: int) -> tuple[int, int]:
    """Look for memories written through server k through server k+1, by every method: (looked, missed)."""
    looked = missed = 0
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(60.0)) as http, contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(Client(streamable_http_client(url, http_client=http), mode=mode)) for url in urls
        ]
        for k in range(len(urls)):
            mine = [m for server, m in written if server == k][:per_server]
            other = clients[(k + 1) % len(urls)]
            for memory_id_and_user in mine:
                memory_id, user_id = memory_id_and_user.split("|", 1)
                listed = await other.call_tool("list_memories", {"user_id": user_id, "limit": 100})
                if listed.is_error:
                    raise SystemExit(f"list_memories: {listed.content[0].text}")
                rows = {m["memory_id"]: m["memory"] for m in listed.structured_content["memories"]}
                if memory_id not in rows:
                    continue  # deleted or updated away by its writer meanwhile
                for method in ("keyword", "semantic", "hybrid"):
                    r = await other.call_tool("search_memories", {
                        "query": rows[memory_id], "user_id": user_id, "retrieval_method": method,
                        "limit": 50, "min_relevance": 0,
                    })
                    if r.is_error and "needs embeddings, which are off" in r.content[0].text:
                        continue
                    looked += 1
                    if r.is_error or memory_id not in {m["memory_id"] for m in r.structured_content["results"]}:
                        missed += 1
    return looked, missed


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def run(urls: list[str], mode: str, clients: int, ops: int, seed: int) -> dict[str, object]:
    per_client = [ops // clients + (1 if i < ops % clients else 0) for i in range(clients)]
    started = time.perf_counter()
    results = await asyncio.gather(
        *(client_run(urls[i % len(urls)], mode, i, n, seed) for i, n in enumerate(per_client))
    )
    elapsed = time.perf_counter() - started
    latencies = [x for r in results for x in r[0]]
    errors = [e for r in results for e in r[2]]
    return {
        "clients": clients, "ops": ops, "seconds": elapsed, "throughput": len(latencies) / elapsed,
        "p50": percentile(latencies, 50) * 1000, "p95": percentile(latencies, 95) * 1000,
        "p99": percentile(latencies, 99) * 1000, "mean": statistics.fmean(latencies) * 1000 if latencies else 0,
        "errors": errors,
        # (server, "memory_id|user") of what each client still had when it finished
        "written": [(i % len(urls), f"{m}|load{seed}-{i}") for i, r in enumerate(results) for m in r[3]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,4,16", help="comma-separated client counts (default 1,4,16)")
    parser.add_argument("--ops", type=int, default=1000, help="operations per run, split across the clients")
    parser.add_argument("--mode", choices=["legacy", "auto"], default="legacy",
                        help="protocol era: legacy = 2025-11-25 handshake (real hosts), auto = 2026-07-28")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="server environment")
    parser.add_argument("--warmup", type=int, default=20, help="untimed operations first (loads models)")
    parser.add_argument("--db", default="", help="database path or postgresql:// URL (default: a fresh temporary file)")
    parser.add_argument("--instances", type=int, default=1, help="servers sharing the database (default 1)")
    parser.add_argument("--verify", type=int, default=20, help="memories per server looked for through another one")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    counts = [int(c) for c in args.clients.split(",")]

    with tempfile.TemporaryDirectory(prefix="memoir-load-") as tmp:
        db = args.db or Path(tmp) / "load.db"
        servers = [start_server(db, env) for _ in range(args.instances)]
        urls = [url for _, url in servers]
        try:
            print(f"memoir serve --transport http at {', '.join(urls)}; mode {args.mode}; env {env or 'defaults'}; "
                  f"{os.cpu_count()} CPUs; database {'a temporary SQLite file' if not args.db else args.db.split('@')[-1]}")
            asyncio.run(run(urls, args.mode, len(urls), args.warmup, seed=0))
            print(f"{'clients':>7} {'ops':>6} {'seconds':>8} {'ops/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
                  f"{'errors':>6}")
            written: list[tuple[int, str]] = []
            for seed, n in enumerate(counts, start=1):
                r = asyncio.run(run(urls, args.mode, n, args.ops, seed))
                written += r["written"]  # type: ignore[arg-type]
                print(f"{r['clients']:>7} {r['ops']:>6} {r['seconds']:>8.2f} {r['throughput']:>8.1f} {r['p50']:>8.1f} "
                      f"{r['p95']:>8.1f} {r['p99']:>8.1f} {len(r['errors']):>6}", flush=True)
                for error in r["errors"][:5]:
                    print(f"        error: {error}")
            if len(urls) > 1 and args.verify:
                looked, missed = asyncio.run(verify(urls, args.mode, written, args.verify))
                print(f"written through one server, searched through another (keyword, semantic, hybrid): "
                      f"{looked} searches, {missed} missed")
        finally:
            for proc, _ in servers:
                proc.terminate()
            for proc, _ in servers:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    main()
