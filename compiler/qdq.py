"""QDQ ONNX models: export a quantized graph as one, and import the scales of one quantized elsewhere.

Export (:func:`export_qdq`)
---------------------------
The exported model reproduces the processor's int8 tensors *exactly* when evaluated with ``onnx.reference``. A plain
``DequantizeLinear -> Conv -> QuantizeLinear`` chain cannot: its float32 products of real values are rounded, and
``QuantizeLinear`` rounds ``x / scale`` half to even, while the processor computes integer sums and requantizes with
``round_half_up(v * mult >> shift)`` using 16-bit multipliers that only approximate the scale ratio. So every
processor tensor ``t`` with scale ``s`` is carried as

* ``t_q`` (int8): the output of ``QuantizeLinear(t_pre, s, 0)``, where ``t_pre`` holds ``q * s`` in float32 for
  integers ``q`` computed exactly (``q * s / s`` is within ``2**-16`` of ``q``, so the quantization returns ``q``);
* ``t`` (float32, the original tensor name): ``DequantizeLinear(t_q, s, 0)``, the real value the processor's driver
  returns (``float32(q) * float32(s)``, bit for bit). The network input's view is ``<input>_dq``.

A processor layer reads the int8 tensors of its inputs (``Cast`` to float) and computes:

* conv/fc: ``Conv`` / ``MatMul`` of the integer-valued inputs with the integer weights (stored as int8
  initializers, ``Cast`` to float). Integer sums are exact in float32 while every partial sum stays below ``2**24``;
  layers whose bound ``128 * max_c sum|w_c|`` exceeds that compute in float64 (exact below ``2**53``);
* avgpool/gap: a depthwise ``Conv`` with an all-ones kernel (the processor's SUM mode, zero padding), maxpool:
  ``MaxPool`` (the processor only pads non-negative inputs, so its zero padding equals ONNX's), add: the int16 input
  multipliers, concat: ``Concat``;
* the post-processing in float64, exact for these magnitudes: ``v = acc + bias`` (wrapped to int32 with two ``Mod``
  when the bound allows overflow), ``m = Where(v < 0, mult_neg, mult_pos)``, ``t = Floor((v * m + 2**(shift-1)) *
  2**-shift)``, ``y = Min(Max(t, lo), hi)``.

The network input is quantized like the host does: ``Round(float64(x) / s)`` (half to even), clamped to int8, then
``QuantizeLinear``. Host layers keep their ONNX nodes, read the dequantized views, and their outputs that the
processor reads are quantized the same way. Weight scales do not appear (they are folded into the multipliers).

Import (:func:`strip_qdq`)
--------------------------
A model quantized elsewhere (onnxruntime's ``quantize_static`` in QDQ format, PyTorch's QDQ export) has
``QuantizeLinear -> DequantizeLinear`` pairs on activations and ``DequantizeLinear`` (or ``QuantizeLinear ->
DequantizeLinear``) on constant weights. :func:`strip_qdq` removes each activation pair (its readers read the float
tensor directly; a pair producing a network output becomes an ``Identity``) and records its scale for that tensor,
and replaces each dequantized constant by its float value (on its int8 grid) and records its scales. The compiler
keeps those scales instead of calibrating. Where the compiler fuses operators (conv + ReLU, conv + BatchNormalization)
the scales of the tensors that disappear are not used; weights that a folded BatchNormalization moved off their grid
are quantized anew (with a warning). The processor's activations are symmetric int8 with zero point 0: any other
activation type or a non-zero zero point raises :class:`~.errors.CompileError` naming the node (re-quantize with
symmetric int8 activations; silently converting would lose up to a bit of precision on a model someone tuned).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter
from onnx import TensorProto, helper, numpy_helper

from .errors import CompileError
from .graph import Graph, Layer

__all__ = ["export_qdq", "strip_qdq", "QdqScales"]

_F32_EXACT = 1 << 24  #: integers below this add exactly in float32
_WRAP = 1 << 31
#: onnx.reference implements DequantizeLinear from opset 19 on: older models are converted up to it.
_MIN_EXPORT_OPSET = 19


# ---------------------------------------------------------------------------------------------- export


class _Emitter:
    """Accumulates nodes and initializers with fresh, unique names."""

    def __init__(self, taken: set[str]):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.taken = set(taken)
        self._consts: dict[tuple, str] = {}

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        return name

    def const(self, value: np.ndarray, base: str) -> str:
        value = np.asarray(value)
        key = (value.dtype.str, value.shape, value.tobytes())
        if value.size <= 64 and key in self._consts:  # share small constants (scales, zero points, shapes)
            return self._consts[key]
        name = self.fresh(base)
        self.inits.append(numpy_helper.from_array(value, name))
        if value.size <= 64:
            self._consts[key] = name
        return name

    def node(self, op: str, inputs: list[str], base: str, output: str | None = None, **attrs) -> str:
        out = output if output is not None else self.fresh(base)
        if output is not None:
            self.taken.add(output)
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.fresh(f"{base}/{op}"), **attrs))
        return out


def _channel_const(values, channels: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(values, np.float64), (channels,)).reshape(1, channels, 1, 1).copy()


def _requant(e: _Emitter, acc: str, layer: Layer, channels: int, bound: float, base: str) -> str:
    """The processor's post-processing of ``acc`` (integer values, ``[N, C, H, W]``) in float64."""
    rq = layer.quant.requant
    v = e.node("Cast", [acc], f"{base}/acc64", to=TensorProto.DOUBLE)
    if np.any(rq.bias):
        v = e.node("Add", [v, e.const(_channel_const(rq.bias, channels), f"{base}/bias")], f"{base}/v")
    if bound + float(np.abs(rq.bias.astype(np.int64)).max(initial=0)) >= _WRAP:  # int32 wrap-around: two fmods
        two32 = e.const(np.array(2.0 ** 32), f"{base}/two32")
        half = e.const(np.array(2.0 ** 31), f"{base}/two31")
        r = e.node("Mod", [e.node("Add", [v, half], base), two32], base, fmod=1)
        r = e.node("Mod", [e.node("Add", [r, two32], base), two32], base, fmod=1)
        v = e.node("Sub", [r, half], f"{base}/wrapped")
    mult_pos, mult_neg = rq.mult_pos.astype(np.int64), rq.mult_neg.astype(np.int64)
    if np.array_equal(mult_pos, mult_neg):
        if np.any(mult_pos != 1):
            v = e.node("Mul", [v, e.const(_channel_const(mult_pos, channels), f"{base}/mult")], f"{base}/t")
    else:
        negative = e.node("Less", [v, e.const(np.array(0.0), f"{base}/zero")], f"{base}/negative")
        m = e.node("Where", [negative, e.const(_channel_const(mult_neg, channels), f"{base}/mult_neg"),
                             e.const(_channel_const(mult_pos, channels), f"{base}/mult_pos")], f"{base}/m")
        v = e.node("Mul", [v, m], f"{base}/t")
    shift = rq.shift.astype(np.int64)
    if np.any(shift):
        half = np.where(shift > 0, 2.0 ** (np.maximum(shift, 1) - 1), 0.0)
        v = e.node("Add", [v, e.const(_channel_const(half, channels), f"{base}/round")], f"{base}/t")
        v = e.node("Mul", [v, e.const(_channel_const(2.0 ** -shift.astype(np.float64), channels),
                                      f"{base}/inv_shift")], f"{base}/t")
        v = e.node("Floor", [v], f"{base}/t")
    if layer.op not in ("maxpool", "concat") or (rq.lo, rq.hi) != (-128, 127):
        v = e.node("Max", [v, e.const(np.array(float(rq.lo)), f"{base}/lo")], f"{base}/y")
        v = e.node("Min", [v, e.const(np.array(float(rq.hi)), f"{base}/hi")], f"{base}/y")
    return v


def _quantize_exact(e: _Emitter, x: str, scale: float, base: str) -> str:
    """Host quantization ``clip(round_half_even(float64(x) / scale), -128, 127)`` as integer values in float64."""
    xd = e.node("Cast", [x], f"{base}/x64", to=TensorProto.DOUBLE)
    r = e.node("Div", [xd, e.const(np.array(scale, np.float64), f"{base}/scale64")], f"{base}/ratio")
    r = e.node("Round", [r], f"{base}/rounded")
    r = e.node("Max", [r, e.const(np.array(-128.0), f"{base}/lo")], f"{base}/rounded")
    return e.node("Min", [r, e.const(np.array(127.0), f"{base}/hi")], f"{base}/rounded")


def _carry(e: _Emitter, ints: str, scale: float, qname: str, shape: list | None, base: str) -> str:
    """Integer values (float) -> ``QuantizeLinear`` int8 tensor ``qname`` (reshaped to ``shape`` if given)."""
    s32 = e.const(np.array(scale, np.float32), f"{base}/scale")
    zp = e.const(np.array(0, np.int8), "zero_point_int8")
    f = e.node("Cast", [ints], f"{base}/int_values", to=TensorProto.FLOAT)
    pre = e.node("Mul", [f, s32], f"{base}/real")
    if shape is None:
        return e.node("QuantizeLinear", [pre, s32, zp], base, output=qname)
    q = e.node("QuantizeLinear", [pre, s32, zp], f"{base}/q")
    return e.node("Reshape", [q, e.const(np.array(shape, np.int64), f"{base}/shape")], base, output=qname)


def export_qdq(graph: Graph, path: str | Path | None = None, *, batch: int | str = 1) -> onnx.ModelProto:
    """Write a quantized graph as a QDQ ONNX model that reproduces the processor's integers (see the module doc).

    Parameters
    ----------
    graph : Graph
        A quantized graph (:func:`~.quantize.quantize`).
    path : str or Path, optional
        Where to save the model.
    batch : int or str
        Batch axis of the model's input and outputs (a name makes it symbolic; processor layers work for any batch,
        host operators with hard-coded batch-1 shapes only for 1).

    Returns
    -------
    onnx.ModelProto
        Inputs and outputs as in the original model; every processor tensor ``t`` also exists as int8 ``t_q``.
    """
    if any(layer.target == "hw" and layer.quant is None for layer in graph.layers):
        raise CompileError("the graph is not quantized: calibrate (or import a QDQ model) before exporting")
    names = set(graph.tensors) | set(graph.initializers) | {
        v for layer in graph.layers for n in layer.onnx_nodes for v in list(n.input) + list(n.output)}
    e = _Emitter(names)
    hw_made = {layer.output: layer for layer in graph.layers if layer.target == "hw"}
    host_made = {v for layer in graph.layers if layer.target == "host" for v in layer.outputs}
    image = graph.inputs[0]
    qname: dict[str, str] = {}
    real: dict[str, str] = {}

    def dims(name: str) -> list:
        return [batch] + list(graph.tensors[name].onnx_shape[1:])

    def view(name: str) -> None:  # the DequantizeLinear view of an int8 tensor
        s32 = e.const(np.array(graph.tensors[name].scale, np.float32), f"{name}/scale")
        zp = e.const(np.array(0, np.int8), "zero_point_int8")
        out = name if name != image else e.fresh(f"{name}_dq")
        real[name] = e.node("DequantizeLinear", [qname[name], s32, zp], name, output=out)

    def quantize_host(name: str) -> None:  # input or host output -> int8 as the host does it
        ints = _quantize_exact(e, name, graph.tensors[name].scale, f"{name}/quantize")
        qname[name] = _carry(e, ints, graph.tensors[name].scale, e.fresh(f"{name}_q"), None, f"{name}/quantize")

    quantize_host(image)
    view(image)
    needs_int = {v for layer in graph.layers if layer.target == "hw" for v in layer.inputs}
    for index, layer in enumerate(graph.layers):
        base = f"L{index}_{layer.name}"
        if layer.target == "host":
            rename = {v: (v if v in host_made else real[v]) for v in layer.inputs}
            for node in layer.onnx_nodes:
                copy = onnx.NodeProto()
                copy.CopyFrom(node)
                copy.input[:] = [rename.get(v, v) for v in node.input]
                e.nodes.append(copy)
            for out in layer.outputs:
                if out in needs_int and out in graph.tensors:
                    quantize_host(out)
            continue
        out = layer.output
        channels = graph.tensors[out].channels
        acc, bound = _compute(e, graph, layer, qname, base)
        ints = _requant(e, acc, layer, channels, bound, base)
        info = graph.tensors[out]
        shape = None if tuple(info.onnx_shape[1:]) == tuple(info.shape) and len(info.onnx_shape) == 4 \
            else [-1] + list(info.onnx_shape[1:])
        qname[out] = _carry(e, ints, info.scale, e.fresh(f"{out}_q"), shape, base)
        view(out)
    inputs = [helper.make_tensor_value_info(image, TensorProto.FLOAT, dims(image))]
    outputs = []
    for name in graph.outputs:
        if name not in hw_made and name not in host_made:
            raise CompileError(f"network output {name!r} is not computed by any layer; cannot export it")
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims(name)))
    used = {v for n in e.nodes for v in n.input}
    inits = e.inits + [numpy_helper.from_array(np.asarray(v), k) for k, v in graph.initializers.items() if k in used]
    body = helper.make_graph(e.nodes, f"{graph.name}_qdq", inputs, outputs, inits)
    model = helper.make_model(body, opset_imports=[helper.make_opsetid("", graph.opset)],
                              producer_name="dlproc", doc_string="int8 network exported by dlproc: the QDQ tensors "
                              "reproduce the processor's integers under onnx.reference")
    if graph.opset < _MIN_EXPORT_OPSET:  # the host operators are converted with their opset's semantics
        model = onnx.version_converter.convert_version(model, _MIN_EXPORT_OPSET)
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, str(path))
    return model


def _ints_of(e: _Emitter, graph: Graph, name: str, qname: dict[str, str], dtype: int, base: str) -> str:
    """The integer values of int8 tensor ``name`` as ``dtype``, in the ``[N, C, H, W]`` layout."""
    x = e.node("Cast", [qname[name]], f"{base}/in", to=dtype)
    info = graph.tensors[name]
    if len(info.onnx_shape) != 4 or tuple(info.onnx_shape[1:]) != tuple(info.shape):
        x = e.node("Reshape", [x, e.const(np.array([-1, *info.shape], np.int64), f"{base}/chw")], f"{base}/in")
    return x


def _compute(e: _Emitter, graph: Graph, layer: Layer, qname: dict[str, str], base: str) -> tuple[str, float]:
    """The layer's accumulator (integer values, ``[N, C, H, W]``) and a bound of its magnitude."""
    a, quant = layer.attrs, layer.quant
    if quant.lut is not None:
        raise CompileError(f"layer {layer.name!r}: cannot export the nonlinear unit's {layer.act.kind} table to QDQ "
                           "yet; compile for a processor without has_nonlinear_unit to export")
    if layer.op in ("conv", "fc"):
        w = quant.weight.astype(np.int64)
        bound = 128.0 * float(np.abs(w).reshape(w.shape[0], -1).sum(axis=1).max())
        dtype = TensorProto.FLOAT if bound < _F32_EXACT else TensorProto.DOUBLE
        x = _ints_of(e, graph, layer.inputs[0], qname, dtype, base)
        if layer.op == "conv":
            wq = e.node("Cast", [e.const(quant.weight, f"{base}/weight_q")], f"{base}/weight", to=dtype)
            top, left, bottom, right = a["pads"]
            acc = e.node("Conv", [x, wq], f"{base}/acc", kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                         pads=[top, left, bottom, right], dilations=list(a["dilation"]), group=int(a["group"]))
            return acc, bound
        wt = e.const(np.ascontiguousarray(quant.weight.T), f"{base}/weight_q_t")
        flat = e.node("Flatten", [x], f"{base}/flat", axis=1)
        acc = e.node("MatMul", [flat, e.node("Cast", [wt], f"{base}/weight", to=dtype)], f"{base}/acc")
        out = graph.tensors[layer.output].channels
        return e.node("Reshape", [acc, e.const(np.array([-1, out, 1, 1], np.int64), f"{base}/nc11")],
                      f"{base}/acc"), bound
    x = _ints_of(e, graph, layer.inputs[0], qname, TensorProto.FLOAT, base)
    channels = graph.tensors[layer.inputs[0]].channels
    if layer.op == "maxpool":
        top, left, bottom, right = a["pads"]
        acc = e.node("MaxPool", [x], f"{base}/acc", kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                     pads=[top, left, bottom, right])
        return acc, 128.0
    if layer.op in ("avgpool", "gap"):
        if layer.op == "avgpool":
            kernel, stride, pads = list(a["kernel"]), list(a["stride"]), list(a["pads"])
        else:
            kernel, stride, pads = list(graph.tensors[layer.inputs[0]].shape[1:]), [1, 1], [0, 0, 0, 0]
        ones = e.const(np.ones((channels, 1, *kernel), np.float32), f"{base}/window")
        acc = e.node("Conv", [x, ones], f"{base}/sum", kernel_shape=kernel, strides=stride, pads=pads,
                     group=channels)
        mult = int(quant.input_mults[0])
        if mult != 1:
            acc = e.node("Mul", [acc, e.const(np.array(float(mult), np.float32), f"{base}/imm")], f"{base}/acc")
        return acc, 128.0 * math.prod(kernel) * abs(mult)
    if layer.op == "add":
        y = _ints_of(e, graph, layer.inputs[1], qname, TensorProto.FLOAT, base)
        ma, mb = (float(m) for m in quant.input_mults)
        acc = e.node("Add", [e.node("Mul", [x, e.const(np.array(ma, np.float32), f"{base}/imm_a")], f"{base}/a"),
                             e.node("Mul", [y, e.const(np.array(mb, np.float32), f"{base}/imm_b")], f"{base}/b")],
                     f"{base}/acc")
        return acc, 128.0 * (abs(ma) + abs(mb))
    if layer.op == "concat":
        parts = [x] + [_ints_of(e, graph, v, qname, TensorProto.FLOAT, base) for v in layer.inputs[1:]]
        return e.node("Concat", parts, f"{base}/acc", axis=1), 128.0
    raise CompileError(f"layer {layer.name!r}: cannot export the layer kind {layer.op!r}")


# ---------------------------------------------------------------------------------------------- import


@dataclass
class QdqScales:
    """Scales found in a QDQ model by :func:`strip_qdq`.

    Attributes
    ----------
    activations : dict of str to float
        Scale per activation tensor (the input of each removed ``QuantizeLinear -> DequantizeLinear`` pair, and the
        output when it is a network output).
    weights : dict of str to (ndarray, int)
        ``(scale, axis)`` per dequantized constant (the output name of its ``DequantizeLinear``).
    """

    activations: dict[str, float] = field(default_factory=dict)
    weights: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.activations or self.weights)

    def weight_scale(self, layer: Layer, node: onnx.NodeProto) -> np.ndarray | None:
        """Per-output-channel weight scales of a conv/fc ``layer`` made from ``node`` (None if not from a QDQ weight,
        or quantized along another axis)."""
        if len(node.input) < 2 or node.input[1] not in self.weights:
            return None
        scale, axis = self.weights[node.input[1]]
        oc = layer.weight.shape[0]
        if scale.size == 1:
            vec = np.full(oc, float(scale.reshape(-1)[0]))
        else:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            out_axis = {"Conv": 0, "Gemm": 0 if attrs.get("transB", 0) else 1, "MatMul": 1}.get(node.op_type)
            ndim = 4 if node.op_type == "Conv" else 2
            if out_axis is None or axis % ndim != out_axis or scale.size != oc:
                return None
            vec = scale.reshape(-1).astype(np.float64)
        if node.op_type == "Gemm":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            vec = vec * abs(float(attrs.get("alpha", 1.0)))
        return vec


_INT8_TYPES = {TensorProto.INT8: "int8"}


def _constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            attr = next((a for a in node.attribute if a.name == "value"), None)
            if attr is not None:
                values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _q_type(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> tuple[int, np.ndarray]:
    """Element type and zero point of a QuantizeLinear/DequantizeLinear node."""
    zp_name = node.input[2] if len(node.input) > 2 else ""
    if zp_name:
        if zp_name not in consts:
            raise CompileError(f"node {node.name!r} ({node.op_type}): the zero point {zp_name!r} is not a constant")
        zp = consts[zp_name]
        return helper.np_dtype_to_tensor_dtype(zp.dtype), zp
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return int(attrs.get("output_dtype", 0)) or TensorProto.UINT8, np.zeros((), np.uint8)


def _scale_of(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> np.ndarray:
    if node.input[1] not in consts:
        raise CompileError(f"node {node.name!r} ({node.op_type}): the scale {node.input[1]!r} is not a constant")
    return np.asarray(consts[node.input[1]], np.float64)


def _check_activation(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> float:
    """The scale of an activation Q/DQ node; CompileError unless symmetric int8 with zero point 0, per tensor."""
    elem, zp = _q_type(node, consts)
    scale = _scale_of(node, consts)
    type_name = TensorProto.DataType.Name(elem).lower()
    hint = ("the processor's activations are symmetric int8 with zero point 0; quantize with symmetric int8 "
            "activations (onnxruntime: activation_type=QuantType.QInt8, extra_options={'ActivationSymmetric': True})")
    if elem not in _INT8_TYPES:
        raise CompileError(f"node {node.name!r} ({node.op_type}): activations of type {type_name}; {hint}")
    if np.any(zp != 0):
        raise CompileError(f"node {node.name!r} ({node.op_type}): zero point {zp.reshape(-1)[:4].tolist()} "
                           f"(asymmetric quantization); {hint}")
    if scale.size != 1:
        raise CompileError(f"node {node.name!r} ({node.op_type}): per-axis activation scales; the processor has one "
                           "scale per activation tensor")
    value = float(scale.reshape(-1)[0])
    if not (np.isfinite(value) and value > 0):
        raise CompileError(f"node {node.name!r} ({node.op_type}): scale {value} is not a positive number")
    return value


def strip_qdq(model: onnx.ModelProto) -> QdqScales:
    """Remove the Q/DQ nodes of a QDQ model in place and collect its scales (see the module doc).

    Parameters
    ----------
    model : onnx.ModelProto
        The model (nodes must be named); modified in place.

    Returns
    -------
    QdqScales
        Empty for a model without QuantizeLinear/DequantizeLinear nodes.

    Raises
    ------
    CompileError
        A Q/DQ node the processor cannot honour: asymmetric or non-int8 activations, per-axis activation scales, a
        quantized tensor read by something else than DequantizeLinear, non-constant scales.
    """
    g = model.graph
    nodes = list(g.node)
    if not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.domain in ("", "ai.onnx") for n in nodes):
        return QdqScales()
    consts = _constant_values(g)
    producer = {v: n for n in nodes for v in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for v in n.input:
            consumers.setdefault(v, []).append(n)
    outputs = {vi.name for vi in g.output}
    found = QdqScales()
    replace: dict[int, onnx.NodeProto] = {}
    drop: set[int] = set()
    values: dict[str, np.ndarray] = {}  #: dequantized constants
    rename: dict[str, str] = {}  #: DequantizeLinear output -> the QuantizeLinear's float input
    for d in nodes:
        if d.op_type != "DequantizeLinear":
            continue
        x = d.input[0]
        src = producer.get(x)
        from_const = x in consts or (src is not None and src.op_type == "QuantizeLinear" and src.input[0] in consts)
        if from_const:  # a weight or bias: dequantized here (onnx.reference has no Q/DQ before opset 19)
            _, zp = _q_type(d, consts)
            if np.any(zp != 0):
                raise CompileError(f"node {d.name!r} (DequantizeLinear): weight zero point "
                                   f"{zp.reshape(-1)[:4].tolist()}; the processor's weights are symmetric (zero point "
                                   "0)")
            axis = int(next((helper.get_attribute_value(a) for a in d.attribute if a.name == "axis"), 1))
            scale = _scale_of(d, consts)
            q = consts[x] if x in consts else _quantize_const(src, consts)
            values[d.output[0]] = _dequantize_const(d, q, scale, zp, axis)
            found.weights[d.output[0]] = (scale, axis)
            drop.add(id(d))
            if x not in consts and all(r.op_type == "DequantizeLinear" for r in consumers.get(x, [])):
                drop.add(id(src))
            continue
        if src is None or src.op_type != "QuantizeLinear":
            raise CompileError(f"node {d.name!r} (DequantizeLinear): its input {x!r} is neither a constant nor the "
                               "output of a QuantizeLinear; the compiler takes a float input and float activations "
                               "with Q/DQ pairs")
        s_q, s_d = _check_activation(src, consts), _check_activation(d, consts)
        if s_q != s_d:
            raise CompileError(f"nodes {src.name!r} and {d.name!r}: QuantizeLinear scale {s_q} and DequantizeLinear "
                               f"scale {s_d} differ")
        found.activations[src.input[0]] = s_q
        if d.output[0] in outputs:  # keep the network output's name
            found.activations[d.output[0]] = s_q
            replace[id(d)] = helper.make_node("Identity", [src.input[0]], [d.output[0]], name=d.name)
        else:  # the readers read the float tensor directly
            rename[d.output[0]] = src.input[0]
            drop.add(id(d))
    for q in nodes:
        if q.op_type != "QuantizeLinear" or q.input[0] in consts:
            continue
        readers = consumers.get(q.output[0], [])
        if q.output[0] in outputs or any(r.op_type != "DequantizeLinear" for r in readers):
            other = next((r for r in readers if r.op_type != "DequantizeLinear"), None)
            what = f"node {other.name!r} ({other.op_type})" if other is not None else "the network output"
            raise CompileError(f"node {q.name!r} (QuantizeLinear): its int8 output is read by {what}; the compiler "
                               "maps only QuantizeLinear -> DequantizeLinear pairs around float operators")
        drop.add(id(q))
    kept = [replace.get(id(n), n) for n in nodes if id(n) not in drop]
    for n in kept:
        n.input[:] = [rename.get(v, v) for v in n.input]
    del g.node[:]
    g.node.extend(kept)
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in values.items())
    return found


def _along(values: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """A per-axis parameter shaped to broadcast along ``axis`` of an ``ndim``-dimensional tensor."""
    values = np.asarray(values)
    if values.size == 1:
        return values.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = values.size
    return values.reshape(shape)


def _quantize_const(q_node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> np.ndarray:
    """A QuantizeLinear of a constant (PyTorch exports float weights through Q/DQ), per the ONNX definition."""
    x = np.asarray(consts[q_node.input[0]], np.float32)
    elem, zp = _q_type(q_node, consts)
    axis = int(next((helper.get_attribute_value(a) for a in q_node.attribute if a.name == "axis"), 1))
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    if not np.issubdtype(dtype, np.integer):
        raise CompileError(f"node {q_node.name!r} (QuantizeLinear): weights of type {np.dtype(dtype).name}; the "
                           "processor's weights are int8")
    info = np.iinfo(dtype)
    scale = _along(np.asarray(consts[q_node.input[1]], np.float32), x.ndim, axis)
    q = np.rint(x / scale) + _along(zp, x.ndim, axis).astype(np.float32)
    return np.clip(q, info.min, info.max).astype(dtype)


def _dequantize_const(node: onnx.NodeProto, q: np.ndarray, scale: np.ndarray, zp: np.ndarray,
                      axis: int) -> np.ndarray:
    """DequantizeLinear of a constant in float32, per the ONNX definition."""
    q = np.asarray(q)
    if q.dtype not in (np.int8, np.uint8, np.int32):
        raise CompileError(f"node {node.name!r} (DequantizeLinear): quantized constant of type {q.dtype.name}; "
                           "weights must be int8 (biases int32)")
    centered = q.astype(np.float32) - _along(zp, q.ndim, axis).astype(np.float32)
    return (centered * _along(scale.astype(np.float32), q.ndim, axis)).astype(np.float32)
