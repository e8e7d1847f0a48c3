"""The compiler's layer graph: what the ONNX front end produces and the back end tiles and encodes.

Feature maps are ``(C, H, W)`` without the batch axis; vectors (fc outputs) are ``(C, 1, 1)``, so every
tensor the processor touches has the same blocked DDR layout ``[ceil(C/B)][H][W][B]`` (``B`` = the
configuration's ``channel_block``).

Stages:

1. the front end (``frontend.py``) turns ONNX nodes into :class:`Layer` objects (one handler per operator),
2. fusions (``fusion.py``) fold BatchNormalization into conv, fuse activations, drop Dropout/Identity,
3. quantization (``quantize.py``) fills :attr:`TensorInfo.scale` and :attr:`Layer.quant` for int8,
4. the back end (``tiling.py``, ``codegen.py``) maps every ``target == "hw"`` layer to instructions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlproc.processor.buffers import CONTROL_WORD_LAYOUT, MULT_WORD_LAYOUT

__all__ = ["TensorInfo", "Activation", "LUT_ACTIVATIONS", "Requant", "LayerQuant", "Layer", "Graph", "HW_OPS",
           "fixed_point_multiplier", "pre_activation"]

#: Layer kinds the processor executes. Everything else is ``op == "host"``.
HW_OPS = ("conv", "fc", "maxpool", "avgpool", "gap", "add", "concat", "mul")


@dataclass
class TensorInfo:
    """A tensor between layers.

    Attributes
    ----------
    name : str
        ONNX value name.
    shape : tuple of int
        ``(C, H, W)`` without batch (vectors are ``(C, 1, 1)``).
    onnx_shape : tuple of int
        The shape ONNX gives it, with the batch axis (e.g. ``(1, 2)`` for logits): the runtime returns outputs
        in this shape.
    scale : float or None
        int8 activation scale (real = scale * int8), symmetric, zero point 0. ``None`` before quantization.
    """

    name: str
    shape: tuple[int, int, int]
    onnx_shape: tuple[int, ...]
    scale: float | None = None

    @property
    def channels(self) -> int:
        return self.shape[0]


@dataclass
class Activation:
    """Activation fused into a conv, fc or add layer.

    ``kind`` is ``"none"``, ``"relu"``, ``"leaky_relu"`` (slope ``alpha`` for negative values) or ``"clip"``
    (``[lo, hi]`` in real units; ReLU6 is clip 0..6), or one of :data:`LUT_ACTIVATIONS`, which the nonlinear unit
    computes through a lookup table: ``"sigmoid"``, ``"tanh"``, ``"silu"`` (``x * sigmoid(x)``),
    ``"hard_sigmoid"`` (``max(0, min(1, alpha * x + beta))``, ONNX HardSigmoid), ``"hard_swish"``
    (``x * hard_sigmoid(x)`` with alpha 1/6, beta 1/2) and ``"lrn_scale"`` (``(k + alpha * max(x, 0)) ** -beta``, the
    factor of LRN by which the processor multiplies its input).
    """

    kind: str = "none"
    alpha: float = 0.0
    lo: float = float("-inf")
    hi: float = float("inf")
    beta: float = 0.0  #: HardSigmoid's offset; LRN's exponent
    k: float = 0.0     #: LRN's bias

    def apply(self, x: np.ndarray) -> np.ndarray:
        """The activation in floating point (the float reference)."""
        if self.kind == "relu":
            return np.maximum(x, 0)
        if self.kind == "leaky_relu":
            return np.where(x >= 0, x, x * self.alpha)
        if self.kind == "clip":
            return np.clip(x, self.lo, self.hi)
        if self.kind == "sigmoid":
            return 1 / (1 + np.exp(-x))
        if self.kind == "tanh":
            return np.tanh(x)
        if self.kind == "silu":
            return x / (1 + np.exp(-x))
        if self.kind == "hard_sigmoid":
            return np.clip(self.alpha * x + self.beta, 0, 1)
        if self.kind == "hard_swish":
            return x * np.clip(x / 6 + 0.5, 0, 1)
        if self.kind == "lrn_scale":
            return (self.k + self.alpha * np.maximum(x, 0)) ** -self.beta
        return x


#: Activations the nonlinear unit computes through a per-layer lookup table (``ProcessorConfig.has_nonlinear_unit``).
LUT_ACTIVATIONS = ("sigmoid", "tanh", "silu", "hard_sigmoid", "hard_swish", "lrn_scale")


def pre_activation(layer_name: str) -> str:
    """The calibration-statistics key of the value a layer with a :data:`LUT_ACTIVATIONS` activation computes before
    the activation (the lookup table's input; not a tensor of the graph)."""
    return f"{layer_name}:pre_activation"


@dataclass
class Requant:
    """Per-output-channel post-processing of one layer, exactly as the parameter buffer holds it.

    For output channel ``c``: ``v = wrap32(acc + bias[c])``; ``m = mult_pos[c] if v >= 0 else mult_neg[c]``;
    ``t = round_half_up(v * m / 2**shift[c])``; ``y = clamp(t, lo, hi)`` (see ``docs/numerics.md``).
    """

    bias: np.ndarray      #: int32 [C]
    mult_pos: np.ndarray  #: int16-range int64 [C]
    mult_neg: np.ndarray  #: int16-range int64 [C]
    shift: np.ndarray     #: 0..63 int64 [C]
    lo: int = -128        #: int8 lower clamp (0 for ReLU)
    hi: int = 127         #: int8 upper clamp


@dataclass
class LayerQuant:
    """Quantized parameters of one hardware layer.

    Attributes
    ----------
    weight : ndarray of int8 or None
        conv ``[OC, IC/group, kh, kw]``; fc ``[OUT, IN]`` (IN in ONNX flatten order c, h, w).
    weight_scale : ndarray of float32 or None
        Per-output-channel weight scale.
    requant : Requant
        Post-processing parameters per output channel.
    input_mults : list of int
        SUM-mode multipliers (int16) per input: ``add`` uses one per operand, ``avgpool``/``gap`` use ``[1]``.
    """

    weight: np.ndarray | None
    weight_scale: np.ndarray | None
    requant: Requant
    input_mults: list[int] = field(default_factory=list)
    lut: np.ndarray | None = None  #: int8 [256]: the nonlinear unit's table (output for input ``i - 128``), or None


@dataclass
class Layer:
    """One layer of the graph.

    Attributes
    ----------
    name : str
        Name of the (first) ONNX node; used in reports and error messages.
    op : str
        One of :data:`HW_OPS` or ``"host"``.
    inputs, outputs : list of str
        Tensor names. Hardware layers have exactly one output.
    nodes : list of str
        All ONNX node names fused into this layer (for the report).
    attrs : dict
        conv: ``kernel (kh, kw)``, ``stride (sh, sw)``, ``pads (top, left, bottom, right)``,
        ``dilation (dh, dw)``, ``group``; maxpool/avgpool: ``kernel``, ``stride``, ``pads``, avgpool also
        ``count_include_pad``; concat: ``axis`` (always channels); host: ``op_type``.
    act : Activation
        Fused activation (conv, fc, add).
    weight, bias : ndarray of float32 or None
        Float parameters (conv ``[OC, IC/group, kh, kw]``, fc ``[OUT, IN]``; bias ``[OC]``).
    target : str
        ``"hw"`` or ``"host"``.
    host_reason : str
        Why the layer runs on the host (empty for hardware layers).
    onnx_nodes : list
        The ONNX ``NodeProto`` objects of a host layer, executed with ``onnx.reference`` at run time.
    quant : LayerQuant or None
        Filled by quantization for hardware layers.
    """

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    nodes: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    act: Activation = field(default_factory=Activation)
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    target: str = "hw"
    host_reason: str = ""
    onnx_nodes: list[Any] = field(default_factory=list)
    quant: LayerQuant | None = None

    @property
    def output(self) -> str:
        return self.outputs[0]


@dataclass
class Graph:
    """A network as a topologically ordered list of layers.

    Attributes
    ----------
    name : str
        Model name.
    inputs : list of str
        Network input tensor names (the first is the image input the processor consumes).
    outputs : list of str
        Network output tensor names, in ONNX order.
    tensors : dict of str to TensorInfo
        Every tensor.
    layers : list of Layer
        Layers in execution order.
    initializers : dict of str to ndarray
        Constant tensors host layers may need.
    opset : int
        The model's default-domain opset.
    """

    name: str
    inputs: list[str]
    outputs: list[str]
    tensors: dict[str, TensorInfo]
    layers: list[Layer]
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    opset: int = 17

    def producer(self, tensor: str) -> Layer | None:
        """The layer producing ``tensor`` (None for network inputs)."""
        for layer in self.layers:
            if tensor in layer.outputs:
                return layer
        return None

    def consumers(self, tensor: str) -> list[Layer]:
        """The layers reading ``tensor``."""
        return [layer for layer in self.layers if tensor in layer.inputs]


#: Width of the signed requantization multiplier and largest shift: the parameter word layouts of the hardware.
MULT_BITS = MULT_WORD_LAYOUT["value"].shape.width
MAX_SHIFT = (1 << CONTROL_WORD_LAYOUT["shift"].shape.width) - 1


def fixed_point_multiplier(real: float, *, mult_bits: int = MULT_BITS, max_shift: int = MAX_SHIFT) -> tuple[int, int]:
    """Represent a positive real factor as ``mult * 2**-shift`` with a signed ``mult_bits`` multiplier.

    The multiplier is normalized into ``[2**(mult_bits-2), 2**(mult_bits-1))`` for the most precision
    (relative error below ``2**-(mult_bits-2)``).

    Parameters
    ----------
    real : float
        The factor (for example ``input_scale * weight_scale / output_scale``). Zero gives ``(0, 0)``;
        negative factors keep their sign in ``mult``.
    mult_bits : int
        Width of the signed multiplier (default: ``MULT_WORD_LAYOUT``'s ``value``).
    max_shift : int
        Largest shift the hardware applies (default: the largest value of ``CONTROL_WORD_LAYOUT``'s ``shift``).

    Returns
    -------
    (int, int)
        ``(mult, shift)``.
    """
    if real == 0 or not np.isfinite(real):
        if real == 0:
            return 0, 0
        raise ValueError(f"cannot represent the scale factor {real} in fixed point")
    sign = -1 if real < 0 else 1
    mag = abs(real)
    top = 1 << (mult_bits - 1)
    mant, exp = np.frexp(mag)  # mag = mant * 2**exp, mant in [0.5, 1)
    shift = (mult_bits - 1) - int(exp)
    mult = int(round(mant * top))
    if mult == top:  # rounding carried out of the mantissa
        mult //= 2
        shift -= 1
    if shift > max_shift:
        # the factor is tiny: shift as far as allowed, losing precision (it may round to zero)
        mult = int(round(mag * 2.0 ** max_shift))
        shift = max_shift
    if shift < 0:
        raise ValueError(f"scale factor {real} is too large for a {mult_bits}-bit multiplier")
    return sign * mult, shift
