"""Run an ONNX model's int8 weights with int8 arithmetic instead of widening them to float32.

The shipped all-MiniLM-L6-v2 stores each weight matrix as int8 plus a float scale per output
column, and widens it in the graph (``MatMul(x, Mul(Cast(W_int8), scale))``). onnxruntime folds
that into a float32 constant at load, so every query reads ~40 MB of float weights: 1.7 ms for a
nine-token query on 2 cores, mostly spent on memory traffic. Rewritten to onnxruntime's
``DynamicQuantizeMatMul`` (activations quantized to uint8 per call, int8 x uint8 products, the
same per-column scales), the weights stay 10 MB of int8 and a query takes 0.65 ms; long texts
are embedded about 1.6x faster. The weights are the published ones, untouched; only the
activations are rounded, and vectors stay within cosine 0.99 of the float path.

One consequence shapes the caller: the activation scale is taken over the whole input tensor,
so texts run together in one batch would shift each other's vectors (cosine down to 0.965 on
LoCoMo turns). memory.embeddings therefore runs one text at a time.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

__all__ = ["integer_matmuls"]


def integer_matmuls(model: bytes) -> tuple[bytes, int]:
    """``model`` with every ``MatMul`` by a widened int8 constant made a ``DynamicQuantizeMatMul``.

    Returns the new model and how many products were rewritten. Anything that does not match the
    pattern exactly (the weight or its scale used elsewhere, a non-constant weight) is left as is.
    """
    import onnx  # imported here: only loading the embedding model needs it

    float32 = onnx.TensorProto.FLOAT
    proto = onnx.load_from_string(model)
    graph = proto.graph
    constants = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    readers = Counter(name for node in graph.node for name in node.input)

    def only_use(name: str) -> bool:
        return readers[name] == 1

    folded: set[str] = set()
    for node in graph.node:
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
            continue
        widen = producer.get(node.input[1])
        if widen is None or widen.op_type != "Mul" or not only_use(widen.output[0]):
            continue
        cast, scale = producer.get(widen.input[0]), constants.get(widen.input[1])
        if cast is None or cast.op_type != "Cast" or not only_use(cast.output[0]) or _cast_to(cast) != float32:
            continue
        if scale is None or scale.data_type != float32:
            continue
        weight = constants.get(cast.input[0])
        if weight is None or weight.data_type != onnx.TensorProto.INT8 or len(weight.dims) != 2:
            continue
        columns = weight.dims[1]
        if not only_use(scale.name) or list(scale.dims) not in ([columns], [1, columns]):
            continue
        del scale.dims[:]
        scale.dims.append(columns)  # the op wants the per-column scale as a vector
        activations = node.input[0]
        del node.input[:]
        node.input.extend([activations, weight.name, scale.name])
        node.op_type, node.domain = "DynamicQuantizeMatMul", "com.microsoft"
        folded.update((widen.output[0], cast.output[0]))  # outputs are unique; names need not be

    kept = [node for node in graph.node if node.output[0] not in folded]
    del graph.node[:]
    graph.node.extend(kept)
    if not any(op.domain == "com.microsoft" for op in proto.opset_import):
        proto.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return proto.SerializeToString(), len(folded) // 2


def _cast_to(node: onnx.NodeProto) -> int | None:
    """The element type a ``Cast`` node casts to (its ``to`` attribute)."""
    return next((a.i for a in node.attribute if a.name == "to"), None)
