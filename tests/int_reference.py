"""An independent integer reference of a quantized layer graph: the oracle the golden model is checked against.

It executes each layer on whole int8 tensors with the processor's integer semantics, written out plainly and
without code from the compiler back end, the golden model or the float reference:

* conv/fc: ``acc = sum over (ky, kx, ic) of x * w`` on the zero-padded input, int32 wrap-around;
* maxpool: ``acc = max`` over the window (zero padding), avgpool/gap: ``acc = sum * imm``, add:
  ``acc = a * imm_a + b * imm_b``, concat: the inputs stacked on the channel axis;
* post-processing per output channel: ``v = wrap32(acc + bias)``, ``m = mult_pos if v >= 0 else mult_neg``,
  ``t = v * m``, ``t = (t + 2**(shift-1)) >> shift`` if ``shift > 0`` (round half up), ``y = clamp(t, lo, hi)``;
* host layers: dequantize the inputs (``float32(q) * float32(scale)``, as the runtime), run the ONNX nodes with
  ``onnx.reference``, quantize the outputs with ``clip(np.round(x / scale), -128, 127)``.

The sums of products are computed as float64 matrix products: every product is at most ``2**14`` in magnitude, so
any sum of fewer than ``2**39`` of them is exact in float64 before the int32 wrap.
"""

from __future__ import annotations

import numpy as np
import onnx

from dlproc.compiler.float_ref import float_evaluator
from dlproc.compiler.graph import Graph, Layer, Requant

__all__ = ["run_int_reference", "dequantize"]


def _wrap32(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.int64)
    return ((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _exact_int(v: np.ndarray) -> np.ndarray:
    """float64 sums of integer products back to int64 (they are exact integers)."""
    return np.rint(v).astype(np.int64)


def _post(acc: np.ndarray, rq: Requant) -> np.ndarray:
    """Post-process ``acc`` ``[N, C, ...]`` per channel (axis 1) into int8."""
    shape = (1, -1) + (1,) * (acc.ndim - 2)
    bias = np.asarray(rq.bias, np.int64).reshape(shape)
    v = _wrap32(np.asarray(acc, np.int64) + bias)
    m = np.where(v >= 0, np.asarray(rq.mult_pos, np.int64).reshape(shape),
                 np.asarray(rq.mult_neg, np.int64).reshape(shape))
    shift = np.asarray(rq.shift, np.int64).reshape(shape)
    t = v * m
    half = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    t = np.right_shift(t + half, shift)
    return np.clip(t, rq.lo, rq.hi).astype(np.int8)


def _padded(x: np.ndarray, pads) -> np.ndarray:
    top, left, bottom, right = pads
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))


def _taps(xp: np.ndarray, kernel, stride, dilation, out_hw) -> list[np.ndarray]:
    """Every kernel tap ``(ky, kx)`` (row-major) as a view ``[N, C, OH, OW]`` of the padded input."""
    views = []
    for ky in range(kernel[0]):
        for kx in range(kernel[1]):
            y0, x0 = ky * dilation[0], kx * dilation[1]
            views.append(xp[:, :, y0:y0 + (out_hw[0] - 1) * stride[0] + 1:stride[0],
                            x0:x0 + (out_hw[1] - 1) * stride[1] + 1:stride[1]])
    return views


def _out_hw(x: np.ndarray, kernel, stride, dilation, pads) -> tuple[int, int]:
    return tuple((x.shape[2 + i] + pads[i] + pads[i + 2] - (kernel[i] - 1) * dilation[i] - 1) // stride[i] + 1
                 for i in range(2))


def _conv(x: np.ndarray, layer: Layer) -> np.ndarray:
    a, wq = layer.attrs, layer.quant.weight.astype(np.float64)
    oc, icg, kh, kw = wq.shape
    group, n = a["group"], x.shape[0]
    out_hw = _out_hw(x, (kh, kw), a["stride"], a["dilation"], a["pads"])
    taps = _taps(_padded(x.astype(np.float64), a["pads"]), (kh, kw), a["stride"], a["dilation"], out_hw)
    # im2col: cols[g, (ic, tap), (n, oh, ow)] against w[g, oc, (ic, tap)], one matrix product per group
    cols = np.stack(taps, axis=2).reshape(n, group, icg * kh * kw, out_hw[0] * out_hw[1])
    cols = cols.transpose(1, 2, 0, 3).reshape(group, icg * kh * kw, -1)
    acc = np.matmul(wq.reshape(group, oc // group, icg * kh * kw), cols)
    acc = acc.reshape(group, oc // group, n, *out_hw).transpose(2, 0, 1, 3, 4)
    return _exact_int(acc.reshape(n, oc, *out_hw))


def _run_host(graph: Graph, layer: Layer, inputs: list[np.ndarray], cache: dict) -> list[np.ndarray]:
    """The host layer's ONNX nodes on float inputs ``[N, ...]``, one sample at a time (the model is batch 1)."""
    if layer.name not in cache:
        produced = {v for node in layer.onnx_nodes for v in node.output}
        consts = sorted({v for node in layer.onnx_nodes for v in node.input
                         if v and v not in produced and v not in layer.inputs})
        body = onnx.helper.make_graph(
            list(layer.onnx_nodes), layer.name,
            [onnx.helper.make_tensor_value_info(v, onnx.TensorProto.FLOAT, graph.tensors[v].onnx_shape)
             for v in dict.fromkeys(layer.inputs)],
            [onnx.helper.make_empty_tensor_value_info(v) for v in layer.outputs],
            [onnx.numpy_helper.from_array(np.asarray(graph.initializers[v]), v) for v in consts])
        model = onnx.helper.make_model(body, opset_imports=[onnx.helper.make_opsetid("", graph.opset)])
        cache[layer.name] = float_evaluator(model)
    evaluator = cache[layer.name]
    feeds = dict(zip(layer.inputs, inputs, strict=True))
    results = []
    for i in range(inputs[0].shape[0]):
        one = {k: v[i:i + 1].astype(np.float32).reshape(graph.tensors[k].onnx_shape) for k, v in feeds.items()}
        results.append(evaluator.run(None, one))
    return [np.concatenate([r[j] for r in results]) for j in range(len(layer.outputs))]


def _quantize(x: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, np.float64) / scale), -128, 127).astype(np.int8)


def run_int_reference(graph: Graph, x_float: np.ndarray) -> dict[str, np.ndarray]:
    """Execute a quantized graph on int8 tensors.

    Parameters
    ----------
    graph : Graph
        A quantized graph (:func:`dlproc.compiler.quantize.quantize`).
    x_float : ndarray
        Float network input ``[N, C, H, W]`` (quantized here with the input tensor's scale).

    Returns
    -------
    dict of str to ndarray of int8
        Every tensor, network input included, in its ONNX shape with batch ``N``.
    """
    info = graph.tensors[graph.inputs[0]]
    x_float = np.asarray(x_float)
    if x_float.shape == info.onnx_shape[1:]:
        x_float = x_float[None]
    n = x_float.shape[0]
    values = {graph.inputs[0]: _quantize(x_float, info.scale)}
    cache: dict = {}
    for layer in graph.layers:
        ins = [values[v] for v in layer.inputs]
        if layer.target == "host":
            # dequantize as the runtime does: float32(q) * float32(scale)
            floats = [q.astype(np.float32) * np.float32(graph.tensors[v].scale)
                      for q, v in zip(ins, layer.inputs, strict=True)]
            outs = _run_host(graph, layer, floats, cache)
            for name, out in zip(layer.outputs, outs, strict=True):
                info = graph.tensors[name]
                values[name] = _quantize(out, info.scale).reshape((n,) + info.onnx_shape[1:])
            continue
        maps = [q.reshape((n,) + graph.tensors[v].shape).astype(np.int64) for q, v in zip(ins, layer.inputs,
                                                                                          strict=True)]
        x, a, quant = maps[0], layer.attrs, layer.quant
        if layer.op == "conv":
            acc = _conv(x, layer)
        elif layer.op == "fc":
            acc = _exact_int(x.reshape(n, -1).astype(np.float64) @ quant.weight.astype(np.float64).T)
        elif layer.op == "maxpool":
            out_hw = _out_hw(x, a["kernel"], a["stride"], (1, 1), a["pads"])
            acc = np.max(np.stack(_taps(_padded(x, a["pads"]), a["kernel"], a["stride"], (1, 1), out_hw)), axis=0)
        elif layer.op == "avgpool":
            out_hw = _out_hw(x, a["kernel"], a["stride"], (1, 1), a["pads"])
            taps = _taps(_padded(x, a["pads"]), a["kernel"], a["stride"], (1, 1), out_hw)
            acc = np.sum(np.stack(taps), axis=0) * quant.input_mults[0]
        elif layer.op == "gap":
            acc = x.sum(axis=(2, 3)) * quant.input_mults[0]
        elif layer.op == "add":
            acc = maps[0] * quant.input_mults[0] + maps[1] * quant.input_mults[1]
        elif layer.op == "mul":  # a [C, 1, 1] second operand broadcasts
            acc = maps[0].astype(np.int64) * maps[1].astype(np.int64)
        elif layer.op == "concat":
            acc = np.concatenate(maps, axis=1)
        else:
            raise ValueError(f"layer {layer.name!r}: unknown kind {layer.op!r}")
        y = _post(_wrap32(acc), quant.requant)
        if quant.lut is not None:  # the nonlinear unit: int8 y -> table[y + 128]
            y = np.asarray(quant.lut, np.int8)[y.astype(np.int64) + 128]
        values[layer.output] = y.reshape((n,) + graph.tensors[layer.output].onnx_shape[1:])
    return values


def dequantize(graph: Graph, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``q * scale`` for every tensor of ``values``."""
    return {k: v.astype(np.float64) * graph.tensors[k].scale for k, v in values.items()}
