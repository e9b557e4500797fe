"""Retrieval research on LoCoMo (dev split): keyword vs semantic vs hybrid variants.

Not a test and not the product's benchmark (that one ingests through the MCP tools): this script
reproduces the store's retrieval in-process -- an in-memory SQLite FTS5 table (porter unicode61,
BM25) per conversation and a numpy matrix of all-MiniLM-L6-v2 vectors -- so ranking recipes can
be compared quickly. Prints hit@1/5/10, frac@5/10/25 and MRR per category and overall.

    /work/venv/bin/python bench/locomo_research.py [--variants all|main] [--no-cache]

Data: ``MEMOIR_LOCOMO`` or ``../shared/data/locomo-dev.json`` next to the repo (never copy it
into the repo: CC BY-NC). Vectors are cached under ``~/.cache/memoir-bench`` (``--no-cache`` to
skip).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import re
import sqlite3
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("MEMOIR_BENCH_CACHE", Path.home() / ".cache" / "memoir-bench"))


def _load_module(name: str):
    try:
        return importlib.import_module(f"memoir.memory.{name}")
    except ImportError:
        spec = importlib.util.spec_from_file_location(f"_memoir_{name}", REPO / "memory" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        return mod


import importlib  # noqa: E402

embeddings = _load_module("embeddings")
ranking = _load_module("ranking")
from _common import Conversation, load_locomo  # noqa: E402  (bench/ is on sys.path when a bench runs as a script)


# --------------------------------------------------------------------------- keyword
class FTS:
    def __init__(self, texts: list[str]):
        self.db = sqlite3.connect(":memory:")
        self.db.execute("CREATE VIRTUAL TABLE m USING fts5(memory, topics, tokenize='porter unicode61')")
        self.db.executemany("INSERT INTO m(rowid, memory, topics) VALUES (?,?,'')", enumerate(texts))

    def search(self, match: str | None, weights=(1.0, 1.0), limit=100) -> list[tuple[int, float]]:
        if not match:
            return []
        rows = self.db.execute(
            f"SELECT rowid, bm25(m, {weights[0]}, {weights[1]}) AS s FROM m WHERE m MATCH ? ORDER BY s LIMIT ?",
            (match, limit),
        ).fetchall()
        return [(r, -s) for r, s in rows]


BASE_STOP = set(
    "a an and are as at be but by for from has have i if in into is it its of on or so that the their "
    "there these they this to was were will with you your we he she his her them what when where who "
    "which why how do does did".split()
)


def baseline_query(q: str, prefix: bool = False) -> str | None:
    terms = [t for t in re.findall(r"\w+", q.lower()) if t not in BASE_STOP]
    terms = list(dict.fromkeys(terms))
    if not terms:
        return None
    return " OR ".join(f'"{t}"' + ("*" if prefix else "") for t in terms)


# --------------------------------------------------------------------------- semantic
def embed_cached(embedder, texts: list[str], use_cache: bool) -> np.ndarray:
    key = hashlib.sha256((embedder.name + "\x00" + "\x01".join(texts)).encode()).hexdigest()[:24]
    path = CACHE / f"{key}.npy"
    if use_cache and path.exists():
        return np.load(path)
    v = embedder.embed(texts)
    if use_cache:
        CACHE.mkdir(parents=True, exist_ok=True)
        np.save(path, v)
    return v


def topn(scores: np.ndarray, n: int) -> list[tuple[int, float]]:
    n = min(n, len(scores))
    idx = np.argpartition(-scores, n - 1)[:n]
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return [(int(i), float(scores[i])) for i in idx]


# --------------------------------------------------------------------------- metrics
KS_HIT = (1, 5, 10)
KS_FRAC = (5, 10, 25)


def score_one(ranked: list[int], gold: set[int]) -> dict[str, float]:
    r = {}
    for k in KS_HIT:
        r[f"hit@{k}"] = float(any(x in gold for x in ranked[:k]))
    for k in KS_FRAC:
        r[f"frac@{k}"] = len(gold & set(ranked[:k])) / len(gold)
    rr = 0.0
    for i, x in enumerate(ranked[:100]):
        if x in gold:
            rr = 1.0 / (i + 1)
            break
    r["mrr"] = rr
    return r


def summarise(rows: list[tuple[int, dict]]) -> dict[str, dict[str, float]]:
    by = defaultdict(list)
    for cat, r in rows:
        by[str(cat)].append(r)
        if cat in (1, 2, 3, 4):
            by["1-4"].append(r)
        by["1-5"].append(r)
    return {c: {m: 100 * statistics.fmean(x[m] for x in rs) for m in rs[0]} | {"n": len(rs)} for c, rs in by.items()}


# --------------------------------------------------------------------------- experiment
@dataclass
class Query:
    conv: int
    text: str
    cat: int
    gold: set[int]
    kw: dict  # variant -> [(idx, bm25)] best first
    sem: dict  # variant -> cosine array over all turns


def prepare(convs: list[Conversation], use_cache: bool):
    embedder = embeddings.load_embedder()
    per_conv = []
    queries: list[Query] = []
    t_embed = 0.0
    for ci, conv in enumerate(convs):
        mems = [t.memory for t in conv.turns]
        fts = FTS(mems)
        t0 = time.perf_counter()
        vecs = {
            "raw": embed_cached(embedder, mems, use_cache),
            "strip": embed_cached(embedder, [embeddings.embedding_text(m) for m in mems], use_cache),
            "text": embed_cached(embedder, [t.text for t in conv.turns], use_cache),
        }
        t_embed += time.perf_counter() - t0
        answerable = [q for q in conv.questions if q.evidence]
        qv = embed_cached(embedder, [q.question for q in answerable], use_cache)
        by_dia = {t.dia_id: i for i, t in enumerate(conv.turns)}  # ingest order: the timeline position
        per_conv.append((conv, fts, vecs))
        for q, v in zip(answerable, qv):
            kw = {
                "base": fts.search(baseline_query(q.question)),
                "base*": fts.search(baseline_query(q.question, prefix=True)),
                "new": fts.search(ranking.build_fts_query(q.question)),
            }
            sem = {name: m @ v for name, m in vecs.items()}
            queries.append(Query(ci, q.question, q.category, {by_dia[d] for d in q.evidence}, kw, sem))
    return per_conv, queries, t_embed


def run_variant(per_conv, queries, fn: Callable[[Query, list], list[int]]):
    rows = []
    for q in queries:
        conv = per_conv[q.conv][0]
        rows.append((q.cat, score_one(fn(q, conv), q.gold)))
    return summarise(rows)


def ids(lst):
    return [i for i, _ in lst]


def fuse_variant(kw="new", sem="strip", n=ranking.CANDIDATES, neighbours=True, questions=True, **params):
    fp = ranking.FuseParams(**params)

    def fn(q: Query, conv: Conversation):
        kwl = q.kw[kw][:n]
        seml = topn(q.sem[sem], n)
        cands = {i for i, _ in kwl} | {i for i, _ in seml}
        # ingest order = creation order: the turn index is the timeline position
        created = {i: f"2024-01-01T00:00:00.{i:06d}" for i in cands}
        pos = {i: i for i in cands} if neighbours else None
        asked = {i for i in cands if ranking.is_question(conv.turns[i].memory)} if questions else set()
        return ids(ranking.fuse(kwl, seml, created, position=pos, questions=asked, params=fp))

    return fn


def rrf_plain(kw="base", sem="raw", k=60, n=100):
    def fn(q, conv):
        s = defaultdict(float)
        for lst in (q.kw[kw][:n], topn(q.sem[sem], n)):
            for r, (i, _) in enumerate(lst):
                s[i] += 1 / (k + r + 1)
        return sorted(s, key=lambda i: -s[i])

    return fn


def variants(which: str):
    v = {
        "keyword baseline stoplist (OR, quoted)": lambda q, c: ids(q.kw["base"]),
        "keyword baseline + prefix*": lambda q, c: ids(q.kw["base*"]),
        "keyword build_fts_query": lambda q, c: ids(q.kw["new"]),
        "semantic raw '[date] speaker: text'": lambda q, c: ids(topn(q.sem["raw"], 100)),
        "semantic embedding_text (no [date])": lambda q, c: ids(topn(q.sem["strip"], 100)),
        "semantic text only (no date, speaker)": lambda q, c: ids(topn(q.sem["text"], 100)),
        "hybrid plain RRF k=60 (raw sem)": rrf_plain(),
        "hybrid plain RRF k=60 (embedding_text)": rrf_plain("new", "strip"),
        "blend kw + 1.0 sem, no neighbours": fuse_variant(neighbours=False, semantic_weight=1.0),
        "blend kw + 0.7 sem, no neighbours": fuse_variant(neighbours=False),
        "blend 0.7 + neighbours 0.5 w2, no question signal": fuse_variant(questions=False),
        "RECIPE: blend 0.7 + neighbours 0.5 w2 + questions": fuse_variant(),
    }
    if which == "all":
        for name, kwargs in [
            ("recipe, semantic 0.5", dict(semantic_weight=0.5)),
            ("recipe, semantic 1.0", dict(semantic_weight=1.0)),
            ("recipe, neighbours 0.3", dict(neighbour_weight=0.3)),
            ("recipe, neighbours 0.7", dict(neighbour_weight=0.7)),
            ("recipe, neighbour window 1", dict(neighbour_window=1)),
            ("recipe, semantic on raw text", dict(sem="raw")),
            ("recipe, baseline stop list", dict(kw="base")),
            ("recipe, 50 candidates", dict(n=50)),
            ("recipe, 200 candidates", dict(n=200)),
            ("keyword + neighbours (no semantic)", dict(semantic_weight=0.0)),
            ("recipe, question factor 0.8, boost 2.0", dict(question_factor=0.8, after_question_boost=2.0)),
            ("recipe, question factor 0.7, no boost", dict(after_question_boost=1.0)),
        ]:
            v[name] = fuse_variant(**kwargs)
    return v


def per_conversation(per_conv, queries, names_fns):
    print("\n## per conversation (cat 1-4 hit@5 / hit@10)")
    for ci, (conv, _, _) in enumerate(per_conv):
        qs = [q for q in queries if q.conv == ci]
        cells = []
        for name, fn in names_fns:
            r = run_variant(per_conv, qs, fn)["1-4"]
            cells.append(f"{name}: {r['hit@5']:.1f} / {r['hit@10']:.1f}")
        print(f"{conv.sample_id} (n={sum(q.cat != 5 for q in qs)}): " + "; ".join(cells))


def print_table(results: dict[str, dict], cats=("1", "2", "3", "4", "1-4", "5", "1-5")):
    metrics = ["hit@1", "hit@5", "hit@10", "frac@5", "frac@10", "frac@25", "mrr"]
    for cat in cats:
        any_ = next(iter(results.values()))
        if cat not in any_:
            continue
        print(f"\n## category {cat}  (n={any_[cat]['n']})")
        print(f"{'variant':48s} " + " ".join(f"{m:>8s}" for m in metrics))
        for name, res in results.items():
            print(f"{name[:48]:48s} " + " ".join(f"{res[cat][m]:8.1f}" for m in metrics))


def latency_bench(dim=384, sizes=(10_000, 100_000)):
    rng = np.random.default_rng(0)
    embedder = embeddings.load_embedder()
    out = {}
    for n in sizes:
        m = rng.standard_normal((n, dim)).astype(np.float32)
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        kw = [(int(i), float(50 - j)) for j, i in enumerate(rng.choice(n, 50, replace=False))]
        created = {}
        times = []
        embedder.embed(["warm up"])
        for t in range(60):
            t0 = time.perf_counter()
            qv = embedder.embed([f"what does the user like to do on weekend {t}"])[0]
            rows, cos = embeddings.cosine_top_k(m, qv, ranking.CANDIDATES)
            sem = list(zip(rows.tolist(), cos.tolist()))
            cands = {i for i, _ in kw} | {i for i, _ in sem}
            created = {i: "2024-01-01T00:00:00" for i in cands}
            ranking.fuse(kw, sem, created, position={i: int(i) for i in cands})
            times.append(time.perf_counter() - t0)
        times.sort()
        out[n] = (1000 * times[len(times) // 2], 1000 * times[int(len(times) * 0.95)])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="main", choices=["main", "all"])
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--latency", action="store_true", help="also time embed+matmul+fuse at 10k/100k")
    args = ap.parse_args()
    convs = load_locomo()
    per_conv, queries, t_embed = prepare(convs, not args.no_cache)
    n_turns = sum(len(c.turns) for c in convs)
    print(f"{len(convs)} conversations, {n_turns} turns, {len(queries)} questions; embed time {t_embed:.1f}s")
    results = {}
    for name, fn in variants(args.variants).items():
        results[name] = run_variant(per_conv, queries, fn)
    print_table(results)
    v = variants("main")
    per_conversation(per_conv, queries, [(k, v[k]) for k in ("keyword build_fts_query", "RECIPE: blend 0.7 + neighbours 0.5 w2 + questions")])
    if args.latency:
        for n, (p50, p95) in latency_bench().items():
            print(f"hybrid search (query embed + cosine + fuse) at {n}: p50 {p50:.1f} ms, p95 {p95:.1f} ms")


if __name__ == "__main__":
    main()
