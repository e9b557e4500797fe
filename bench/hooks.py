"""How fast the host hooks are, as a host runs them: a cold process per call.

    python bench/hooks.py [--memories 10000] [--runs 21] [--db-dir DIR]

Builds (or reuses, with --db-dir) a store of N memories of one user with their embeddings,
then times, each in a fresh process exactly as Claude Code runs it (the console script, the
host's JSON on stdin):

- `memoir --version` through server/cli.py (the cold start of every other command);
- `memoir hook user-prompt` (embeddings on: hybrid search), cold (MEMOIR_HOOK_WARM=off: the
  model and the vectors loaded in the process) and warm (answered by the recall server the first
  cold run started);
- `memoir hook session-start`;
- `memoir hook stop` (returns once the background worker is started; with a key that points
  nowhere, so the worker fails fast; the next stop is timed once it has, so workers do not pile
  up on the CPU).

Prints p50 / p90 wall-clock milliseconds, the p50 of the process's CPU time (user + system, all
threads: it moves less with other load than the wall clock), and the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Not bench/ itself on the path: bench/secrets.py would shadow the standard library's `secrets`.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in ("", _HERE)]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(_HERE)  # last: `_common` and `scale` are found, `secrets` is the standard library's
from _common import loadavg, pct  # noqa: E402
from scale import facts, queries  # noqa: E402

USER = "bench"
MEMOIR = str(Path(sys.executable).with_name("memoir"))


async def build(db: Path, count: int) -> None:
    from memoir.memory.embeddings import load_embedder
    from memoir.memory.retrieval import Retriever
    from memoir.memory.store import Change, Store
    from memoir.memory.vectors import VectorIndex

    store = await Store.open(db, synchronous="OFF")
    try:
        have = await store.count(USER)
        stream = facts()
        for _ in range(have):
            next(stream)
        for i in range(have, count):
            await store.add(USER, next(stream), ["bench"], change=Change(actor="cli"))
            if (i + 1) % 2000 == 0:
                print(f"  {i + 1} memories", file=sys.stderr, flush=True)
        vectors = VectorIndex(store, lambda: load_embedder("default"))
        started = time.perf_counter()
        await Retriever(store, vectors).search(USER, "warm up", method="semantic", limit=1)  # embeds every memory
        await vectors.close()
        print(f"  embeddings ready in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    finally:
        await store.close()


def timed(args: list[str], stdin: str, env: dict[str, str]) -> tuple[float, float, str]:
    """Wall milliseconds, CPU milliseconds (user + system, all threads) and the output of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, env=env, timeout=60)
    elapsed = (time.perf_counter() - started) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000
    if done.returncode != 0:
        raise SystemExit(f"{args} failed: {done.stderr}")
    return elapsed, cpu, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--db-dir", help="keep the store here and reuse it")
    args = parser.parse_args()
    folder = Path(args.db_dir) if args.db_dir else Path(tempfile.mkdtemp(prefix="memoir-hooks-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / f"hooks-{args.memories}.db"
    print(f"store: {db}", file=sys.stderr)
    asyncio.run(build(db, args.memories))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMOIR_", "ANTHROPIC_"))}
    env.update(MEMOIR_DB=str(db), MEMOIR_USER_ID=USER, MEMOIR_HOOK_LOG=str(folder / "hooks.log"),
               MEMOIR_HOOK_WARM_IDLE="15")  # the recall server the bench starts goes away soon after
    transcript = folder / "transcript.jsonl"
    transcript.write_text(json.dumps({"type": "user", "message": {"role": "user", "content": "I like tea"}}) + "\n")
    prompts = queries(args.runs)

    def log_text() -> str:
        try:
            return (folder / "hooks.log").read_text()
        except FileNotFoundError:
            return ""

    rows = []

    def measure(label: str, argv: list[str], stdins: list[str], extra: dict[str, str] | None = None) -> list[float]:
        times, cpus = [], []
        for stdin in stdins:
            ms, cpu, _ = timed(argv, stdin, {**env, **(extra or {})})
            times.append(ms)
            cpus.append(cpu)
            if argv[-1] == "stop":  # let that worker finish (it fails: no API there) before timing the next stop
                deadline = time.monotonic() + 30
                session = json.loads(stdin)["session_id"]
                while time.monotonic() < deadline and f"session {session}: extraction failed" not in log_text():
                    time.sleep(0.05)
        rows.append((label, pct(times, 0.5), pct(times, 0.9), pct(cpus, 0.5)))
        return times

    measure("memoir --version (server/cli.py: every other command)", [sys.executable, "-m", "memoir.server.cli", "--version"],
            [""] * args.runs)
    asks = [json.dumps({"session_id": "b", "hook_event_name": "UserPromptSubmit", "prompt": p}) for p in prompts]
    measure("memoir hook user-prompt, cold (MEMOIR_HOOK_WARM=off)", [MEMOIR, "hook", "user-prompt"], asks,
            {"MEMOIR_HOOK_WARM": "off"})
    # The first warm-mode prompt runs cold and starts the recall server; wait for it, then measure.
    timed([MEMOIR, "hook", "user-prompt"], asks[0], env)
    socket_path = db.with_name(db.name + ".hooks") / "recall.sock"
    deadline = time.monotonic() + 60
    while not socket_path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    measure("memoir hook user-prompt, warm (recall server up)", [MEMOIR, "hook", "user-prompt"], asks)
    measure("memoir hook session-start", [MEMOIR, "hook", "session-start"],
            [json.dumps({"session_id": "b", "hook_event_name": "SessionStart"})] * args.runs)
    measure("memoir hook stop (returns; worker detached)", [MEMOIR, "hook", "stop"],
            [json.dumps({"session_id": f"b{time.time_ns()}-{i}", "transcript_path": str(transcript), "hook_event_name": "Stop"})
             for i in range(args.runs)],
            {"ANTHROPIC_API_KEY": "bench", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"})
    _, _, sample = timed([MEMOIR, "hook", "user-prompt"], json.dumps({"prompt": prompts[0]}), {**env, "MEMOIR_HOOK_WARM": "off"})
    print(f"\n{args.memories:,} memories, {args.runs} cold processes each, {loadavg()}")
    print(f"{'command':58} {'p50 ms':>8} {'p90 ms':>8} {'CPU p50':>8}")
    for label, p50, p90, cpu in rows:
        print(f"{label:58} {p50:8.0f} {p90:8.0f} {cpu:8.0f}")
    print(f"\nuser-prompt for {prompts[0]!r}:\n{sample}")


if __name__ == "__main__":
    main()
