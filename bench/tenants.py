"""Tenants benchmark: many users with a few memories each in one SQLite file, through the MCP tools.

For each size (default 1,000 and 10,000 users, 3 memories each, synthetic facts of bench/scale.py):
- ingest every user's memories with `add_memory` over stdio (8 calls in flight);
- every user outside the sample searched once (keyword), as in a store in use: the per-user
  FTS5 index of 649139a exists only for users searched once, and the new index indexes a
  user's queued memories at their first search;
- the first search of each sampled user: `search_memories` over stdio for users never searched before,
  one call per user (keyword on one half of a sample, hybrid on the other), p50 / p99;
- the database: opening it (`Store.open` of the filled file, in this process, 5 runs) and a fresh
  `memoir serve` until its first answered `tools/list`;
- size: the file, and the keyword index's share per user (SQLite's dbstat: the pages of the
  index's tables and their indexes, and of FTS5 tables when the memoir measured has them).

    /work/venv/bin/python bench/tenants.py                         # 1k and 10k users: ~3 minutes
    /work/venv/bin/python bench/tenants.py --users 1000 --sample 500
    /work/venv/bin/python bench/tenants.py --embeddings off        # keyword only

It measures whichever memoir is importable, so the same script measures an older checkout from
that checkout's venv (the per-user FTS5 index of 649139a: its first searches create the tables).
Bars (issue 12, part 1): at 10,000 users first search p50 <= 3 ms, p99 <= 10 ms, opening <= 200 ms,
index <= 2 KB per user.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mcp import Client  # noqa: E402

from _common import loadavg, log, memoir_stdio, pct  # noqa: E402
from scale import facts, queries  # noqa: E402

INFLIGHT = 8


def user(i: int) -> str:
    return f"tenant-{i:06d}"


async def ingest(client: Client, users: int, per_user: int) -> float:
    stream = facts()
    jobs = iter([(user(u), next(stream)) for u in range(users) for _ in range(per_user)])

    async def worker() -> None:
        for user_id, text in jobs:
            r = await client.call_tool("add_memory", {"memory": text, "user_id": user_id})
            if r.is_error:
                raise SystemExit(f"add_memory failed: {r.content[0].text}")

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(INFLIGHT)))
    return users * per_user / (time.perf_counter() - t0)


async def first_searches(client: Client, user_ids: list[str], method: str) -> list[float]:
    times = []
    for user_id, query in zip(user_ids, queries(len(user_ids))):
        t0 = time.perf_counter()
        r = await client.call_tool(
            "search_memories", {"user_id": user_id, "query": query, "retrieval_method": method, "limit": 10}
        )
        times.append((time.perf_counter() - t0) * 1000)
        if r.is_error:
            raise SystemExit(f"search_memories failed: {r.content[0].text}")
    return times


def index_bytes(db: Path) -> tuple[int, dict[str, int]]:
    """Bytes of the keyword index's tables (and their indexes), per table."""
    with sqlite3.connect(db) as conn:
        tables = {
            name: tbl for name, tbl in conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')")
        }
        sizes: dict[str, int] = {}
        for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
            owner = tables.get(name, name)
            if owner.startswith(("keyword_", "fts_")):
                key = "fts_user_* (per-user FTS5)" if owner.startswith("fts_user_") else owner
                sizes[key] = sizes.get(key, 0) + int(size)
    return sum(sizes.values()), sizes


async def open_ms(db: Path, runs: int = 5) -> list[float]:
    from memoir.memory.store import Store

    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        store = await Store.open(db)
        out.append((time.perf_counter() - t0) * 1000)
        await store.close()
    return out


async def startup_ms(db: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    async with Client(memoir_stdio(db, env), mode="legacy") as client:
        await client.list_tools()
        return (time.perf_counter() - t0) * 1000


async def run(users: int, args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    db = tmp / f"tenants-{users}.db"
    env = {"MEMOIR_EMBEDDINGS": args.embeddings}
    methods = ["keyword", "hybrid"] if args.embeddings == "on" else ["keyword"]
    sample = random.Random(3).sample(range(users), min(args.sample * len(methods), users))
    out: dict[str, object] = {"users": users}
    async with Client(memoir_stdio(db, env), mode="legacy") as client:
        log(f"[{users} users] ingesting {users * args.per_user} memories ({INFLIGHT} in flight)")
        out["adds/s"] = await ingest(client, users, args.per_user)
        chosen_all = set(sample)
        others = [user(u) for u in range(users) if u not in chosen_all]
        log(f"[{users} users] one keyword search for each of the {len(others)} other users")
        t0 = time.perf_counter()
        await first_searches(client, others, "keyword")
        out["warm-up s"] = time.perf_counter() - t0
        for k, method in enumerate(methods):
            chosen = [user(u) for u in sample[k::len(methods)]]
            log(f"[{users} users] first {method} search of {len(chosen)} users")
            times = await first_searches(client, chosen, method)
            out[method] = (pct(times, .5), pct(times, .99), len(times))
    total, per_table = index_bytes(db)
    out["file MB"] = db.stat().st_size / 1e6
    out["index B/user"] = total / users
    out["index tables"] = per_table
    out["open ms"] = await open_ms(db)
    out["startup ms"] = await startup_ms(db, env)
    return out


async def main_async(args: argparse.Namespace) -> None:
    import memoir.memory.store as store_module

    log(f"memoir from {Path(store_module.__file__).parent.parent}")
    with tempfile.TemporaryDirectory(prefix="memoir-tenants-") as tmp:
        results = [await run(n, args, Path(tmp)) for n in args.users]
    print(f"\n{args.per_user} memories per user, embeddings {args.embeddings}; {loadavg()}")
    header = ("| users | first search p50 / p99 ms (n) | open ms (min / median of 5) | serve to tools/list ms | file MB"
              " | index B/user | adds/s | other users' first searches, s |")
    print(header)
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        searches = "; ".join(
            f"{m} {r[m][0]:.2f} / {r[m][1]:.2f} ({r[m][2]})" for m in ("keyword", "hybrid") if m in r  # type: ignore[index]
        )
        opens = sorted(r["open ms"])  # type: ignore[arg-type]
        print(
            f"| {r['users']:,} | {searches} | {opens[0]:.1f} / {opens[len(opens) // 2]:.1f} | {r['startup ms']:.0f} |"
            f" {r['file MB']:.1f} | {r['index B/user']:.0f} | {r['adds/s']:.0f} | {r['warm-up s']:.1f} |"
        )
    for r in results:
        print(f"index tables at {r['users']:,} users: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in r["index tables"].items()))  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 10000])
    parser.add_argument("--per-user", type=int, default=3)
    parser.add_argument("--sample", type=int, default=500, help="users whose first search is timed, per method")
    parser.add_argument("--embeddings", choices=["on", "off"], default="on")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
