"""QONNX export of the quantized compact (one-site) GNN, in the flat form hls4ml converts faithfully.

    m = export_compact(qcompact, "site.onnx")     # Brevitas export_qonnx(dynamo=False) -> cleanup ->
                                                  # GemmToMatMul -> cleanup -> Neg+Add as Sub -> cleanup;
                                                  # saved as site_clean.onnx
    y = run_qonnx(m, x)                           # qonnx execute_onnx (or onnxruntime), batched

The recipe of shared/reference/hls (see shared/TOOLCHAIN.md): po2 quantizers, biases at input x
weight scale, every per-node layer a kron(I_N, W) Linear, aggregation ``m @ K.T`` with the
constant as the second MatMul operand, no reshape / reduction. For hls4ml, set the input layer
precision to ``input_precision(params)`` (the input Quant node is folded into the input type).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch


def export_compact(qcompact, path: str | os.PathLike):
    """Export ``qcompact`` (eval mode) to QONNX at ``path`` and return the cleaned ModelWrapper
    (also saved as ``<path stem>_clean.onnx``)."""
    import warnings

    from brevitas.export import export_qonnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    qcompact.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(qcompact, input_t=torch.zeros(1, qcompact.input_dim), export_path=str(path), dynamo=False)
    m = cleanup_model(ModelWrapper(str(path)))
    m = cleanup_model(m.transform(GemmToMatMul()))
    m = cleanup_model(neg_add_to_sub(m))
    m.save(str(path.with_name(path.stem + "_clean.onnx")))
    return m


def neg_add_to_sub(m):
    """Rewrite Add(a, Neg(b)) as Sub(a, b). Brevitas exports ``QuantTensor - tensor`` (h - c in the
    gated update) as Neg + Add; hls4ml 1.3 rejects Neg ("Unsupported operation type") but has Sub."""
    from onnx import helper

    g = m.graph
    for neg in [n for n in g.node if n.op_type == "Neg"]:
        users = [n for n in g.node if neg.output[0] in n.input]
        if len(users) != 1 or users[0].op_type != "Add":
            continue
        add = users[0]
        other = add.input[1] if add.input[0] == neg.output[0] else add.input[0]
        sub = helper.make_node("Sub", [other, neg.input[0]], list(add.output), name=add.name + "_sub")
        idx = list(g.node).index(add)
        g.node.remove(add)
        g.node.insert(idx, sub)
        g.node.remove(neg)
    return m


def op_types(m) -> list[str]:
    return sorted({n.op_type for n in m.graph.node})


def _batched(m, n: int):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    mb = ModelWrapper(m.model.SerializeToString())
    for vi in list(mb.graph.input) + list(mb.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_value = n
    del mb.graph.value_info[:]
    return mb.transform(InferShapes())


def run_qonnx(m, x: np.ndarray, batch: int = 5000) -> np.ndarray:
    """Execute the QONNX model with qonnx ``execute_onnx`` (its own Quant op) on x [S, in] (float32),
    in batches of ``batch`` samples (the batch dimension is set and shapes re-inferred)."""
    from qonnx.core.onnx_exec import execute_onnx

    x = np.asarray(x, np.float32)
    outs, cache = [], {}
    for s0 in range(0, len(x), batch):
        xb = x[s0:s0 + batch]
        if len(xb) not in cache:
            cache[len(xb)] = _batched(m, len(xb))
        mb = cache[len(xb)]
        outs.append(execute_onnx(mb, {mb.graph.input[0].name: xb})[mb.graph.output[0].name])
    return np.concatenate(outs)


def input_precision(params: dict) -> str:
    """hls4ml input layer precision = the input quantizer's fixed type (the silent-failure rule)."""
    q = params["q_in"]
    if q["signed"]:
        return f"fixed<{q['bits']},{q['bits'] + q['e']},RND_CONV,SAT>"
    return f"ufixed<{q['bits']},{q['bits'] + q['e']},RND_CONV,SAT>"
