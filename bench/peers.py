"""memoir beside the reference MCP memory server, same workload, one run.

The reference is `npx -y @modelcontextprotocol/server-memory` (a knowledge graph in a JSON-lines
file; `MEMORY_FILE_PATH` points it at a temp file). Both servers run over stdio through the
SDK's client. Workload: the dialog turns of one LoCoMo dev conversation (default conv-26), then
its questions of categories 1-4.

- memoir: one `add_memory` per turn ("[<date>] <speaker>: <text>"), `search_memories` with the
  question (hybrid, the default, and keyword; limit 5).
- reference: one `create_entities` call per turn (one entity: a unique name, entityType
  "dialog_turn", the turn text as its only observation), `search_nodes` with the question. Its
  search is a case-insensitive substring match of the whole query against names, types and
  observations, returning matching entities in insertion order; the first 5 are taken. A full
  question rarely is a substring of any turn, so that is mostly a miss - reported as it is.
  The fairer variant searches each non-stop-word of the question on its own (one search_nodes
  call per word) and ranks entities by how many of the words matched (ties: insertion order).

Printed: add p50, search p50/p95 (client round trip) for both and the ratio; the share of
questions with an evidence turn in the top 5.

    /work/venv/bin/python bench/peers.py                          # conv-26, all its cat 1-4 questions
    /work/venv/bin/python bench/peers.py --conversation conv-30 --max-questions 50
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mcp import Client, StdioServerParameters  # noqa: E402

from _common import load_locomo, loadavg, log, memoir_stdio, pct  # noqa: E402
from memoir.memory.ranking import query_terms  # noqa: E402

REFERENCE = "@modelcontextprotocol/server-memory"
TOP = 5
ENTITY_TYPE = "dialog_turn"


def entity_name(i: int) -> str:
    """A unique name of letters only (no digits or words a question could contain as a substring)."""
    letters = ""
    for _ in range(4):
        i, r = divmod(i, 26)
        letters = chr(ord("a") + r) + letters
    return "zqx" + letters


def reference_params(memory_file: Path) -> StdioServerParameters:
    npx = shutil.which("npx") or "npx"
    env = {"MEMORY_FILE_PATH": str(memory_file)}
    if "npm_config_cache" in os.environ:
        env["npm_config_cache"] = os.environ["npm_config_cache"]
    return StdioServerParameters(command=npx, args=["-y", REFERENCE], env=env)


def ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def latency(values: list[float]) -> str:
    return f"p50 {pct(values, .5):7.2f} ms  p95 {pct(values, .95):7.2f} ms"


async def run(args: argparse.Namespace) -> None:
    convs = {c.sample_id: c for c in load_locomo()}
    conv = convs[args.conversation]
    questions = [q for q in conv.questions if q.category <= 4 and q.evidence]
    if args.max_questions:
        questions = questions[: args.max_questions]
    turns = conv.turns[: args.max_turns] if args.max_turns else conv.turns
    print(f"workload: LoCoMo {conv.sample_id}, {len(turns)} turns added one call at a time, then "
          f"{len(questions)} questions of categories 1-4 (top {TOP}); both servers over stdio; {loadavg()}")
    out: dict[str, dict] = {}

    with tempfile.TemporaryDirectory(prefix="memoir-peers-") as tmp:
        # -- memoir ---------------------------------------------------------------------------
        log("memoir: adding ...")
        async with Client(memoir_stdio(Path(tmp) / "memoir.db"), mode="legacy") as client:
            to_dia: dict[str, str] = {}
            adds = []
            for turn in turns:
                t0 = time.perf_counter()
                r = await client.call_tool("add_memory", {"memory": turn.memory, "user_id": conv.sample_id})
                adds.append(ms_since(t0))
                to_dia[r.structured_content["memory_id"]] = turn.dia_id
            for method in ("hybrid", "keyword"):
                log(f"memoir: searching ({method}) ...")
                searches, hits = [], 0
                await client.call_tool("search_memories", {"query": "warm up", "user_id": conv.sample_id, "retrieval_method": method})
                for q in questions:
                    t0 = time.perf_counter()
                    r = await client.call_tool(
                        "search_memories",
                        {"query": q.question, "user_id": conv.sample_id, "retrieval_method": method, "limit": TOP},
                    )
                    searches.append(ms_since(t0))
                    top = [to_dia.get(m["memory_id"]) for m in r.structured_content["results"][:TOP]]
                    hits += any(d in q.evidence for d in top)
                out[f"memoir {method}"] = {"add": adds, "search": searches, "hits": hits}

        # -- the reference server ----------------------------------------------------------------
        memory_file = Path(tmp) / "memory.jsonl"
        log(f"reference: npx -y {REFERENCE} (first run downloads it) ...")
        t0 = time.perf_counter()
        async with Client(reference_params(memory_file), mode="legacy") as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            start = time.perf_counter() - t0
            version = client.server_info
            for name in ("create_entities", "search_nodes"):
                if name not in tools:
                    raise SystemExit(f"the reference server has no {name} tool: {sorted(tools)}")
            print(f"reference server: {version.name + ' ' + version.version if version else REFERENCE}, "
                  f"up in {start:.1f} s; create_entities input: "
                  f"{list(tools['create_entities'].input_schema['properties'])} -> entity fields "
                  f"{list(tools['create_entities'].input_schema['properties']['entities']['items']['properties'])}; "
                  f"search_nodes input: {list(tools['search_nodes'].input_schema['properties'])}")
            by_name: dict[str, str] = {}
            order: dict[str, int] = {}
            adds = []
            log("reference: adding ...")
            for i, turn in enumerate(turns):
                name = entity_name(i)
                entity = {"name": name, "entityType": ENTITY_TYPE, "observations": [turn.memory]}
                t0 = time.perf_counter()
                r = await client.call_tool("create_entities", {"entities": [entity]})
                adds.append(ms_since(t0))
                if r.is_error:
                    raise SystemExit(f"create_entities failed: {r.content[0].text if r.content else r}")
                by_name[name] = turn.dia_id
                order[name] = i

            async def search_nodes(query: str) -> tuple[list[str], float]:
                t0 = time.perf_counter()
                r = await client.call_tool("search_nodes", {"query": query})
                ms = ms_since(t0)
                if r.is_error:
                    raise SystemExit(f"search_nodes failed: {r.content[0].text if r.content else r}")
                return [e["name"] for e in (r.structured_content or {}).get("entities", [])], ms

            log("reference: searching (whole question) ...")
            searches, hits, empty = [], 0, 0
            for q in questions:
                names, ms = await search_nodes(q.question)
                searches.append(ms)
                empty += not names
                hits += any(by_name.get(n) in q.evidence for n in names[:TOP])
            out["reference, whole question"] = {"add": adds, "search": searches, "hits": hits, "empty": empty}

            log("reference: searching (word by word) ...")
            searches, hits, calls = [], 0, 0
            for q in questions:
                counts: dict[str, int] = {}
                total = 0.0
                for word in query_terms(q.question):
                    names, ms = await search_nodes(word)
                    total += ms
                    calls += 1
                    for n in names:
                        counts[n] = counts.get(n, 0) + 1
                ranked = sorted(counts, key=lambda n: (-counts[n], order.get(n, 0)))
                searches.append(total)
                hits += any(by_name.get(n) in q.evidence for n in ranked[:TOP])
            out["reference, word by word"] = {"add": adds, "search": searches, "hits": hits, "calls": calls}
        file_kb = memory_file.stat().st_size / 1024 if memory_file.exists() else 0

    # -- report --------------------------------------------------------------------------------------
    n = len(questions)
    print(f"\n{'server / search':<28} {'add p50 ms':>10} {'add p95 ms':>10} {'search p50 ms':>14} {'search p95 ms':>14} {f'hit@{TOP} (cat 1-4)':>18}")
    for label, r in out.items():
        note = ""
        if "empty" in r:
            note = f"  ({r['empty']}/{n} searches returned nothing)"
        if "calls" in r:
            note = f"  ({r['calls']} search_nodes calls, {r['calls'] / n:.1f} per question; latency = their sum)"
        print(f"{label:<28} {pct(r['add'], .5):>10.2f} {pct(r['add'], .95):>10.2f} {pct(r['search'], .5):>14.2f} "
              f"{pct(r['search'], .95):>14.2f} {100 * r['hits'] / n:>17.1f}%{note}")
    m, ref = out["memoir hybrid"], out["reference, whole question"]
    refw = out["reference, word by word"]
    print(f"\nratios (reference / memoir hybrid): add p50 {pct(ref['add'], .5) / pct(m['add'], .5):.2f}x, "
          f"search p50 {pct(ref['search'], .5) / pct(m['search'], .5):.2f}x (whole question), "
          f"{pct(refw['search'], .5) / pct(m['search'], .5):.2f}x (word by word); "
          f"the reference's add cost grows with the graph (it rewrites its whole file, {file_kb:.0f} KB at the end, on every call)")
    print(f"finished; {loadavg()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conversation", default="conv-26")
    p.add_argument("--max-questions", type=int, default=0, help="0: all of the conversation's cat 1-4 questions")
    p.add_argument("--max-turns", type=int, default=0, help="0: all turns (fewer turns make evidence go missing)")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
