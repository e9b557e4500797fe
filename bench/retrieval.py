"""LoCoMo retrieval benchmark through the product: MCP tools over stdio.

Spawns `memoir serve --db <tmp>` with the SDK's stdio client, stores every dialog turn of
locomo-dev.json with `add_memory` (one user_id per conversation, text
"[<session date_time>] <speaker>: <text>", memory_id -> dia_id kept), then runs every question
through `search_memories` (limit 25) for each method and scores it as ../shared/data/README.md
describes: per category (1-4, and 5 separately) and overall 1-4, hit@1/5/10, frac@5/10/25
(frac also over 1-5), MRR, and the client-measured round-trip latency p50/p95.

    /work/venv/bin/python bench/retrieval.py                          # all questions, keyword/semantic/hybrid
    /work/venv/bin/python bench/retrieval.py --limit-questions 30     # quick: 30 questions per conversation
    /work/venv/bin/python bench/retrieval.py --embeddings off         # hybrid falls back to keyword
    /work/venv/bin/python bench/retrieval.py --store observations     # one LoCoMo fact per memory
    /work/venv/bin/python bench/retrieval.py --min-relevance 0        # no relevance threshold

`--store observations` stores LoCoMo's `observation` facts instead of the turns (text
"[<session date_time>] <fact>", one user per conversation): a returned fact is a hit when its
source turns include an evidence turn, frac@k counts the evidence turns covered by the union of
the top k facts' sources, and the ceiling (questions with an evidence turn that some fact covers)
is printed. Searches use the server's default `min_relevance` unless `--min-relevance` is given.

Scoring notes: questions whose evidence names no turn after the README's id repair are left
out (their count is printed); MRR is 1/rank of the first evidence turn within the top 25, else 0.
Data: `MEMOIR_LOCOMO` or ../shared/data/locomo-dev.json next to the repo.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mcp import Client  # noqa: E402

from _common import Conversation, Question, load_locomo, loadavg, log, memoir_stdio, pct  # noqa: E402

LIMIT = 25
KS_HIT = (1, 5, 10)
KS_FRAC = (5, 10, 25)
GROUPS = [("1", {1}), ("2", {2}), ("3", {3}), ("4", {4}), ("1-4", {1, 2, 3, 4}), ("5", {5}), ("1-5", {1, 2, 3, 4, 5})]
CATEGORY_NAMES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}


class Scored:
    def __init__(self, q: Question, ranked: list[set[str]], ms: float, method_ran: str) -> None:
        """`ranked`: each result's turn ids (one for a turn; a fact's source turns)."""
        ev = set(q.evidence)
        self.category = q.category
        self.ms = ms
        self.method_ran = method_ran
        self.hit = {k: any(d & ev for d in ranked[:k]) for k in KS_HIT}
        self.frac = {k: len(ev & set().union(*ranked[:k])) / len(ev) for k in KS_FRAC}
        first = next((i for i, d in enumerate(ranked) if d & ev), None)
        self.rr = 0.0 if first is None else 1.0 / (first + 1)


async def ingest(client: Client, convs: list[Conversation], store: str) -> tuple[dict[str, set[str]], int, float]:
    """Every turn (or fact) -> one add_memory call, one at a time. Returns memory_id -> turn ids, calls, seconds."""
    to_dia: dict[str, set[str]] = {}
    calls = 0
    t0 = time.perf_counter()
    for conv in convs:
        items = [(t.memory, {t.dia_id}) for t in conv.turns] if store == "turns" else [(f.memory, set(f.sources)) for f in conv.facts]
        for memory, dia_ids in items:
            r = await client.call_tool("add_memory", {"memory": memory, "user_id": conv.sample_id})
            if r.is_error:
                raise SystemExit(f"add_memory failed on {conv.sample_id} {sorted(dia_ids)}: {r.content[0].text}")
            to_dia[r.structured_content["memory_id"]] = dia_ids
            calls += 1
        log(f"  ingested {conv.sample_id}: {len(items)} {store} ({calls / (time.perf_counter() - t0):.0f} calls/s so far)")
    return to_dia, calls, time.perf_counter() - t0


async def search(
    client: Client, user: str, query: str, method: str, min_relevance: float | None = None
) -> tuple[dict, float]:
    args = {"query": query, "user_id": user, "retrieval_method": method, "limit": LIMIT}
    if min_relevance is not None:
        args["min_relevance"] = min_relevance
    t0 = time.perf_counter()
    r = await client.call_tool("search_memories", args)
    ms = (time.perf_counter() - t0) * 1000
    if r.is_error:
        raise RuntimeError(r.content[0].text if r.content else "search_memories failed")
    return r.structured_content, ms


def table(method: str, scored: list[Scored]) -> str:
    head = f"{'cat':<5}{'name':<12}{'n':>5} {'hit@1':>6}{'hit@5':>6}{'hit@10':>7} {'frac@5':>7}{'frac@10':>8}{'frac@25':>8} {'MRR':>6} {'p50 ms':>7}{'p95 ms':>7}"
    lines = [f"method={method}", head, "-" * len(head)]
    for label, cats in GROUPS:
        rows = [s for s in scored if s.category in cats]
        if not rows:
            continue
        n = len(rows)
        name = CATEGORY_NAMES.get(int(label), "") if label.isdigit() else ("overall" if label == "1-4" else "all")
        hits = "".join(f"{100 * sum(s.hit[k] for s in rows) / n:>{6 if k < 10 else 7}.1f}" for k in KS_HIT)
        fracs = "".join(f"{100 * sum(s.frac[k] for s in rows) / n:>{7 if k == 5 else 8}.1f}" for k in KS_FRAC)
        mrr = 100 * sum(s.rr for s in rows) / n
        ms = [s.ms for s in rows]
        lines.append(f"{label:<5}{name:<12}{n:>5} {hits} {fracs} {mrr:>6.1f} {pct(ms, .5):>7.1f}{pct(ms, .95):>7.1f}")
    ran = collections.Counter(s.method_ran for s in scored)
    lines.append("retrieval_method reported: " + ", ".join(f"{k} x{v}" for k, v in ran.items()))
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> None:
    convs = load_locomo()
    if args.conversations:
        wanted = set(args.conversations.split(","))
        convs = [c for c in convs if c.sample_id in wanted]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    questions: list[tuple[Conversation, Question]] = []
    dropped = collections.Counter()
    for conv in convs:
        qs = conv.questions[: args.limit_questions] if args.limit_questions else conv.questions
        for q in qs:
            if q.evidence:
                questions.append((conv, q))
            else:
                dropped[q.category] += 1
    turns = sum(len(c.turns) for c in convs)
    facts = sum(len(c.facts) for c in convs)
    print(f"LoCoMo dev: {len(convs)} conversations ({', '.join(c.sample_id for c in convs)}), {turns} turns, {facts} facts, "
          f"{len(questions)} questions scored (cat 1-4: {sum(q.category <= 4 for _, q in questions)}, "
          f"cat 5: {sum(q.category == 5 for _, q in questions)}); left out for no valid evidence: "
          f"{sum(dropped.values())} {dict(dropped) if dropped else ''}")
    env = {"MEMOIR_EMBEDDINGS": "off"} if args.embeddings == "off" else {}
    print(f"server: memoir serve over stdio (SDK Client, mode=legacy), embeddings {args.embeddings}, "
          f"store {args.store}, min_relevance {'server default' if args.min_relevance is None else args.min_relevance}, "
          f"search limit {LIMIT}, methods {','.join(methods)}; {loadavg()}")
    if args.store == "observations":
        covered = {c.sample_id: {d for f in c.facts for d in f.sources} for c in convs}
        answerable = [set(q.evidence) & covered[c.sample_id] for c, q in questions if q.category <= 4]
        print(f"ceiling (cat 1-4 questions with an evidence turn some fact covers): "
              f"{100 * sum(map(bool, answerable)) / max(len(answerable), 1):.1f}")
    with tempfile.TemporaryDirectory(prefix="memoir-bench-") as tmp:
        db: Path | str = args.db or Path(tmp) / "locomo.db"
        async with Client(memoir_stdio(db, env), mode="legacy") as client:
            log("ingesting through add_memory ...")
            to_dia, calls, secs = await ingest(client, convs, args.store)
            print(f"ingest: {calls} add_memory calls in {secs:.1f} s = {calls / secs:.0f} calls/s (one at a time, over stdio)")
            for method in methods:
                # One unscored warm-up per user (first search loads a user's vectors / the model).
                try:
                    for conv in convs:
                        await search(client, conv.sample_id, "warm up the index", method)
                except RuntimeError as exc:
                    print(f"\nmethod={method}: refused by the server, as designed: {exc}")
                    continue
                scored: list[Scored] = []
                t0 = time.perf_counter()
                for i, (conv, q) in enumerate(questions):
                    out, ms = await search(client, conv.sample_id, q.question, method, args.min_relevance)
                    ranked = [to_dia.get(r["memory_id"], set()) for r in out["results"]]
                    scored.append(Scored(q, ranked, ms, out["retrieval_method"]))
                    if (i + 1) % 100 == 0:
                        log(f"  {method}: {i + 1}/{len(questions)} questions ({time.perf_counter() - t0:.1f} s)")
                print()
                print(table(method, scored))
    print(f"\nfinished; {loadavg()}")
    print("references (../shared/data/README.md): DRAGON frac@k cat 1-5: @5 56.7, @10 66.2, @25 76.7; "
          "plain FTS5 BM25 cat 1-4 (full LoCoMo): hit@5 ~62, hit@10 ~70. "
          "Issue 3 targets: hybrid hit@5 >= 75 (cat 1-4), frac@10 >= 72 (cat 1-5).")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", default="", help="an empty PostgreSQL database's URL instead of a temporary SQLite file")
    p.add_argument("--methods", default="keyword,semantic,hybrid", help="comma-separated retrieval methods")
    p.add_argument("--limit-questions", type=int, default=0, help="at most N questions per conversation (quick run)")
    p.add_argument("--conversations", default="", help="comma-separated sample ids (default: all)")
    p.add_argument("--embeddings", choices=("on", "off"), default="on", help="off: MEMOIR_EMBEDDINGS=off on the server")
    p.add_argument("--store", choices=("turns", "observations"), default="turns",
                   help="what is stored: every dialog turn, or every observation fact (one per memory)")
    p.add_argument("--min-relevance", type=float, default=None,
                   help="min_relevance of every search (default: the server's default; 0 turns the filter off)")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
