"""Ranking research for stores of facts (issue 13, part 6): LoCoMo dev turns AND observations.

An in-process copy of the product's hybrid search on both stores (bench/retrieval.py's default
store and ``--store observations``), with a pure-Python BM25 beside FTS5 so the keyword side can
be varied (k1, b, idf, BM25+, Dirichlet LM, document expansion from timeline neighbours, RM3),
and vector-side variants (context-augmented vectors, a third list, adaptive weights). Prints
hit@1/5/10 over categories 1-4 for each store. Not a test, not the product's benchmark.

    .venv/bin/python bench/facts_research.py [--only SUBSTRING] [--ranker] [--bootstrap] [--check-bm25]

Data: ``MEMOIR_LOCOMO`` or ../shared/data/locomo-dev.json (CC BY-NC: never copy it into the repo).
Vectors (memories, questions, every vocabulary word alone) cached under ``~/.cache/memoir-bench``;
the first run embeds ~5,000 texts (~10 s). Needs PyStemmer (``pip install PyStemmer``; memoir's
own dependency once the keyword engine of memory/keyword_index.py is merged). ~2 minutes.
The memories of the bench have no topics, so the topics weight could not be varied here.
"""

from __future__ import annotations

import argparse
import math
import re
import sqlite3
import statistics
import sys
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_locomo  # noqa: E402
from locomo_research import embed_cached, embeddings, ranking, topn  # noqa: E402

from memoir.memory.vectors import UserVectors  # noqa: E402

try:
    import Stemmer  # PyStemmer, what the new keyword engine uses

    _STEM = Stemmer.Stemmer("porter")
except ImportError:  # pragma: no cover
    sys.exit("pip install PyStemmer")

N_CAND = ranking.CANDIDATES


# --------------------------------------------------------------------------- tokens
_TOK = re.compile(r"[^\W_]+", re.UNICODE)


def _fold(s: str) -> str:
    s = unicodedata.normalize("NFKD", s.lower())
    return "".join(c for c in s if not unicodedata.combining(c))


def tokens(text: str) -> list[str]:
    """unicode61-like words, lower-cased, diacritics removed; porter for tokens of 3+ chars."""
    out = []
    for t in _TOK.findall(_fold(text)):
        out.append(_STEM.stemWord(t) if len(t) >= 3 else t)
    return out


def query_stems(query: str) -> list[str]:
    """The query's terms (ranking.query_terms) as index tokens, first-seen order."""
    out: dict[str, None] = {}
    for term in ranking.query_terms(query):
        for t in tokens(term):
            out[t] = None
    return list(out)


# --------------------------------------------------------------------------- stores
@dataclass
class Store:
    kind: str
    conv: str
    texts: list[str]
    sources: list[set[str]]
    vec: np.ndarray  # embedding_text vectors
    toks: list[list[str]] = field(default_factory=list)
    questions: set[int] = field(default_factory=set)
    fts: sqlite3.Connection | None = None
    extra: dict = field(default_factory=dict)  # cached derived things (context vectors ...)

    def __post_init__(self):
        self.toks = [tokens(t) for t in self.texts]
        self.tf = [Counter(t) for t in self.toks]
        self.dl = np.array([len(t) for t in self.toks], dtype=float)
        self.df = Counter()
        for c in self.tf:
            self.df.update(c.keys())
        self.N = len(self.texts)
        self.questions = {i for i, t in enumerate(self.texts) if ranking.is_question(t)}
        self.fts = sqlite3.connect(":memory:")
        self.fts.execute("CREATE VIRTUAL TABLE m USING fts5(memory, topics, tokenize='porter unicode61')")
        self.fts.executemany("INSERT INTO m(rowid, memory, topics) VALUES (?,?,'')", enumerate(self.texts))
        self.postings: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for i, c in enumerate(self.tf):
            for t, n in c.items():
                self.postings[t].append((i, n))


@dataclass
class Q:
    store: Store
    text: str
    cat: int
    gold: set[str]
    qv: np.ndarray
    terms: list[str]  # query_terms (unstemmed), as the product
    stems: list[str]
    sem: np.ndarray  # cosine to every memory

    @property
    def key(self):
        return (self.store.kind, self.store.conv, self.text)


def load(use_cache=True):
    convs = load_locomo()
    emb = embeddings.load_embedder()
    stores = {"turns": [], "facts": []}
    queries = {"turns": [], "facts": []}
    for conv in convs:
        answerable = [q for q in conv.questions if q.evidence and q.category <= 4]
        qv = embed_cached(emb, [q.question for q in answerable], use_cache)
        for kind in ("turns", "facts"):
            if kind == "turns":
                texts = [t.memory for t in conv.turns]
                sources = [{t.dia_id} for t in conv.turns]
            else:
                texts = [f.memory for f in conv.facts]
                sources = [set(f.sources) for f in conv.facts]
            vec = embed_cached(emb, [embeddings.embedding_text(m) for m in texts], use_cache)
            st = Store(kind, conv.sample_id, texts, sources, vec)
            st.extra["emb"] = emb
            stores[kind].append(st)
            for q, v in zip(answerable, qv):
                queries[kind].append(
                    Q(st, q.question, q.category, set(q.evidence), v, ranking.query_terms(q.question),
                      query_stems(q.question), st.vec @ v)
                )
    return stores, queries


# --------------------------------------------------------------------------- keyword
def kept_terms(st: Store, terms: list[str]) -> list[str]:
    """The product's rule (memory/store.py): words in over half the memories are left out."""
    half = st.N // 2
    if len(terms) < 2 or half < 50:
        return terms
    counts = {t: sum(1 for _ in _term_docs(st, t)) for t in terms}
    kept = [t for t in terms if counts[t] <= half]
    return kept if kept and len(kept) < len(terms) else terms


def _term_docs(st: Store, term: str):
    stems = tokens(term)
    if not stems:
        return iter(())
    if len(stems) == 1:
        return iter({d for d, _ in st.postings.get(stems[0], ())})
    sets = [{d for d, _ in st.postings.get(s, ())} for s in stems]  # approx phrase: all tokens
    return iter(set.intersection(*sets))


def fts_search(q: Q, limit=N_CAND) -> list[tuple[int, float]]:
    terms = kept_terms(q.store, q.terms)
    if not terms:
        return []
    rows = q.store.fts.execute(
        "SELECT rowid, bm25(m, 1.0, 0.5) AS s FROM m WHERE m MATCH ? ORDER BY s, rowid DESC LIMIT ?",
        (ranking.fts_match(terms), limit),
    ).fetchall()
    return [(r, -s) for r, s in rows]


@dataclass(frozen=True)
class BM25:
    k1: float = 1.2
    b: float = 0.75
    idf: str = "fts5"  # fts5 | lucene | plain(no floor at 1e-6 -> clamp 0)
    delta: float = 0.0  # BM25+
    lm_mu: float = 0.0  # > 0: Dirichlet LM instead of BM25
    expand: float = 0.0  # document expansion: neighbours' tokens at this weight
    expand_window: int = 1
    expand_len: bool = True  # expanded tokens count in the document length
    tf_sat: bool = True


def _expanded(st: Store, p: BM25):
    key = ("exp", p.expand, p.expand_window, p.expand_len)
    if key in st.extra:
        return st.extra[key]
    tfs, dls = [], []
    for i in range(st.N):
        c = Counter({t: float(n) for t, n in st.tf[i].items()})
        dl = float(st.dl[i])
        for d in range(1, p.expand_window + 1):
            w = p.expand * (0.5 ** (d - 1))
            for j in (i - d, i + d):
                if 0 <= j < st.N:
                    for t, n in st.tf[j].items():
                        c[t] += w * n
                    if p.expand_len:
                        dl += w * st.dl[j]
        tfs.append(c)
        dls.append(dl)
    post = defaultdict(list)
    df = Counter()
    for i, c in enumerate(tfs):
        for t, n in c.items():
            post[t].append((i, n))
            df[t] += 1
    out = (post, np.array(dls), df)
    st.extra[key] = out
    return out


def bm25_search(q: Q, p: BM25 = BM25(), weights: dict[str, float] | None = None, limit=N_CAND, terms=None):
    """Python BM25 over the store; `weights`: stem -> query weight (RM3), else every kept term 1."""
    st = q.store
    if p.expand:
        post, dl, df = _expanded(st, p)
    else:
        post, dl, df = st.postings, st.dl, st.df
    if weights is None:
        terms = kept_terms(st, q.terms if terms is None else terms)
        weights = {}
        for t in terms:
            for s in tokens(t):
                weights[s] = 1.0
    N = st.N
    avgdl = float(dl.mean()) if N else 1.0
    scores = defaultdict(float)
    for t, wq in weights.items():
        ps = post.get(t)
        if not ps:
            continue
        n = len(ps) if not p.expand else df[t]
        if p.idf == "fts5":
            idf = math.log((N - n + 0.5) / (n + 0.5))
            if idf <= 0:
                idf = 1e-6
        elif p.idf == "lucene":
            idf = math.log(1 + (N - n + 0.5) / (n + 0.5))
        else:
            idf = max(math.log((N - n + 0.5) / (n + 0.5)), 0.0)
        if p.lm_mu:
            cf = sum(x for _, x in ps)
            pc = cf / float(dl.sum())
            for d, tf in ps:
                scores[d] += wq * math.log(1 + tf / (p.lm_mu * pc))
            continue
        for d, tf in ps:
            norm = p.k1 * (1 - p.b + p.b * dl[d] / avgdl)
            scores[d] += wq * idf * ((tf * (p.k1 + 1)) / (tf + norm) + p.delta)
    if p.lm_mu:  # document-length part of the query likelihood
        qlen = sum(weights.values())
        for d in list(scores):
            scores[d] += qlen * math.log(p.lm_mu / (dl[d] + p.lm_mu))
    items = sorted(scores.items(), key=lambda kv: (-kv[1], -kv[0]))
    return items[:limit]


def rm3(q: Q, first: list[tuple[int, float]], fb_docs=5, fb_terms=10, alpha=0.3, p: BM25 = BM25()):
    """RM3 on the keyword side: the query's stems plus the top `fb_terms` stems of the top
    `fb_docs` documents of `first` (weighted by the normalised score), mixed at `alpha`."""
    st = q.store
    orig = {}
    for t in kept_terms(st, q.terms):
        for s in tokens(t):
            orig[s] = 1.0
    if not first or not orig:
        return bm25_search(q, p)
    top = first[:fb_docs]
    ws = np.array([s for _, s in top], dtype=float)
    ws = np.exp(ws - ws.max())
    ws /= ws.sum()
    rel = Counter()
    stop = ranking.STOP_WORDS
    half = st.N // 2
    for (d, _), w in zip(top, ws):
        L = max(st.dl[d], 1)
        for t, n in st.tf[d].items():
            if t in stop or t.isdigit() or st.df[t] > half or len(t) < 2:
                continue
            rel[t] += w * n / L
    exp = dict(rel.most_common(fb_terms))
    tot = sum(exp.values()) or 1
    qt = sum(orig.values())
    weights = defaultdict(float)
    for t, v in orig.items():
        weights[t] += (1 - alpha) * v / qt
    for t, v in exp.items():
        weights[t] += alpha * v / tot
    return bm25_search(q, p, weights=dict(weights))


# --------------------------------------------------------------------------- semantic
def centred_cosines(q: Q, lam: float = 1.0) -> np.ndarray:
    """Cosine of (v - lam * mu) and (q - lam * mu), mu the mean of the store's memory vectors:
    the direction every memory of the user shares (the names, the chat register) is taken out."""
    st = q.store
    key = ("centred", lam)
    if key not in st.extra:
        mu = st.vec.mean(0)
        x = st.vec - lam * mu
        st.extra[key] = (mu, x / np.linalg.norm(x, axis=1, keepdims=True))
    mu, x = st.extra[key]
    v = q.qv - lam * mu
    return x @ (v / np.linalg.norm(v))


def load_word_vectors(stores: dict, queries: dict, use_cache=True) -> None:
    """Each store's vocabulary (folded words of 3+ letters, no digits, no stop words) and each
    word's vector (the word embedded alone by the same model); query words too, for expansion
    of words the store has never seen."""
    emb = embeddings.load_embedder()
    words = set()
    for kind in stores:
        for st in stores[kind]:
            ws = {w for t in st.texts for w in _TOK.findall(_fold(t))
                  if len(w) >= 3 and not w.isdigit() and w not in ranking.STOP_WORDS}
            st.extra["words"] = sorted(ws)
            words |= ws
    for q in queries["turns"]:
        words |= {w for w in _TOK.findall(_fold(q.text)) if len(w) >= 3 and w not in ranking.STOP_WORDS}
    words = sorted(words)
    vecs = embed_cached(emb, words, use_cache)
    index = {w: i for i, w in enumerate(words)}
    for kind in stores:
        for st in stores[kind]:
            st.extra["wvec"] = (index, vecs)
            st.extra["wmat"] = vecs[[index[w] for w in st.extra["words"]]]
            st.extra["vocab"] = set(st.extra["words"])


def word_expansion(q: Q, tau=0.7, m=1, alpha=0.6, in_vocab_only=False) -> dict[str, float]:
    """Query term weights for BM25: every kept query term 1, plus, per query term, its `m` most
    similar words of the store's vocabulary by word-vector cosine (>= `tau`, a stem not already
    in the query) at `alpha` x cosine. `in_vocab_only`: expand only terms the store holds (their
    neighbours can be kept at index time: no model run at query time)."""
    st = q.store
    index, vecs = st.extra["wvec"]
    terms = kept_terms(st, q.terms)
    weights = {s: 1.0 for t in terms for s in tokens(t)}
    for t in terms:
        if t not in index or len(t) < 3 or (in_vocab_only and t not in st.extra["vocab"]):
            continue
        sims = st.extra["wmat"] @ vecs[index[t]]
        n = 0
        for j in np.argsort(-sims)[: m + 5]:
            if sims[j] < tau or n >= m:
                break
            s = tokens(st.extra["words"][j])[0]
            if s in weights:
                continue
            weights[s] = max(weights.get(s, 0.0), alpha * float(sims[j]))
            n += 1
    return weights


def ctx_vectors(st: Store, mode: str, alpha: float) -> np.ndarray:
    """Context-augmented memory vectors.

    - ``avg``: normalise(v_i + alpha * (v_{i-1} + v_{i+1})) (no extra embedding);
    - ``text``: the vector of "prev. this. next" embedded (one extra embedding per memory),
      averaged with v_i: normalise(v_i + alpha * v_ctx).
    """
    key = ("ctx", mode, alpha)
    if key in st.extra:
        return st.extra[key]
    v = st.vec
    if mode == "avg":
        nb = np.zeros_like(v)
        nb[1:] += v[:-1]
        nb[:-1] += v[1:]
        out = v + alpha * nb
    elif mode in ("text", "textonly", "prevtext"):
        ck = ("ctxtext", mode)
        if ck not in st.extra:
            t = [embeddings.embedding_text(x) for x in st.texts]
            if mode == "prevtext":
                ctx = [(t[i - 1] + " " if i else "") + t[i] for i in range(st.N)]
            else:
                ctx = [" ".join(t[max(0, i - 1): i + 2]) for i in range(st.N)]
            st.extra[ck] = embed_cached(st.extra["emb"], ctx, True)
        cv = st.extra[ck]
        out = cv if mode == "textonly" else v + alpha * cv
    else:
        raise ValueError(mode)
    out = out / np.linalg.norm(out, axis=1, keepdims=True)
    st.extra[key] = out
    return out


# --------------------------------------------------------------------------- fusion
def do_fuse(q: Q, kw, sem, params=ranking.DEFAULT_FUSE, questions=True):
    cands = {i for i, _ in kw} | {i for i, _ in sem}
    created = {i: f"{i:012d}" for i in cands}
    pos = {i: i for i in cands}
    asked = (q.store.questions & cands) if questions else set()
    return [i for i, _ in ranking.fuse(kw, sem, created, position=pos, questions=asked, params=params)]


def minmax(lst):
    if not lst:
        return {}
    v = [s for _, s in lst]
    hi, lo = max(v), min(v)
    sp = hi - lo
    return {i: (s - lo) / sp if sp > 1e-12 else 1.0 for i, s in lst}


def fuse_general(q: Q, lists: list[tuple[list, float]], params=ranking.DEFAULT_FUSE, questions=True,
                 extra_nb=None, extra_factor=None):
    """The recipe generalised to any number of weighted lists (min-max each, blend, neighbours,
    questions). `extra_nb`: optional fn(base, i) -> extra neighbour share."""
    p = params
    base = defaultdict(float)
    for lst, w in lists:
        for i, s in minmax(lst).items():
            base[i] += w * s
    st = q.store
    asked = st.questions if questions else set()
    score = {}
    for i in base:
        best = 0.0
        for d in range(1, p.neighbour_window + 1):
            w = p.neighbour_decay ** (d - 1)
            b_, a_ = i - d, i + d
            if b_ in base:
                best = max(best, base[b_] * w * (p.after_question_boost if b_ in asked else 1.0))
            if a_ in base:
                best = max(best, base[a_] * w)
        score[i] = base[i] + p.neighbour_weight * best
        if extra_nb is not None:
            score[i] += extra_nb(base, i)
        if i in asked:
            score[i] *= p.question_factor
        if extra_factor is not None and i in extra_factor[0]:
            score[i] *= extra_factor[1]
    return [i for i, _ in sorted(score.items(), key=lambda kv: (-kv[1], -kv[0]))]


# --------------------------------------------------------------------------- fourth round
def product_vectors(st: Store) -> UserVectors:
    """The store as the product keeps a user's vectors (memory/vectors.py): its names, subjects
    and vocabulary counted by the product's own code; memory ids are the indices as strings."""
    if "vectors" not in st.extra:
        st.extra["vectors"] = UserVectors.build([str(i) for i in range(st.N)], st.vec, texts=st.texts)
    return st.extra["vectors"]


def about_others(q: Q, candidates) -> set[int]:
    """The candidates whose subject is only people the question does not name (the product's rule)."""
    vectors = product_vectors(q.store)
    return {int(m) for m in vectors.about_others((str(i) for i in candidates), vectors.query_names(q.text))}


def respelt(q: Q, weights: dict[str, float]) -> dict[str, float]:
    """The product's respelling (memory/spelling.py) of the terms no memory holds, at weight 1."""
    out = dict(weights)
    for t in q.terms:
        stems = tokens(t)
        if len(stems) == 1 and stems[0] not in q.store.postings:
            for stem in product_vectors(q.store).respellings(t):
                out.setdefault(stem, 1.0)
    return out


def fuse_subject(q: Q, lists: list[tuple[list, float]], factor: float = 0.7) -> list[int]:
    """fuse_general with the subject signal: a candidate about others has its score x `factor`."""
    cands = {i for lst, _ in lists for i, _ in lst}
    others = about_others(q, cands) if factor != 1.0 else set()
    return fuse_general(q, lists, extra_factor=(others, factor))


# --------------------------------------------------------------------------- metrics
def evaluate(qs: list[Q], fn) -> dict[str, float]:
    h = {1: [], 5: [], 10: []}
    for q in qs:
        ranked = fn(q)
        srcs = [q.store.sources[i] for i in ranked[:10]]
        for k in h:
            h[k].append(any(s & q.gold for s in srcs[:k]))
    return {k: 100 * statistics.fmean(v) for k, v in h.items()}


def ceiling(qs):
    return 100 * statistics.fmean(any(s & q.gold for s in q.store.sources) for q in qs)


# --------------------------------------------------------------------------- more signals
def gap(lst, k=10) -> float:
    """How far the list's best stands out: (top - k-th) / (top - last)."""
    if len(lst) < 2:
        return 0.0
    s = [x for _, x in lst]
    return (s[0] - s[min(k, len(s)) - 1]) / (s[0] - s[-1] + 1e-9)


def bigram_bonus(q: Q, kw, window=1):
    """Keyword scores plus, per adjacent pair of query terms found within `window` words of each
    other in the memory, the smaller of the two terms' IDF."""
    st = q.store
    stems = [s[0] for t in kept_terms(st, q.terms) if (s := tokens(t))]
    if len(stems) < 2:
        return kw
    pairs = list(zip(stems, stems[1:]))
    idf = lambda t: math.log((st.N - st.df[t] + 0.5) / (st.df[t] + 0.5))  # noqa: E731
    out = []
    for d, s in kw:
        pos = defaultdict(list)
        for k, t in enumerate(st.toks[d]):
            pos[t].append(k)
        for a, b in pairs:
            if a in pos and b in pos and any(0 < abs(pb - pa) <= window + 1 for pa in pos[a] for pb in pos[b]):
                s += min(idf(a), idf(b))
        out.append((d, s))
    return sorted(out, key=lambda kv: -kv[1])


def logistic_ranker_report(queries) -> list[str]:
    """A class-balanced logistic regression over per-candidate features (the recipe's lists,
    neighbour shares, raw cosine, IDF coverage, question flags), fitted on one store and
    evaluated on both, and leave-one-conversation-out over both stores: how far any linear
    fusion of these signals can go."""
    names = "kw sem nbkw1 nbsem1 nbkw2 nbsem2 cos cov isq prevq kw*sem nbbase".split()

    def feats(q):
        st = q.store
        kn, sn = minmax(bm25_search(q)), minmax(topn(q.sem, 100))
        base = {i: kn.get(i, 0) + 0.7 * sn.get(i, 0) for i in set(kn) | set(sn)}
        terms = [s for t in kept_terms(st, q.terms) for s in tokens(t)[:1]]
        w = {t: math.log(1 + (st.N - st.df[t] + 0.5) / (st.df[t] + 0.5)) for t in terms}
        tot = sum(w.values()) or 1
        ids = sorted(base)
        X, y = [], []
        for i in ids:
            nb = lambda d, src: max(src.get(i - d, 0), src.get(i + d, 0))  # noqa: E731
            X.append([kn.get(i, 0), sn.get(i, 0), nb(1, kn), nb(1, sn), nb(2, kn), nb(2, sn), float(q.sem[i]),
                      sum(v for t, v in w.items() if t in st.tf[i]) / tot, float(i in st.questions),
                      base.get(i - 1, 0) * ((i - 1) in st.questions), kn.get(i, 0) * sn.get(i, 0),
                      max(nb(1, base), 0.5 * nb(2, base))])
            y.append(float(bool(st.sources[i] & q.gold)))
        return ids, np.array(X), np.array(y)

    cache = {k: [(q, *feats(q)) for q in queries[k]] for k in queries}

    def fit(rows, cols, l2):
        X = np.vstack([x[:, cols] for _, _, x, _ in rows])
        y = np.concatenate([yy for _, _, _, yy in rows])
        X = np.hstack([X, np.ones((len(X), 1))])
        sw = np.where(y > 0, 0.5 / y.mean(), 0.5 / (1 - y.mean()))
        beta = np.zeros(X.shape[1])
        for _ in range(30):
            p = 1 / (1 + np.exp(-X @ beta))
            g = X.T @ (sw * (p - y)) + l2 * np.r_[beta[:-1], 0]
            H = (X * (sw * p * (1 - p))[:, None]).T @ X + l2 * np.eye(len(beta))
            beta -= np.linalg.solve(H, g)
        return beta

    def hit5(rows, cols, beta):
        out = []
        for q, ids, X, _ in rows:
            order = [ids[j] for j in np.argsort(-(X[:, cols] @ beta[:-1]), kind="stable")]
            out.append(any(q.store.sources[i] & q.gold for i in order[:5]))
        return out

    lines = []
    for cols in (list(range(12)), [0, 1, 6, 7, 11, 8, 9], [0, 1, 11, 8, 9]):
        l2 = 30.0
        both = cache["turns"] + cache["facts"]
        cells = []
        for label, train in (("turns", cache["turns"]), ("facts", cache["facts"]), ("both", both)):
            b = fit(train, cols, l2)
            cells.append(f"fit {label}: {100 * np.mean(hit5(cache['turns'], cols, b)):.1f} / "
                         f"{100 * np.mean(hit5(cache['facts'], cols, b)):.1f}")
        lo = {"turns": [], "facts": []}
        for c in sorted({q.store.conv for q, *_ in both}):
            b = fit([r for r in both if r[0].store.conv != c], cols, l2)
            for k in lo:
                lo[k] += hit5([r for r in cache[k] if r[0].store.conv == c], cols, b)
        cells.append(f"leave-one-conversation-out: {100 * np.mean(lo['turns']):.1f} / {100 * np.mean(lo['facts']):.1f}")
        lines.append(f"logistic ranker [{'+'.join(names[c] for c in cols)}]: " + "; ".join(cells))
    return lines


# --------------------------------------------------------------------------- the table
def variants():
    S = lambda q: topn(q.sem, 100)  # noqa: E731
    K = lambda q, p=BM25(): bm25_search(q, p)  # noqa: E731
    F = ranking.FuseParams
    rec = lambda kw, sem=None, w=0.7, fp=ranking.DEFAULT_FUSE, **kx: (  # noqa: E731
        lambda q: fuse_general(q, [(kw(q), 1.0), ((sem or S)(q), w)], fp, **kx))
    v: list[tuple[str, str, object]] = []
    add = lambda group, name, fn: v.append((group, name, fn))  # noqa: E731
    g = "baseline"
    add(g, "keyword, FTS5 (as the product)", lambda q: [i for i, _ in fts_search(q)])
    add(g, "keyword, Python BM25 (k1 1.2, b 0.75)", lambda q: [i for i, _ in K(q)])
    add(g, "semantic (embedding_text)", lambda q: [i for i, _ in S(q)])
    add(g, "RECIPE, FTS5 (ranking.fuse)", lambda q: do_fuse(q, fts_search(q), S(q)))
    add(g, "RECIPE, Python BM25", rec(K))
    g = "BM25"
    for k1 in (0.2, 0.6, 0.9, 1.5, 2.0, 3.0):
        add(g, f"k1 {k1}", rec(lambda q, p=BM25(k1=k1): K(q, p)))
    for b in (0.0, 0.3, 0.5, 0.9, 1.0):
        add(g, f"b {b}", rec(lambda q, p=BM25(b=b): K(q, p)))
    for k1, b in ((0.05, 0.0), (0.2, 0.0), (0.4, 0.0), (0.2, 0.3)):
        add(g, f"k1 {k1}, b {b}", rec(lambda q, p=BM25(k1=k1, b=b): K(q, p)))
    add(g, "idf ln(1 + (N-n+.5)/(n+.5)) (Lucene)", rec(lambda q: K(q, BM25(idf="lucene"))))
    for d in (0.5, 1.0):
        add(g, f"BM25+ delta {d}", rec(lambda q, p=BM25(delta=d): K(q, p)))
    for mu in (50, 200, 1000):
        add(g, f"Dirichlet LM mu {mu}", rec(lambda q, p=BM25(lm_mu=mu): K(q, p)))
    g = "document expansion (neighbours' words)"
    for lam in (0.1, 0.2, 0.3, 0.5):
        for win in (1, 2):
            add(g, f"weight {lam}, window {win}", rec(lambda q, p=BM25(expand=lam, expand_window=win): K(q, p)))
    add(g, "weight 0.1, window 1, not in length", rec(lambda q: K(q, BM25(expand=0.1, expand_len=False))))
    g = "RM3 (keyword side)"
    for d, t, a in ((3, 10, 0.2), (3, 10, 0.4), (5, 10, 0.2), (5, 20, 0.4), (10, 20, 0.2)):
        add(g, f"from keyword top {d}, {t} terms, alpha {a}", rec(lambda q, d=d, t=t, a=a: rm3(q, K(q), d, t, a)))

    def fused_first(q):
        return [(i, 1.0 / (k + 1)) for k, i in enumerate(fuse_general(q, [(K(q), 1.0), (S(q), 0.7)])[:20])]

    for d, t, a in ((3, 10, 0.2), (5, 20, 0.4)):
        add(g, f"from fused top {d}, {t} terms, alpha {a}", rec(lambda q, d=d, t=t, a=a: rm3(q, fused_first(q), d, t, a)))
    g = "context vectors"
    for mode, a in (("avg", 0.1), ("avg", 0.3), ("avg", 0.5), ("text", 0.3), ("text", 0.5), ("text", 1.0),
                    ("prevtext", 0.5), ("textonly", 1.0)):
        add(g, f"{mode} {a} instead of the vector",
            rec(K, lambda q, m=mode, a=a: topn(ctx_vectors(q.store, m, a) @ q.qv, 100)))
    for mode, a, w in (("avg", 0.5, 0.2), ("avg", 0.5, 0.5), ("textonly", 1.0, 0.2), ("textonly", 1.0, 0.35)):
        add(g, f"third list: {mode} {a} at {w}", lambda q, m=mode, a=a, w=w: fuse_general(
            q, [(K(q), 1.0), (S(q), 0.7), (topn(ctx_vectors(q.store, m, a) @ q.qv, 100), w)]))
    g = "fusion"
    for k, gm in ((10, 0.5), (10, 1.0), (5, 2.0)):
        def adaptive(q, k=k, gm=gm):
            kw, sm = K(q), S(q)
            ws = min(max(0.7 * ((gap(sm, k) + 1e-3) / (gap(kw, k) + 1e-3)) ** gm, 0.2), 2.0) if kw else 0.7
            return fuse_general(q, [(kw, 1.0), (sm, ws)])
        add(g, f"adaptive semantic weight from score gaps (k {k}, gamma {gm})", adaptive)
    for w in (0.3, 0.5):
        def simnb(q, w=w):
            v = q.store.vec
            extra = lambda base, i: w * max([base.get(j, 0.0) * max(float(v[i] @ v[j]), 0.0)  # noqa: E731
                                             for j in (i - 2, i - 1, i + 1, i + 2) if 0 <= j < q.store.N] or [0.0])
            return fuse_general(q, [(K(q), 1.0), (S(q), 0.7)], extra_nb=extra)
        add(g, f"neighbour share x cosine(memory, neighbour), weight {w}", simnb)
    for w in (0.3, 0.5):
        def qnb(q, w=w):
            extra = lambda base, i: w * max([max(float(q.sem[j]) - 0.3, 0.0)  # noqa: E731
                                             for j in (i - 2, i - 1, i + 1, i + 2) if 0 <= j < q.store.N] or [0.0])
            return fuse_general(q, [(K(q), 1.0), (S(q), 0.7)], extra_nb=extra)
        add(g, f"neighbours' own cosine to the query (any memory), weight {w}", qnb)
    for win, dec in ((3, 0.5), (4, 0.7), (6, 0.8)):
        add(g, f"neighbour window {win}, decay {dec}", rec(K, fp=F(neighbour_window=win, neighbour_decay=dec)))
    for win in (1, 3):
        add(g, f"bigram bonus (query terms within {win} words)", rec(lambda q, win=win: bigram_bonus(q, K(q), win)))
    g = "vectors"
    for lam, n_pc in ((0.5, 0), (1.0, 0), (1.0, 1), (1.0, 2), (1.0, 4)):
        def cen(q, lam=lam, n_pc=n_pc):
            st = q.store
            key = ("abtt", lam, n_pc)
            if key not in st.extra:
                mu = st.vec.mean(0)
                x = st.vec - lam * mu
                P = np.linalg.svd(st.vec - mu, full_matrices=False)[2][:n_pc] if n_pc else None
                if P is not None:
                    x = x - (x @ P.T) @ P
                st.extra[key] = (mu, P, x / np.linalg.norm(x, axis=1, keepdims=True))
            mu, P, x = st.extra[key]
            qv = q.qv - lam * mu
            if P is not None:
                qv = qv - (qv @ P.T) @ P
            return topn(x @ (qv / np.linalg.norm(qv)), 100)
        add(g, f"semantic alone, centred {lam}, top {n_pc} PCs removed", lambda q, c=cen: [i for i, _ in c(q)])
        add(g, f"centred {lam}, top {n_pc} PCs removed", rec(K, cen))
    add(g, "third list: vectors of the raw text (with [date]) at 0.2, main 0.6",
        lambda q: fuse_general(q, [(K(q), 1.0), (S(q), 0.6), (topn(raw_vectors(q.store) @ q.qv, 100), 0.2)]))
    g = "word-vector expansion"
    C = lambda q: topn(centred_cosines(q), 100)  # noqa: E731
    for tau, m, a in ((0.6, 1, 0.6), (0.6, 3, 0.6), (0.7, 1, 0.3), (0.7, 1, 0.6), (0.7, 3, 0.6), (0.8, 1, 0.6)):
        add(g, f"query terms + similar store words (cos >= {tau}, {m} per term, x{a})",
            rec(lambda q, t=tau, m=m, a=a: bm25_search(q, weights=word_expansion(q, t, m, a))))
    g = "stack"
    P2 = BM25(k1=0.2, b=0.0)
    PS = BM25(k1=0.2, b=0.0, expand=0.1, expand_len=False)
    add(g, "centred", rec(K, C))
    add(g, "k1 0.2, b 0 + centred", rec(lambda q: K(q, P2), C))
    add(g, "word expansion + centred", rec(lambda q: bm25_search(q, weights=word_expansion(q)), C))
    add(g, "k1 0.2, b 0 + word expansion + centred", rec(lambda q: bm25_search(q, P2, weights=word_expansion(q)), C))
    add(g, STACK,
        rec(lambda q: bm25_search(q, PS, weights=word_expansion(q)), C))
    add(g, "STACK, word expansion of store words only",
        rec(lambda q: bm25_search(q, PS, weights=word_expansion(q, in_vocab_only=True)), C))
    add(g, "STACK, word expansion of store words only, without doc exp.",
        rec(lambda q: bm25_search(q, P2, weights=word_expansion(q, in_vocab_only=True)), C))
    add(g, "STACK without doc exp.", rec(lambda q: bm25_search(q, P2, weights=word_expansion(q)), C))
    add(g, "STACK without word expansion", rec(lambda q: bm25_search(q, PS), C))
    add(g, "STACK without centring", rec(lambda q: bm25_search(q, PS, weights=word_expansion(q))))
    add(g, "STACK without k1/b (1.2 / 0.75)",
        rec(lambda q: bm25_search(q, BM25(expand=0.1, expand_len=False), weights=word_expansion(q)), C))
    for w in (0.85, 1.0):
        add(g, f"STACK, semantic weight {w}", rec(lambda q: bm25_search(q, PS, weights=word_expansion(q)), C, w=w))
    for floor in (0.3, 0.7):
        def importance(q, floor=floor):
            index, vecs = q.store.extra["wvec"]
            w = word_expansion(q)
            for t in kept_terms(q.store, q.terms):
                if t in index:
                    c = max(float(vecs[index[t]] @ q.qv), 0.0)
                    for s_ in tokens(t):
                        if w.get(s_) == 1.0:
                            w[s_] = floor + (1 - floor) * c / 0.6
            return w
        add(g, f"STACK, query words weighted by cos(word, query) (floor {floor})",
            rec(lambda q, f=importance: bm25_search(q, PS, weights=f(q)), C))
    for n in (50, 150):
        add(g, f"STACK, {n} candidates per list", lambda q, n=n: fuse_general(
            q, [(bm25_search(q, PS, weights=word_expansion(q), limit=n), 1.0), (topn(centred_cosines(q), n), 0.7)]))
    for nw in (0.4, 0.6):
        add(g, f"STACK, neighbour weight {nw}",
            rec(lambda q: bm25_search(q, PS, weights=word_expansion(q)), C, fp=F(neighbour_weight=nw)))
    g = "fourth round"
    KW = lambda q, p: bm25_search(q, p, weights=respelt(q, plain_weights(q)))  # noqa: E731
    for lam in (0.0, 0.05, 0.1, 0.2):
        P = BM25(k1=0.2, b=0.0, expand=lam, expand_len=False)
        for f in (1.0, 0.6, 0.7, 0.8):
            add(g, f"k1 0.2, b 0, doc exp. {lam}, centred, subject x{f}, respelling",
                lambda q, P=P, f=f: fuse_subject(q, [(KW(q, P), 1.0), (C(q), 0.7)], f))
        add(g, f"k1 0.2, b 0, doc exp. {lam}, centred, subject x0.7, no respelling",
            lambda q, P=P: fuse_subject(q, [(bm25_search(q, P), 1.0), (C(q), 0.7)], 0.7))
        add(g, f"k1 0.2, b 0, doc exp. {lam}, centred, subject x0.7, respelling, word expansion",
            lambda q, P=P: fuse_subject(q, [(bm25_search(q, P, weights=respelt(q, word_expansion(q, in_vocab_only=True))), 1.0), (C(q), 0.7)], 0.7))
    P = BM25(k1=0.2, b=0.0, expand=0.1, expand_len=False)
    add(g, "FOURTH: doc exp. 0.1, subject x0.7, respelling, raw cosine",
        lambda q: fuse_subject(q, [(KW(q, P), 1.0), (S(q), 0.7)], 0.7))
    add(g, "FOURTH: doc exp. 0.1, subject x0.7, respelling, FTS5 k1/b",
        lambda q: fuse_subject(q, [(KW(q, BM25(expand=0.1, expand_len=False)), 1.0), (C(q), 0.7)], 0.7))
    return v


def plain_weights(q: Q) -> dict[str, float]:
    """Every kept query term at weight 1 (what bm25_search does without `weights`)."""
    return {s: 1.0 for t in kept_terms(q.store, q.terms) for s in tokens(t)}


def raw_vectors(st: Store) -> np.ndarray:
    if "raw" not in st.extra:
        st.extra["raw"] = embed_cached(st.extra["emb"], st.texts, True)
    return st.extra["raw"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="", help="run only the variants whose group or name contains this")
    ap.add_argument("--ranker", action="store_true", help="also the logistic-ranker bound (slow)")
    ap.add_argument("--check-bm25", action="store_true", help="also: the Python BM25's lists against FTS5's")
    ap.add_argument("--bootstrap", action="store_true", help="also STACK vs RECIPE: fixed / broken, 95 %% interval, per conversation")
    args = ap.parse_args()
    stores, queries = load()
    load_word_vectors(stores, queries)
    print(f"LoCoMo dev, categories 1-4: {len(queries['turns'])} questions; turns {sum(s.N for s in stores['turns'])}, "
          f"facts {sum(s.N for s in stores['facts'])} (ceiling {ceiling(queries['facts']):.1f})")
    print(f"{'group':40s} {'variant':70s} {'turns h@1 h@5 h@10':>20s}   {'facts h@1 h@5 h@10':>20s}")
    for group, name, fn in variants():
        if args.only and args.only.lower() not in (group + " " + name).lower():
            continue
        r = {k: evaluate(queries[k], fn) for k in ("turns", "facts")}
        print(f"{group[:40]:40s} {name[:70]:70s} " + "   ".join(
            f"{r[k][1]:5.1f} {r[k][5]:5.1f} {r[k][10]:5.1f}".rjust(20) for k in ("turns", "facts")), flush=True)
    if args.check_bm25:
        for kind in ("turns", "facts"):
            same = top5 = 0
            for q in queries[kind]:
                a, b = [i for i, _ in fts_search(q)], [i for i, _ in bm25_search(q)]
                same += a == b
                top5 += a[:5] == b[:5]
            print(f"{kind}: Python BM25 = FTS5 bm25(m, 1.0, 0.5): the same 100 hits in the same order for {same} "
                  f"of {len(queries[kind])} questions, the same top 5 for {top5}")
    if args.ranker:
        for line in logistic_ranker_report(queries):
            print(line)
    if args.bootstrap:
        named = {name: fn for _, name, fn in variants()}
        for label, new in (("STACK", STACK), ("FOURTH (the product)", FOURTH)):
            print(f"RECIPE vs {label}:")
            for line in bootstrap(queries, named["RECIPE, Python BM25"], named[new]):
                print(line)


STACK = "STACK: k1 0.2, b 0, doc exp. 0.1 + word expansion + centred"
FOURTH = "k1 0.2, b 0, doc exp. 0.1, centred, subject x0.7, respelling"


def bootstrap(queries, base, new, n=2000, seed=0) -> list[str]:
    """hit@5 of `new` against `base` per store: questions fixed / broken, a bootstrap 95 %
    interval of the difference, and each conversation's hit@5 before and after."""
    rng = np.random.default_rng(seed)
    out = []
    for kind in ("turns", "facts"):
        qs = queries[kind]
        a = np.array([any(q.store.sources[i] & q.gold for i in base(q)[:5]) for q in qs], float)
        b = np.array([any(q.store.sources[i] & q.gold for i in new(q)[:5]) for q in qs], float)
        d = b - a
        boots = [100 * d[rng.integers(0, len(d), len(d))].mean() for _ in range(n)]
        convs = "; ".join(
            f"{c} {100 * a[ix].mean():.1f} -> {100 * b[ix].mean():.1f}"
            for c in sorted({q.store.conv for q in qs})
            for ix in [[k for k, q in enumerate(qs) if q.store.conv == c]]
        )
        out.append(f"{kind}: {100 * a.mean():.1f} -> {100 * b.mean():.1f}, fixed {int((d > 0).sum())}, broken "
                   f"{int((d < 0).sum())}, 95 % interval [{np.percentile(boots, 2.5):+.1f}, {np.percentile(boots, 97.5):+.1f}]; {convs}")
    return out


if __name__ == "__main__":
    main()
