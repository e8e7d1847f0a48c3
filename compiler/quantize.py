"""Post-training int8 quantization of a fused layer graph.

Activations are symmetric int8 with one scale per tensor (``real = scale * q``, ``scale = absmax / 127`` from
calibration). Host-side quantization (network input, host layer outputs) rounds half to even (``np.round``) and
clamps to ``[-128, 127]``: :func:`quantize_tensor`.

Per layer (``s_in``, ``s_out`` the activation scales, ``s_w[c]`` the weight scale of output channel ``c``):

conv, fc
    weights symmetric int8 per output channel (``s_w[c] = absmax(W[c]) / 127``; one scale with
    ``per_channel=False``), bias ``round(b / (s_in * s_w[c]))`` in int32, requantization
    ``mult * 2**-shift ~ s_in * s_w[c] / s_out``; a leaky ReLU's ``mult_neg`` is ``alpha`` times that ratio with the
    same shift;
maxpool, concat
    identity requantization (``mult 1, shift 0``); their inputs and output share one scale (the largest range of
    the group), so the processor only moves bytes;
avgpool, gap
    ``input_mults = [1]`` (SUM mode), requantization ``s_in / (s_out * window)`` with ``window = kh * kw`` (avgpool)
    or ``H * W`` (gap);
add
    ``acc = a * imm_a + b * imm_b`` with ``imm_i = round(s_i / s_out * 2**S)`` and
    ``S = clip(14 - ceil(log2(max_i s_i / s_out)), 0, 30)`` so both fit int16; requantization ``mult 1, shift S``
    (with a leaky ReLU: ``mult_pos = 2**14``, ``mult_neg = round(alpha * 2**14)``, ``shift S + 14``).

The clamps ``lo``/``hi`` implement the fused activation: ReLU ``lo = 0``; Clip ``round(lo / s_out)``,
``round(hi / s_out)`` limited to int8.

Scale modes (``scale_mode``):

``"fixed"`` (default)
    scales are the calibrated ``absmax / 127``; every requantization factor becomes a 16-bit fixed-point multiplier
    and a shift (:func:`~.graph.fixed_point_multiplier`);
``"pow2"``
    every activation and weight scale is rounded up to a power of two (``2**ceil(log2(absmax / 127))``, the
    "fraction length" of MATLAB's fixed-point types), so every requantization factor is a power of two and the
    processor's multiplier is ``1 << k``: shift-only requantization. The range grows by up to 2x (one bit less
    resolution in the worst case). Two factors are not powers of two by nature and keep a fixed-point multiplier:
    ``1 / window`` of average pooling when the window is not a power of two, and the slope of a leaky ReLU
    (``mult_neg``).

Scales already set on the graph's tensors (a QDQ model's, see :mod:`.qdq`) are kept (rounded up to a power of two
in ``"pow2"`` mode); ``stats`` is needed only for the other tensors. Likewise a conv/fc layer whose
``attrs["weight_scale"]`` came from a QDQ model keeps those weight scales when its float weights lie on that grid.
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np

from .errors import CompileError
from .graph import (
    HW_OPS,
    LUT_ACTIVATIONS,
    Activation,
    Graph,
    Layer,
    LayerQuant,
    Requant,
    fixed_point_multiplier,
    pre_activation,
)

__all__ = ["quantize", "activation_lut", "quantize_tensor", "dequantize_tensor", "activation_clamp", "scale_groups",
           "SCALE_MODES", "pow2_scale"]

_INT16_MAX = (1 << 15) - 1

#: Scale selection modes of :func:`quantize`.
SCALE_MODES = ("fixed", "pow2")


def pow2_scale(scale: float | np.ndarray) -> float | np.ndarray:
    """The smallest power of two not below ``scale`` (elementwise)."""
    return np.exp2(np.ceil(np.log2(scale)))


def quantize_tensor(x: np.ndarray, scale: float) -> np.ndarray:
    """Host-side quantization: ``clip(np.round(x / scale), -128, 127)`` as int8 (round half to even)."""
    return np.clip(np.round(np.asarray(x, np.float64) / scale), -128, 127).astype(np.int8)


def dequantize_tensor(q: np.ndarray, scale: float) -> np.ndarray:
    """``q * scale`` in float64."""
    return np.asarray(q, np.float64) * scale


def activation_clamp(act: Activation, scale: float) -> tuple[int, int]:
    """The int8 clamps ``(lo, hi)`` that implement ``act`` on an output of scale ``scale``."""
    if act.kind == "relu":
        return 0, 127
    if act.kind == "clip":
        lo = -128 if not math.isfinite(act.lo) else int(np.clip(np.round(act.lo / scale), -128, 127))
        hi = 127 if not math.isfinite(act.hi) else int(np.clip(np.round(act.hi / scale), -128, 127))
        return lo, hi
    return -128, 127


def scale_groups(graph: Graph) -> list[set[str]]:
    """Tensors that must share one scale: the input and output of every maxpool, the inputs and output of every
    concat (transitively)."""
    parent = {name: name for name in graph.tensors}

    def find(v: str) -> str:
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    for layer in graph.layers:
        if layer.target == "hw" and layer.op in ("maxpool", "concat"):
            for v in layer.inputs:
                parent[find(v)] = find(layer.output)
    groups: dict[str, set[str]] = {}
    for name in graph.tensors:
        groups.setdefault(find(name), set()).add(name)
    return list(groups.values())


def _identity(channels: int) -> Requant:
    return Requant(bias=np.zeros(channels, np.int32), mult_pos=np.ones(channels, np.int64),
                   mult_neg=np.ones(channels, np.int64), shift=np.zeros(channels, np.int64))


def _fixed(layer: Layer, ratio: float, alpha: float | None, scale_mode: str = "fixed") -> tuple[int, int, int]:
    """``(mult_pos, mult_neg, shift)`` for one channel; ``alpha`` is the leaky slope (None: same multiplier)."""
    if scale_mode == "pow2" and ratio > 0:
        exp = math.log2(ratio)
        if exp == round(exp) and round(exp) <= 14:
            exp = int(round(exp))
            if alpha is None:  # shift-only: mult = 1 << max(exp, 0)
                return (1 << exp, 1 << exp, 0) if exp > 0 else (1, 1, min(-exp, 63))
            shift = min(14 - exp, 63)  # mult_pos = 1 << 14 (less for tiny ratios), mult_neg carries the slope
            return 1 << max(exp + shift, 0), int(round(alpha * 2.0 ** (exp + shift))), shift
    try:
        if alpha is None:
            mult, shift = fixed_point_multiplier(ratio)
            return mult, mult, shift
        _, shift = fixed_point_multiplier(max(abs(ratio), abs(alpha * ratio)))
    except ValueError as exc:
        raise CompileError(f"layer {layer.name!r}: requantization factor {ratio:.3g} cannot be represented ({exc}); "
                           "check the calibration ranges") from exc
    return int(round(ratio * 2.0 ** shift)), int(round(alpha * ratio * 2.0 ** shift)), shift


def _imported_weight_scale(layer: Layer, w: np.ndarray) -> np.ndarray | None:
    """The per-output-channel weight scales of a QDQ model, when ``w`` lies on their int8 grid (else None)."""
    scale = layer.attrs.get("weight_scale")
    if scale is None:
        return None
    s_w = np.broadcast_to(np.asarray(scale, np.float64).reshape(-1), (w.shape[0],)).copy()
    if not np.all(s_w > 0):
        return None
    q = w / s_w.reshape((-1,) + (1,) * (w.ndim - 1))
    if np.abs(q).max() > 128.001 or np.abs(q - np.round(q)).max() > 1e-3:
        warnings.warn(f"layer {layer.name!r}: the weights no longer lie on the int8 grid of the model's weight "
                      "scales (a BatchNormalization or scaling was folded in); quantizing them anew", stacklevel=3)
        return None
    return s_w


def _weighted(layer: Layer, s_in: float, s_out: float, per_channel: bool, scale_mode: str = "fixed") -> LayerQuant:
    w = layer.weight.astype(np.float64)
    oc = w.shape[0]
    s_w = _imported_weight_scale(layer, w)
    if s_w is None:
        amax = np.abs(w).reshape(oc, -1).max(axis=1)
        if not per_channel:
            amax = np.full(oc, amax.max())
        fallback = amax.max() if amax.max() > 0 else 1.0  # all-zero channels: any scale works for the weights
        s_w = np.where(amax > 0, amax, fallback) / 127.0
        qmin = -127
    else:
        qmin = -128  # a QDQ model's weights may use the whole int8 range
    if scale_mode == "pow2":
        s_w = pow2_scale(s_w)
    wq = np.clip(np.round(w / s_w.reshape((-1,) + (1,) * (w.ndim - 1))), qmin, 127).astype(np.int8)
    bias = layer.bias.astype(np.float64) if layer.bias is not None else np.zeros(oc)
    bq = np.clip(np.round(bias / (s_in * s_w)), -(1 << 31), (1 << 31) - 1).astype(np.int32)
    alpha = layer.act.alpha if layer.act.kind == "leaky_relu" else None
    fixed = [_fixed(layer, s_in * s_w[c] / s_out, alpha, scale_mode) for c in range(oc)]
    lo, hi = activation_clamp(layer.act, s_out)
    requant = Requant(bias=bq, mult_pos=np.array([f[0] for f in fixed], np.int64),
                      mult_neg=np.array([f[1] for f in fixed], np.int64),
                      shift=np.array([f[2] for f in fixed], np.int64), lo=lo, hi=hi)
    return LayerQuant(weight=wq, weight_scale=s_w.astype(np.float32), requant=requant)


def _add(layer: Layer, s_ins: list[float], s_out: float, channels: int) -> LayerQuant:
    ratios = [s / s_out for s in s_ins]
    shift = int(np.clip(14 - math.ceil(math.log2(max(ratios))), 0, 30))
    imms = [int(round(r * 2.0 ** shift)) for r in ratios]
    if max(abs(i) for i in imms) > _INT16_MAX:
        raise CompileError(f"layer {layer.name!r}: input/output scale ratios {ratios} are too large for the int16 "
                           "SUM multipliers")
    mult_pos = mult_neg = 1
    if layer.act.kind == "leaky_relu":
        _, extra = fixed_point_multiplier(max(1.0, abs(layer.act.alpha)))
        mult_pos, mult_neg = 1 << extra, int(round(layer.act.alpha * 2.0 ** extra))
        shift += extra
    lo, hi = activation_clamp(layer.act, s_out)
    requant = Requant(bias=np.zeros(channels, np.int32), mult_pos=np.full(channels, mult_pos, np.int64),
                      mult_neg=np.full(channels, mult_neg, np.int64), shift=np.full(channels, shift, np.int64),
                      lo=lo, hi=hi)
    return LayerQuant(weight=None, weight_scale=None, requant=requant, input_mults=imms)


def _mul(layer: Layer, s_ins: list[float], s_out: float, channels: int, scale_mode: str = "fixed") -> LayerQuant:
    """Elementwise multiply: the int8 product ``a * b`` requantized once by ``s_a * s_b / s_out``."""
    alpha = layer.act.alpha if layer.act.kind == "leaky_relu" else None
    mult_pos, mult_neg, shift = _fixed(layer, s_ins[0] * s_ins[1] / s_out, alpha, scale_mode)
    lo, hi = activation_clamp(layer.act, s_out)
    requant = Requant(bias=np.zeros(channels, np.int32), mult_pos=np.full(channels, mult_pos, np.int64),
                      mult_neg=np.full(channels, mult_neg, np.int64), shift=np.full(channels, shift, np.int64),
                      lo=lo, hi=hi)
    return LayerQuant(weight=None, weight_scale=None, requant=requant, input_mults=[1])


def _pool_sum(layer: Layer, s_in: float, s_out: float, channels: int, window: int,
              scale_mode: str = "fixed") -> LayerQuant:
    mult, _, shift = _fixed(layer, s_in / (s_out * window), None, scale_mode)
    requant = Requant(bias=np.zeros(channels, np.int32), mult_pos=np.full(channels, mult, np.int64),
                      mult_neg=np.full(channels, mult, np.int64), shift=np.full(channels, shift, np.int64))
    return LayerQuant(weight=None, weight_scale=None, requant=requant, input_mults=[1])


def activation_lut(act: Activation, s_in: float, s_out: float) -> np.ndarray:
    """The nonlinear unit's table for ``act``: entry ``i`` is the int8 output for the int8 input ``i - 128``.

    Parameters
    ----------
    act : Activation
        One of :data:`~.graph.LUT_ACTIVATIONS`.
    s_in, s_out : float
        Scales of the table's input (the layer's pre-activation value) and of its output tensor.

    Returns
    -------
    ndarray of int8, shape (256,)
        ``clamp(round(act(q * s_in) / s_out))`` for ``q = -128 .. 127``.
    """
    x = np.arange(-128, 128, dtype=np.float64) * s_in
    return quantize_tensor(act.apply(x), s_out)


def _lut_layer(layer: Layer, stats: dict[str, tuple[float, float]], scale_mode: str) -> tuple[Layer, float]:
    """The layer without its lookup-table activation, and the scale of its pre-activation value."""
    key = pre_activation(layer.name)
    if key not in stats:
        raise CompileError(f"layer {layer.name!r}: no calibration statistics for its value before the "
                           f"{layer.act.kind} activation; calibrate this graph")
    peak = max(abs(float(v)) for v in stats[key])
    s_pre = (peak if np.isfinite(peak) and peak > 0 else 1.0) / 127.0
    plain = copy.copy(layer)
    plain.act = Activation()
    return plain, float(pow2_scale(s_pre)) if scale_mode == "pow2" else s_pre


def quantize(graph: Graph, stats: dict[str, tuple[float, float]], *, per_channel: bool = True,
             scale_mode: str = "fixed") -> Graph:
    """Quantize a fused float graph to int8.

    Parameters
    ----------
    graph : Graph
        The fused graph (:func:`~.fusion.fuse`). Tensors whose :attr:`~.graph.TensorInfo.scale` is already set (a QDQ
        model's scales) keep it.
    stats : dict of str to (float, float)
        ``(lo, hi)`` per tensor from :func:`~.calibrate.calibrate` (needed for the tensors without a scale).
    per_channel : bool
        Per-output-channel weight scales (else one scale per layer).
    scale_mode : {"fixed", "pow2"}
        Fixed-point requantization multipliers, or power-of-two scales and shift-only requantization (see the
        module docstring).

    Returns
    -------
    Graph
        A copy with :attr:`TensorInfo.scale` set for every tensor and :attr:`Layer.quant` for every processor
        layer.
    """
    if scale_mode not in SCALE_MODES:
        raise ValueError(f"scale mode {scale_mode!r}; use one of {', '.join(map(repr, SCALE_MODES))}")
    g = copy.deepcopy(graph)
    for layer in g.layers:
        if layer.op != "host" and layer.op not in HW_OPS:
            raise CompileError(f"layer {layer.name!r} has the front-end kind {layer.op!r}; run fusion.fuse first")
    scales = {}
    for name, info in g.tensors.items():
        if info.scale is not None:
            scales[name] = float(info.scale)
            continue
        if name not in stats:
            raise CompileError(f"no calibration statistics for tensor {name!r}; calibrate the same graph")
        lo, hi = stats[name]
        peak = max(abs(float(lo)), abs(float(hi)))
        scales[name] = (peak if np.isfinite(peak) and peak > 0 else 1.0) / 127.0  # all-zero tensor: any scale works
    if scale_mode == "pow2":
        scales = {k: float(pow2_scale(v)) for k, v in scales.items()}
    for group in scale_groups(g):
        scale = max(scales[v] for v in group)
        for v in group:
            g.tensors[v].scale = scale
    for layer in g.layers:
        if layer.target != "hw":
            layer.quant = None
            continue
        s_ins = [g.tensors[v].scale for v in layer.inputs]
        out = g.tensors[layer.output]
        s_out, channels = out.scale, out.channels
        lut_act = layer.act if layer.act.kind in LUT_ACTIVATIONS else None
        if lut_act is not None:  # requantize to the table's input scale; the nonlinear unit does the rest
            s_lut_out = s_out
            plain, s_out = _lut_layer(layer, stats, scale_mode)
        else:
            plain = layer
        if layer.op in ("conv", "fc"):
            layer.quant = _weighted(plain, s_ins[0], s_out, per_channel, scale_mode)
        elif layer.op in ("maxpool", "concat"):
            layer.quant = LayerQuant(weight=None, weight_scale=None, requant=_identity(channels))
        elif layer.op == "avgpool":
            kh, kw = layer.attrs["kernel"]
            layer.quant = _pool_sum(layer, s_ins[0], s_out, channels, kh * kw, scale_mode)
        elif layer.op == "gap":
            _, h, w = g.tensors[layer.inputs[0]].shape
            layer.quant = _pool_sum(layer, s_ins[0], s_out, channels, h * w, scale_mode)
        elif layer.op == "add":
            layer.quant = _add(plain, s_ins, s_out, channels)
        elif layer.op == "mul":
            layer.quant = _mul(plain, s_ins, s_out, channels, scale_mode)
        if lut_act is not None:
            layer.quant.lut = activation_lut(lut_act, s_out, s_lut_out)
    return g
