"""Relevance on LoCoMo dev through the MCP tools: does `min_relevance` drop what is not about the question?

Stores LoCoMo dev (turns, or `--store observations` facts; one user per conversation) with
`add_memory`, then runs three kinds of query per method through `search_memories` with
`min_relevance=0` (limit 25), keeping each result's `relevance`:

- positives: the conversation's own questions (categories 1-4);
- other: every question of the two other conversations, asked of this one;
- absent: 100 queries per conversation of 1-3 words that occur in another conversation but match
  no memory of this one (checked with a keyword search), drawn with a fixed seed.

For each threshold t it prints hit@5 / hit@10 of the positives counting only results with
relevance >= t (what `min_relevance=t` returns), and the share of "other" and "absent" queries
left with no result at all. The row of the server's default threshold is marked.

    /work/venv/bin/python bench/relevance.py                          # hybrid, keyword, semantic on turns
    /work/venv/bin/python bench/relevance.py --store observations
    /work/venv/bin/python bench/relevance.py --embeddings off         # keyword relevance only

Data: `MEMOIR_LOCOMO` or ../shared/data/locomo-dev.json next to the repo.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mcp import Client  # noqa: E402

from _common import load_locomo, loadavg, log, memoir_stdio  # noqa: E402
from retrieval import LIMIT, ingest  # noqa: E402

from memoir.memory.ranking import DEFAULT_MIN_RELEVANCE, STOP_WORDS  # noqa: E402

THRESHOLDS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ABSENT_PER_CONVERSATION = 100
_WORD = re.compile(r"[a-z]+")


async def results(client: Client, user: str, query: str, method: str) -> tuple[list[tuple[set[str], float]], str]:
    r = await client.call_tool(
        "search_memories", {"query": query, "user_id": user, "retrieval_method": method, "limit": LIMIT, "min_relevance": 0}
    )
    if r.is_error:
        raise RuntimeError(r.content[0].text)
    return [(r["memory_id"], r["relevance"]) for r in r.structured_content["results"]], r.structured_content["retrieval_method"]


async def absent_queries(client: Client, convs, store: str) -> dict[str, list[str]]:
    """Per conversation: queries of 1-3 words from the other conversations that match none of its memories."""
    def words(conv) -> set[str]:
        texts = [t.memory for t in conv.turns] if store == "turns" else [f.memory for f in conv.facts]
        return {w for text in texts for w in _WORD.findall(text.lower())}

    vocab = {c.sample_id: words(c) for c in convs}
    out: dict[str, list[str]] = {}
    for conv in convs:
        pool = sorted(
            {w for c in convs if c is not conv for w in vocab[c.sample_id]} - vocab[conv.sample_id] - STOP_WORDS
        )
        pool = [w for w in pool if len(w) >= 4]
        rnd = random.Random(f"memoir-relevance:{conv.sample_id}")
        checked: dict[str, bool] = {}
        queries: list[str] = []
        while len(queries) < ABSENT_PER_CONVERSATION:
            picked = rnd.sample(pool, rnd.choice((1, 2, 3)))
            for w in picked:
                if w not in checked:  # no memory matches it, porter stemming included
                    checked[w] = not (await results(client, conv.sample_id, w, "keyword"))[0]
            if all(checked[w] for w in picked):
                queries.append(" ".join(picked))
        out[conv.sample_id] = queries
    return out


def table(method: str, pos, other, absent, ran: set[str]) -> str:
    lines = [f"method={method} (ran: {', '.join(sorted(ran))}); positives n={len(pos)}, other n={len(other)}, absent n={len(absent)}",
             f"{'min_relevance':>13} {'hit@5':>6} {'hit@10':>6} {'other empty':>12} {'absent empty':>13}"]
    for t in THRESHOLDS:
        h5 = sum(any(ids & ev for ids, rel in res if rel >= t) for ev, res in ((ev, [x for x in r if x[1] >= t][:5]) for ev, r in pos))
        h10 = sum(any(ids & ev for ids, _ in [x for x in r if x[1] >= t][:10]) for ev, r in pos)
        oe = sum(not any(rel >= t for _, rel in r) for r in other)
        ae = sum(not any(rel >= t for _, rel in r) for r in absent)
        mark = "  <- default" if abs(t - DEFAULT_MIN_RELEVANCE) < 1e-9 else ""
        lines.append(f"{t:>13.2f} {100 * h5 / len(pos):>6.1f} {100 * h10 / len(pos):>6.1f} "
                     f"{100 * oe / len(other):>11.1f}% {100 * ae / len(absent):>12.1f}%{mark}")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> None:
    convs = load_locomo()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    env = {"MEMOIR_EMBEDDINGS": "off"} if args.embeddings == "off" else {}
    print(f"LoCoMo dev relevance: store {args.store}, embeddings {args.embeddings}, methods {','.join(methods)}, "
          f"server default min_relevance {DEFAULT_MIN_RELEVANCE}; {loadavg()}")
    with tempfile.TemporaryDirectory(prefix="memoir-relevance-") as tmp:
        async with Client(memoir_stdio(Path(tmp) / "locomo.db", env), mode="legacy") as client:
            log("ingesting through add_memory ...")
            to_dia, calls, secs = await ingest(client, convs, args.store)
            print(f"ingest: {calls} add_memory calls in {secs:.1f} s")
            absent = await absent_queries(client, convs, args.store)
            print("absent-word queries, first of each conversation: "
                  + "; ".join(f"{c}: {qs[0]!r}" for c, qs in absent.items()))
            for method in methods:
                ran: set[str] = set()
                pos, other, absent_res = [], [], []

                async def ask(user: str, query: str) -> list[tuple[set[str], float]]:
                    found, method_ran = await results(client, user, query, method)
                    ran.add(method_ran)
                    return [(to_dia.get(m, set()), rel) for m, rel in found]

                try:
                    for conv in convs:
                        for q in conv.questions:
                            if q.category <= 4 and q.evidence:
                                pos.append((set(q.evidence), await ask(conv.sample_id, q.question)))
                        for o in convs:
                            if o is not conv:
                                for q in o.questions:
                                    other.append(await ask(conv.sample_id, q.question))
                        for query in absent[conv.sample_id]:
                            absent_res.append(await ask(conv.sample_id, query))
                        log(f"  {method}: {conv.sample_id} done")
                except RuntimeError as exc:
                    print(f"\nmethod={method}: refused by the server, as designed: {exc}")
                    continue
                print()
                print(table(method, pos, other, absent_res, ran))
    print(f"\nfinished; {loadavg()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="hybrid,keyword,semantic", help="comma-separated retrieval methods")
    p.add_argument("--store", choices=("turns", "observations"), default="turns")
    p.add_argument("--embeddings", choices=("on", "off"), default="on", help="off: MEMOIR_EMBEDDINGS=off on the server")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
