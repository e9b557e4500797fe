"""Scale benchmark: one user with 1k / 10k / 100k memories, through the MCP tools.

Measures, with embeddings off (MEMOIR_EMBEDDINGS=off) and on (the default):
- `add_memory` calls/s over stdio, one call at a time and with several calls in flight on one
  session (`--inflight`, default 8);
- `search_memories` p50/p95 per method (keyword, semantic, hybrid, last_n; limit 10) over stdio
  and in-process (`Client(build_server(app))`), at each size;
- start-up: a fresh `memoir serve` process until the first answered `tools/list`;
- RSS of the server process (/proc/<pid>/status VmRSS, VmHWM): idle before the model loads,
  and peak after.

The database is built once per embeddings setting and grown incrementally: search is measured
at each size on the way up. The memories are synthetic short facts (templates x names x places x
hobbies ...), generated deterministically (seed 7).

    /work/venv/bin/python bench/scale.py                       # 1k, 10k, 100k: ~10-15 minutes on 2 cores
    /work/venv/bin/python bench/scale.py --sizes 1000,10000    # ~1-2 minutes
    /work/venv/bin/python bench/scale.py --embeddings off      # only one setting
    /work/venv/bin/python bench/scale.py --sizes 10000 --db-dir /tmp/scale   # build and keep; run again to measure only
    /work/venv/bin/python bench/scale.py --db 'postgresql://memoir@/scale_{embeddings}?host=/run/postgresql'
        # PostgreSQL: one database per embeddings setting ({embeddings}: off / on), empty or kept from a run before
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mcp import Client  # noqa: E402

from _common import child_pids, loadavg, log, memoir_stdio, pct, rss_mb  # noqa: E402

TARGETS = {
    "search_keyword_10k": 2.0,
    "search_hybrid_10k": 6.0,
    "search_hybrid_100k": 25.0,
    "add_off": 1000.0,
    "add_on": 200.0,
    "startup": 1.0,
    "idle_rss": 120.0,
}
USER = "scale-user"

# -- synthetic facts ---------------------------------------------------------------------------------

NAMES = """Ava Liam Noah Emma Olivia Mia Lucas Sofia Ethan Zoe Mateo Chloe Amir Priya Kenji Yuki Omar Lena
Jonas Freya Diego Lucia Ravi Anika Tomas Ingrid Kofi Amara Hugo Elise Marco Giulia Sven Astrid Pablo Rosa
Ivan Nadia Felix Clara Theo Maya Oscar Iris Leo Nora Hana Sami Dara Jun""".split()
PLACES = """Lisbon Berlin Toronto Osaka Nairobi Denver Seattle Porto Lyon Krakow Austin Dublin Melbourne
Oslo Seville Bristol Utrecht Halifax Boulder Kyoto Cusco Tbilisi Bergen Ghent Graz Turin Split Bruges
Malmo Quebec""".split()
HOBBIES = """rock climbing, sourdough baking, trail running, watercolour painting, birdwatching, chess,
pottery, salsa dancing, fly fishing, woodworking, film photography, beekeeping, kayaking, knitting,
astronomy, gardening, surfing, calligraphy, bouldering, playing the cello, composting, cycling,
origami, scuba diving, skateboarding, yoga, archery, fencing, sailing, judo""".replace("\n", " ").split(", ")
FOODS = """ramen, peanuts, shellfish, dark chocolate, lasagne, kimchi, falafel, mango, goat cheese, sushi,
pho, tacos, paella, dumplings, gluten, strawberries, lentil soup, oysters, pesto, tiramisu""".replace("\n", " ").split(", ")
JOBS = """nurse, software engineer, carpenter, teacher, architect, pharmacist, pilot, barista, lawyer,
data analyst, chef, physiotherapist, journalist, electrician, veterinarian, translator, accountant,
graphic designer, marine biologist, firefighter""".replace("\n", " ").split(", ")
PETS = "dog cat parrot rabbit tortoise hamster ferret goldfish".split()
PET_NAMES = "Biscuit Pepper Mochi Luna Rufus Ziggy Olive Pickles Nala Bruno".split()
LANGS = "Japanese Portuguese Swahili Korean Italian Greek Arabic Dutch Finnish Spanish".split()
MONTHS = "January February March April May June July August September October November December".split()
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
COLORS = "red blue green silver black white yellow".split()

TEMPLATES = [
    "{n} lives in {p} with {n2}.",
    "{n} works as a {j} in {p}.",
    "{n} enjoys {h} on weekends.",
    "{n}'s favourite food is {f}.",
    "{n} is allergic to {f}.",
    "{n} has a {pet} called {pn}.",
    "{n} is learning {l} for a trip to {p}.",
    "{n} visited {p} in {m} {y} and loved it.",
    "{n} took up {h} in {y}.",
    "{n} meets {n2} for {h} every {d}.",
    "{n} and {n2} met in {p} while studying to be a {j}.",
    "{n} drives a {c} car and hates parking in {p}.",
    "{n}'s birthday is on {dd} {m}.",
    "{n} wants to move to {p} next year.",
    "{n} cooked {f} for {n2}'s birthday party.",
    "{n} is training for a half marathon in {p} in {m}.",
]
QUERIES = [
    "Where does {n} live?",
    "What does {n} do for work?",
    "What are {n}'s hobbies?",
    "Is {n} allergic to anything?",
    "Does {n} have a pet?",
    "Which language is {n} learning?",
    "When is {n}'s birthday?",
    "What food does {n} like?",
    "Who did {n} meet in {p}?",
    "Has {n} been to {p}?",
]


def facts(seed: int = 7):
    """An endless deterministic stream of short facts about many people."""
    rng = random.Random(seed)
    while True:
        yield rng.choice(TEMPLATES).format(
            n=rng.choice(NAMES), n2=rng.choice(NAMES), p=rng.choice(PLACES), h=rng.choice(HOBBIES),
            f=rng.choice(FOODS), j=rng.choice(JOBS), pet=rng.choice(PETS), pn=rng.choice(PET_NAMES),
            l=rng.choice(LANGS), m=rng.choice(MONTHS), y=rng.randint(2005, 2024), d=rng.choice(DAYS),
            c=rng.choice(COLORS), dd=rng.randint(1, 28),
        )


def queries(n: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(QUERIES).format(n=rng.choice(NAMES), p=rng.choice(PLACES)) for _ in range(n)]


# -- measuring ------------------------------------------------------------------------------------------


def existing_memories(db: Path | str) -> int:
    """How many memories of USER a kept database (--db-dir, or --db) already holds."""
    if isinstance(db, str):
        import psycopg

        with psycopg.connect(db) as conn:
            if not conn.execute("SELECT to_regclass('memories') IS NOT NULL").fetchone()[0]:
                return 0
            return conn.execute("SELECT count(*) FROM memories WHERE user_id = %s", (USER,)).fetchone()[0]
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM memories WHERE user_id = ?", (USER,)).fetchone()[0]


def server_pid() -> int | None:
    pids = child_pids("memoir.server.cli")
    return pids[-1] if pids else None


async def add_sequential(client: Client, stream, count: int) -> float:
    t0 = time.perf_counter()
    for i in range(count):
        r = await client.call_tool("add_memory", {"memory": next(stream), "user_id": USER})
        if r.is_error:
            raise SystemExit(f"add_memory failed: {r.content[0].text}")
        if (i + 1) % 5000 == 0:
            log(f"    {i + 1}/{count} sequential adds ({(i + 1) / (time.perf_counter() - t0):.0f}/s)")
    return count / (time.perf_counter() - t0)


async def add_inflight(client: Client, stream, count: int, inflight: int) -> float:
    texts = [next(stream) for _ in range(count)]
    queue = iter(texts)

    async def worker() -> None:
        for text in queue:
            r = await client.call_tool("add_memory", {"memory": text, "user_id": USER})
            if r.is_error:
                raise SystemExit(f"add_memory failed: {r.content[0].text}")

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return count / (time.perf_counter() - t0)


async def search_latency(client: Client, method: str, qs: list[str]) -> tuple[float, float, str]:
    args = {"user_id": USER, "retrieval_method": method, "limit": 10}
    await client.call_tool("search_memories", {**args, "query": "warm up"})  # unscored (loads vectors)
    times = []
    ran = ""
    for q in qs:
        t0 = time.perf_counter()
        r = await client.call_tool("search_memories", {**args, "query": q} if method not in ("last_n", "first_n") else args)
        times.append((time.perf_counter() - t0) * 1000)
        if r.is_error:
            raise RuntimeError(r.content[0].text)
        ran = r.structured_content["retrieval_method"]
    return pct(times, .5), pct(times, .95), ran


async def in_process_search(db: Path | str, embeddings: str, methods: list[str], qs: list[str]) -> dict[str, tuple[float, float, str]]:
    from memoir.server.app import build_server, running_app
    from memoir.server.settings import Settings

    settings = Settings(db_path=db, embeddings=embeddings)  # type: ignore[arg-type]
    async with running_app(settings) as app, Client(build_server(app), mode="legacy") as client:
        return {method: await search_latency(client, method, qs) for method in methods}


async def startup(db: Path | str, env: dict[str, str], runs: int) -> list[tuple[float, float]]:
    """Seconds from spawn to the first answered tools/list, and the idle VmRSS then, per fresh process."""
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        async with Client(memoir_stdio(db, env), mode="legacy") as client:
            await client.list_tools()
            secs = time.perf_counter() - t0
            pid = server_pid()
            out.append((secs, rss_mb(pid)[0] if pid else float("nan")))
    return out


def fmt_target(value: float, target: float, higher_is_better: bool) -> str:
    ok = value >= target if higher_is_better else value <= target
    sign = ">=" if higher_is_better else "<="
    return f"(target {sign} {target:g}: {'met' if ok else 'MISSED'})"


# -- the run -----------------------------------------------------------------------------------------


async def run_setting(embeddings: str, sizes: list[int], tmp: Path, args: argparse.Namespace, results: dict) -> None:
    env = {"MEMOIR_EMBEDDINGS": "off"} if embeddings == "off" else {}
    db: Path | str = args.db.format(embeddings=embeddings) if args.db else tmp / f"scale-{embeddings}.db"
    methods = ["keyword", "semantic", "hybrid", "last_n"] if embeddings == "on" else ["keyword", "hybrid", "last_n"]
    qs = queries(args.queries)
    stream = facts()
    print(f"\n== embeddings {embeddings} ==")

    # Start-up and idle RSS on the empty database, fresh processes.
    starts = await startup(db, env, args.startup_runs)
    first, idle = starts[0]
    rest = sorted(s for s, _ in starts[1:]) or [first]
    print(f"start-up to first tools/list: first {first:.2f} s, median of next {len(starts) - 1}: {pct(rest, .5):.2f} s "
          f"{fmt_target(first, TARGETS['startup'], False)}; idle VmRSS {idle:.0f} MB {fmt_target(idle, TARGETS['idle_rss'], False)}")
    results[(embeddings, "startup")] = first
    results[(embeddings, "idle_rss")] = idle

    current = existing_memories(db)
    if current:
        log(f"  [{embeddings}] {db} already holds {current} memories of {USER}: growing from there")
        for _ in range(current):  # continue the same stream of facts
            next(stream)
    async with Client(memoir_stdio(db, env), mode="legacy") as client:
        pid = server_pid()
        assert pid, "cannot find the memoir server process"
        header = (f"{'size':>7} {'add seq/s':>10} {f'add x{args.inflight}/s':>10} | "
                  + " ".join(f"{m + ' stdio':>18} {m + ' in-proc':>18}" for m in methods)
                  + f" | {'RSS MB':>7} {'HWM MB':>7}")
        rows = []
        for size in sizes:
            if size < current:
                log(f"  [{embeddings}] skipping {size}: the database already holds {current}")
                continue
            need = size - current
            block = min(args.inflight_block, need // 2)
            log(f"  [{embeddings}] growing {current} -> {size} ({need - block} one at a time, {block} with {args.inflight} in flight)")
            seq = await add_sequential(client, stream, need - block) if need - block > 0 else float("nan")
            conc = await add_inflight(client, stream, block, args.inflight) if block else float("nan")
            adds = results.setdefault((embeddings, "adds"), {"seq": [0, 0.0], "conc": [0, 0.0]})
            if need - block > 0:
                adds["seq"][0] += need - block
                adds["seq"][1] += (need - block) / seq
            if block:
                adds["conc"][0] += block
                adds["conc"][1] += block / conc
            current = size
            if embeddings == "on":
                # The server embeds what was written in the background; a semantic search waits
                # for that (vectors.settled). Waiting here measures every method on a server at
                # rest, not keyword searches racing the tail of a bulk load.
                t_settle = time.perf_counter()
                await client.call_tool("search_memories", {"user_id": USER, "query": "settle", "retrieval_method": "semantic"})
                log(f"  [{embeddings}] the server finished embedding the writes {time.perf_counter() - t_settle:.2f} s after the last add")
            log(f"  [{embeddings}] searching at {size}: stdio")
            stdio = {m: await search_latency(client, m, qs) for m in methods}
            rss, hwm = rss_mb(pid)
            log(f"  [{embeddings}] searching at {size}: in-process")
            inproc = await in_process_search(db, "off" if embeddings == "off" else "on", methods, qs)
            results[(embeddings, size)] = {"seq": seq, "conc": conc, "stdio": stdio, "inproc": inproc, "rss": rss, "hwm": hwm}
            cells = " ".join(f"{stdio[m][0]:>8.2f}/{stdio[m][1]:<9.2f} {inproc[m][0]:>8.2f}/{inproc[m][1]:<9.2f}" for m in methods)
            rows.append(f"{size:>7} {seq:>10.0f} {conc:>10.0f} | {cells} | {rss:>7.0f} {hwm:>7.0f}")
            print(f"[{size}] add {seq:.0f}/s one at a time, {conc:.0f}/s with {args.inflight} in flight; "
                  f"search p50/p95 ms: " + ", ".join(f"{m} stdio {stdio[m][0]:.2f}/{stdio[m][1]:.2f} "
                  f"in-proc {inproc[m][0]:.2f}/{inproc[m][1]:.2f} (ran {stdio[m][2]})" for m in methods)
                  + f"; server VmRSS {rss:.0f} MB, VmHWM {hwm:.0f} MB; {loadavg()}", flush=True)
        print(f"\nsummary, embeddings {embeddings} (search p50/p95 ms, limit 10, {len(qs)} queries per method):")
        print(header)
        print("\n".join(rows))

    if embeddings == "on" and sizes:
        # A fresh process on the full database: idle before the model loads, peak after a hybrid search.
        t0 = time.perf_counter()
        async with Client(memoir_stdio(db, env), mode="legacy") as client:
            await client.list_tools()
            secs = time.perf_counter() - t0
            pid = server_pid()
            idle_rss, _ = rss_mb(pid)
            t1 = time.perf_counter()
            await client.call_tool("search_memories", {"user_id": USER, "query": qs[0], "retrieval_method": "hybrid"})
            first_search = time.perf_counter() - t1
            rss, hwm = rss_mb(pid)
        print(f"fresh process on the {sizes[-1]} db: first tools/list {secs:.2f} s, idle VmRSS {idle_rss:.0f} MB; "
              f"first hybrid search (loads model + {sizes[-1]} vectors) {first_search:.2f} s; then VmRSS {rss:.0f} MB, peak VmHWM {hwm:.0f} MB")
        results[("on", "peak")] = (idle_rss, rss, hwm, first_search)


def print_targets(results: dict, sizes: list[int]) -> None:
    print("\n== targets ==")

    def line(label: str, value: float | None, target: float, higher: bool, unit: str) -> None:
        if value is None:
            print(f"{label:<62} not measured")
        else:
            print(f"{label:<62} {value:>9.2f} {unit:<6} {fmt_target(value, target, higher)}")

    def get(key, *path):
        v = results.get(key)
        for p in path:
            if v is None:
                return None
            v = v[p] if not isinstance(v, dict) else v.get(p)
        return v

    line("search p50 stdio keyword @10k", get(("on", 10000), "stdio", "keyword", 0) or get(("off", 10000), "stdio", "keyword", 0), 2.0, False, "ms")
    line("search p50 stdio hybrid @10k", get(("on", 10000), "stdio", "hybrid", 0), 6.0, False, "ms")
    line("search p50 stdio hybrid @100k", get(("on", 100000), "stdio", "hybrid", 0), 25.0, False, "ms")
    for emb, target in (("off", 1000.0), ("on", 200.0)):
        adds = results.get((emb, "adds"))
        if adds:
            for kind, label in (("seq", "one at a time"), ("conc", "several in flight")):
                n, secs = adds[kind]
                line(f"add_memory/s stdio, embeddings {emb}, {label} (all {n} adds)", n / secs if secs else None, target, True, "/s")
    for emb in ("off", "on"):
        if (emb, "startup") in results:
            line(f"first tools/list after start, embeddings {emb}", results[(emb, "startup")], 1.0, False, "s")
            line(f"idle VmRSS, embeddings {emb}", results[(emb, "idle_rss")], 120.0, False, "MB")


async def main_async(args: argparse.Namespace) -> None:
    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    settings = [s for s in ("off", "on") if args.embeddings in (s, "both")]
    print(f"scale bench: sizes {sizes}, embeddings {settings}, {args.queries} queries per method, "
          f"{args.inflight} in flight for the concurrent adds (blocks of up to {args.inflight_block}); one user; {loadavg()}")
    results: dict = {}
    with contextlib.ExitStack() as stack:
        if args.db_dir:
            where = Path(args.db_dir)
            where.mkdir(parents=True, exist_ok=True)
        else:
            where = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="memoir-scale-", dir=args.tmpdir or None)))
        for emb in settings:
            await run_setting(emb, sizes, where, args, results)
    print_targets(results, sizes)
    print(f"finished; {loadavg()} (other processes on this 2-core machine skew the numbers; rerun when idle)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument("--embeddings", choices=("off", "on", "both"), default="both")
    p.add_argument("--queries", type=int, default=100, help="queries per method and size")
    p.add_argument("--inflight", type=int, default=8, help="concurrent add_memory calls on one session")
    p.add_argument("--inflight-block", type=int, default=1000, help="adds per size done with calls in flight")
    p.add_argument("--startup-runs", type=int, default=5)
    p.add_argument("--tmpdir", default="", help="where the temporary databases go")
    p.add_argument("--db", default="", help="a PostgreSQL URL instead of SQLite files; {embeddings} in it becomes "
                   "off / on, one database per setting (each empty, or kept from an earlier run: it grows from there)")
    p.add_argument("--db-dir", default="", help="keep the databases here; a second run on the same sizes grows "
                   "nothing and only measures (e.g. again on an idle machine)")
    args = p.parse_args()
    if args.db and args.embeddings == "both" and "{embeddings}" not in args.db:
        p.error("--db needs {embeddings} in the URL to keep the two settings apart, or --embeddings off|on")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
