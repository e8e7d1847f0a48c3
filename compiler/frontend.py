"""The ONNX front end: one plain function per ONNX operator, turning nodes into :class:`~.graph.Layer` objects.

:func:`load_onnx` checks the model, fixes the batch axis to 1, runs strict shape inference, folds constant
subgraphs (``Constant``, ``Shape`` of a static tensor, arithmetic on initializers) and then calls the handler named
after each node's operator (``Conv``, ``Gemm``, ``MaxPool``, ...). A handler receives the ONNX attributes as keyword
arguments with the defaults of the ONNX specification and returns one layer.

Besides the processor's layer kinds (:data:`~.graph.HW_OPS`) and ``"host"``, handlers emit a few *front-end* layer
kinds that :func:`~.fusion.fuse` removes (:data:`FRONTEND_OPS`):

``"affine"``
    per-channel ``y = x * weight[c] + bias[c]`` (BatchNormalization, Add/Sub/Mul/Div with a per-channel constant);
    folded into the preceding conv/fc, otherwise lowered to a 1x1 depthwise conv;
``"act"``
    Relu, LeakyRelu, Clip (:attr:`Layer.act`); fused into the preceding conv/fc/add, otherwise a 1x1 depthwise conv;
``"flatten"``
    Flatten/Reshape/Squeeze to ``(1, K)``; fused into a following fc (which then reads the ``(C, H, W)`` tensor,
    its weight staying in ONNX flatten order c, h, w), otherwise run on the host;
``"identity"``
    Identity, Dropout (inference), and reshapes that keep the ``(C, H, W)`` layout (``[1, C]`` <-> ``[1, C, 1, 1]``);
    removed.

A QDQ model (``QuantizeLinear -> DequantizeLinear`` pairs, dequantized constant weights) is stripped first by
:func:`~.qdq.strip_qdq`: the pairs are removed (their readers read the float tensor), their scales become the
:attr:`~.graph.TensorInfo.scale` of the tensors, and the weight scales ``attrs["weight_scale"]`` of the conv/fc layers.

Operators without a handler become ``host`` layers that keep their ONNX node (executed with ``onnx.reference`` by
the runtime), unless even that is impossible (control flow, custom domains), which raises
:class:`~.errors.UnsupportedOperatorError`.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import ModelError, OpsetError, ShapeError, UnsupportedOperatorError
from .float_ref import float_evaluator, host_executable
from .fusion import fuse as run_fusion
from .graph import Activation, Graph, Layer, TensorInfo
from .qdq import strip_qdq

__all__ = ["load_onnx", "SUPPORTED_OPS", "FRONTEND_OPS", "MIN_OPSET", "MAX_OPSET", "chw_shape"]

#: Default-domain opsets the front end implements.
MIN_OPSET, MAX_OPSET = 11, 21

#: Layer kinds that exist only between the front end and :func:`~.fusion.fuse`.
FRONTEND_OPS = ("affine", "act", "flatten", "identity")

#: Operators whose outputs are random: never constant-folded.
_NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                     "Bernoulli"}


def chw_shape(onnx_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The ``(C, H, W)`` shape of a tensor with its batch axis dropped.

    Vectors ``[1, C]`` become ``(C, 1, 1)``; ranks above 4 fold the trailing axes into ``W``.

    Parameters
    ----------
    onnx_shape : tuple of int
        Shape with the batch axis first.

    Returns
    -------
    tuple of int
    """
    dims = list(onnx_shape[1:]) if onnx_shape else []
    dims += [1] * (3 - len(dims))
    if len(dims) > 3:
        dims = dims[:2] + [math.prod(dims[2:])]
    return int(dims[0]), int(dims[1]), int(dims[2])


class _Context:
    """What the handlers need to know about the model: static shapes, constants, node names."""

    def __init__(self, opset: int, shapes: dict[str, tuple[int, ...]], consts: dict[str, np.ndarray]):
        self.opset = opset
        self.shapes = shapes
        self.consts = consts
        self.used: set[str] = set()  #: values read by some node or returned by the graph

    def name(self, node: onnx.NodeProto) -> str:
        return node.name

    def const(self, value: str) -> np.ndarray | None:
        """The constant value of ``value`` (an initializer or a folded node output), else None."""
        return self.consts.get(value)

    def shape(self, node: onnx.NodeProto, value: str) -> tuple[int, ...]:
        """The static shape of ``value`` (batch axis 1); ShapeError naming the node when it is unknown."""
        if value not in self.shapes:
            raise ShapeError(f"node {self.name(node)!r} ({node.op_type}): the shape of {value!r} is unknown after "
                             "shape inference; the compiler needs static shapes (only the batch axis may be symbolic)")
        return self.shapes[value]

    def activations(self, node: onnx.NodeProto) -> list[str]:
        """The node's non-constant, non-empty inputs."""
        return [v for v in node.input if v and v not in self.consts]

    def outputs(self, node: onnx.NodeProto) -> list[str]:
        return [v for v in node.output if v]

    def extra_outputs_used(self, node: onnx.NodeProto) -> bool:
        """Whether another node reads (or the graph returns) an output of ``node`` beyond the first."""
        return any(v and v in self.used for v in node.output[1:])

    def layer(self, node: onnx.NodeProto, op: str, inputs: list[str] | None = None, **fields) -> Layer:
        """A layer for ``node`` (its name, ONNX node kept for a later host fallback)."""
        name = self.name(node)
        inputs = self.activations(node) if inputs is None else inputs
        outputs = self.outputs(node)
        if op == "host":  # every output another node reads or the graph returns (at least the first)
            outputs = outputs[:1] + [v for v in outputs[1:] if v in self.used]
        return Layer(name=name, op=op, inputs=inputs, outputs=outputs[:1] if op != "host" else outputs,
                     nodes=[name], onnx_nodes=[node], **fields)

    def host(self, node: onnx.NodeProto, reason: str) -> Layer:
        """A host layer executing ``node`` with onnx.reference."""
        return self.layer(node, "host", target="host", host_reason=reason, attrs={"op_type": node.op_type})


# ---------------------------------------------------------------------------------------------- helpers


def _pair(values, default: int, name: str, node: str) -> tuple[int, int]:
    if values is None:
        return default, default
    values = [int(v) for v in values]
    if len(values) != 2:
        raise ShapeError(f"node {node!r}: {name} {values} must have 2 entries for a 2-D operator")
    return values[0], values[1]


def _resolve_pads(ctx: _Context, node: onnx.NodeProto, *, auto_pad: str, pads, in_hw: tuple[int, int],
                  kernel: tuple[int, int], stride: tuple[int, int],
                  dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """Explicit ``(top, left, bottom, right)`` padding from ``pads`` or ``auto_pad``."""
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("NOTSET", ""):
        if pads is None:
            return 0, 0, 0, 0
        pads = [int(p) for p in pads]
        if len(pads) != 4:
            raise ShapeError(f"node {ctx.name(node)!r} ({node.op_type}): pads {pads} must have 4 entries")
        return pads[0], pads[1], pads[2], pads[3]
    if auto_pad == "VALID":
        return 0, 0, 0, 0
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise ModelError(f"node {ctx.name(node)!r} ({node.op_type}): auto_pad {auto_pad!r} is not one of NOTSET, "
                         "SAME_UPPER, SAME_LOWER, VALID")
    begin, end = [], []
    for size, k, s, d in zip(in_hw, kernel, stride, dilation, strict=True):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return begin[0], begin[1], end[0], end[1]


def _out_size(size: int, k: int, s: int, d: int, p0: int, p1: int) -> int:
    return (size + p0 + p1 - ((k - 1) * d + 1)) // s + 1


def _check_out(ctx: _Context, node: onnx.NodeProto, out_shape: tuple[int, ...], expect: tuple[int, int]) -> None:
    if tuple(out_shape[2:]) != expect:
        raise ShapeError(f"node {ctx.name(node)!r} ({node.op_type}): computed output size {expect} differs from the "
                         f"inferred shape {out_shape}")


def _pool_window(ctx: _Context, node: onnx.NodeProto, *, auto_pad, ceil_mode, dilations, kernel_shape, pads,
                 strides) -> tuple[dict, bool, bool]:
    """Kernel, stride and padding of a pooling node; ceil_mode becomes extra bottom/right padding.

    Returns
    -------
    attrs : dict
        ``kernel``, ``stride``, ``pads`` (with the ceil-mode extension).
    dilated : bool
        Whether a dilation other than 1 is requested.
    ceil_extra : bool
        Whether ceil_mode added windows that run past the padded input.
    """
    name = ctx.name(node)
    if kernel_shape is None:
        raise ModelError(f"node {name!r} ({node.op_type}): the kernel_shape attribute is required")
    x_shape, y_shape = ctx.shape(node, node.input[0]), ctx.shape(node, node.output[0])
    kernel = _pair(kernel_shape, 1, "kernel_shape", name)
    stride = _pair(strides, 1, "strides", name)
    dilation = _pair(dilations, 1, "dilations", name)
    top, left, bottom, right = _resolve_pads(ctx, node, auto_pad=auto_pad, pads=pads, in_hw=x_shape[2:4],
                                             kernel=kernel, stride=stride, dilation=dilation)
    extra = [0, 0]
    for i, (size, p0, p1) in enumerate(((x_shape[2], top, bottom), (x_shape[3], left, right))):
        floor_out = _out_size(size, kernel[i], stride[i], dilation[i], p0, p1)
        want = y_shape[2 + i]
        if want != floor_out:
            if not ceil_mode:
                raise ShapeError(f"node {name!r} ({node.op_type}): computed output size {floor_out} differs from "
                                 f"the inferred shape {y_shape}")
            extra[i] = (want - 1) * stride[i] + (kernel[i] - 1) * dilation[i] + 1 - (size + p0 + p1)
    attrs = {"kernel": kernel, "stride": stride, "pads": (top, left, bottom + extra[0], right + extra[1])}
    return attrs, dilation != (1, 1), any(extra)


def _channel_vector(c: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray | None:
    """``c`` as a per-channel vector ``[C]`` if it broadcasts against ``x_shape`` without changing it and is
    constant over every axis but the channel axis; otherwise None."""
    if len(x_shape) < 2 or c.ndim > len(x_shape):
        return None
    try:
        if np.broadcast_shapes(c.shape, x_shape) != tuple(x_shape):
            return None
    except ValueError:
        return None
    full = np.broadcast_to(c, x_shape)
    index = (0, slice(None)) + (0,) * (len(x_shape) - 2)
    vec = np.asarray(full[index], dtype=np.float64)
    expand = vec.reshape((1, -1) + (1,) * (len(x_shape) - 2))
    return vec if np.array_equal(np.broadcast_to(expand, x_shape), full) else None


# ---------------------------------------------------------------------------------------------- handlers


def Conv(ctx: _Context, node: onnx.NodeProto, *, auto_pad: str = "NOTSET", dilations=None, group: int = 1,
         kernel_shape=None, pads=None, strides=None) -> Layer:
    """2-D convolution → ``conv`` (strides, pads, auto_pad, dilations, groups incl. depthwise)."""
    name = ctx.name(node)
    x = node.input[0]
    x_shape, y_shape = ctx.shape(node, x), ctx.shape(node, node.output[0])
    if len(x_shape) != 4:
        return ctx.host(node, f"a {len(x_shape) - 2}-D convolution; the processor implements 2-D convolutions")
    w = ctx.const(node.input[1])
    if w is None:
        return ctx.host(node, "the weights are computed at run time; the processor needs constant weights")
    bias_name = node.input[2] if len(node.input) > 2 else ""
    b = ctx.const(bias_name) if bias_name else np.zeros(w.shape[0])
    if b is None:
        return ctx.host(node, "the bias is computed at run time; the processor needs a constant bias")
    kernel = (int(w.shape[2]), int(w.shape[3]))
    if kernel_shape is not None and tuple(int(k) for k in kernel_shape) != kernel:
        raise ShapeError(f"node {name!r} (Conv): kernel_shape {list(kernel_shape)} differs from the weight shape "
                         f"{list(w.shape)}")
    if x_shape[1] != w.shape[1] * group or w.shape[0] % group:
        raise ShapeError(f"node {name!r} (Conv): {x_shape[1]} input channels, weight {list(w.shape)} and group "
                         f"{group} do not match")
    stride = _pair(strides, 1, "strides", name)
    dilation = _pair(dilations, 1, "dilations", name)
    pad = _resolve_pads(ctx, node, auto_pad=auto_pad, pads=pads, in_hw=x_shape[2:4], kernel=kernel, stride=stride,
                        dilation=dilation)
    _check_out(ctx, node, y_shape, (_out_size(x_shape[2], kernel[0], stride[0], dilation[0], pad[0], pad[2]),
                                    _out_size(x_shape[3], kernel[1], stride[1], dilation[1], pad[1], pad[3])))
    return ctx.layer(node, "conv", [x], weight=np.asarray(w, np.float32), bias=np.asarray(b, np.float32).reshape(-1),
                     attrs={"kernel": kernel, "stride": stride, "pads": pad, "dilation": dilation,
                            "group": int(group)})


def Gemm(ctx: _Context, node: onnx.NodeProto, *, alpha: float = 1.0, beta: float = 1.0, transA: int = 0,
         transB: int = 0) -> Layer:
    """``alpha * A @ op(B) + beta * C`` with constant B and C → ``fc``."""
    a = node.input[0]
    a_shape = ctx.shape(node, a)
    if transA:
        return ctx.host(node, "transA=1; the processor's fc multiplies a [1, K] activation row")
    if a in ctx.consts or len(a_shape) != 2:
        return ctx.host(node, f"input A has shape {list(a_shape)}; the fc layer takes a [1, K] activation")
    b = ctx.const(node.input[1])
    if b is None:
        return ctx.host(node, "B is computed at run time; the processor needs constant fc weights")
    w = b if transB else b.T
    if alpha != 1.0:
        w = w * np.float32(alpha)
    c_name = node.input[2] if len(node.input) > 2 else ""
    out = w.shape[0]
    if c_name:
        c = ctx.const(c_name)
        if c is None:
            return ctx.host(node, "C is computed at run time; the processor needs a constant bias")
        try:
            bias = np.broadcast_to(c, (1, out))[0] * beta
        except ValueError:
            return ctx.host(node, f"C of shape {list(c.shape)} is not a bias vector of {out} entries")
    else:
        bias = np.zeros(out)
    return ctx.layer(node, "fc", [a], weight=np.ascontiguousarray(w, np.float32), bias=np.asarray(bias, np.float32))


def MatMul(ctx: _Context, node: onnx.NodeProto) -> Layer:
    """``A @ B`` with a [1, K] activation A and a constant [K, N] matrix B → ``fc`` (bias zero; a following
    Add of a constant becomes its bias in fusion)."""
    a, b_name = node.input[0], node.input[1]
    b = ctx.const(b_name)
    if a in ctx.consts or b is None or b.ndim != 2 or len(ctx.shape(node, a)) != 2:
        return ctx.host(node, "only a [1, K] activation times a constant [K, N] matrix maps to the fc layer")
    return ctx.layer(node, "fc", [a], weight=np.asarray(b.T, np.float32), bias=np.zeros(b.shape[1], np.float32))


def Relu(ctx: _Context, node: onnx.NodeProto) -> Layer:
    """ReLU → ``act`` (fused into the producer)."""
    return ctx.layer(node, "act", act=Activation("relu"))


def LeakyRelu(ctx: _Context, node: onnx.NodeProto, *, alpha: float = 0.01) -> Layer:
    """LeakyReLU → ``act`` with slope ``alpha``."""
    return ctx.layer(node, "act", act=Activation("leaky_relu", alpha=float(alpha)))


def Clip(ctx: _Context, node: onnx.NodeProto, *, min: float | None = None, max: float | None = None) -> Layer:
    """Clip (ReLU6 and friends) → ``act``; bounds from the inputs (opset >= 11) or the attributes (opset 6)."""
    lo = float("-inf") if min is None else float(min)
    hi = float("inf") if max is None else float(max)
    for index in (1, 2):
        if len(node.input) > index and node.input[index]:
            bound = ctx.const(node.input[index])
            if bound is None:
                return ctx.host(node, "the clip bounds are computed at run time")
            if index == 1:
                lo = float(bound)
            else:
                hi = float(bound)
    return ctx.layer(node, "act", act=Activation("clip", lo=lo, hi=hi))


def MaxPool(ctx: _Context, node: onnx.NodeProto, *, auto_pad: str = "NOTSET", ceil_mode: int = 0, dilations=None,
            kernel_shape=None, pads=None, storage_order: int = 0, strides=None) -> Layer:
    """Max pooling → ``maxpool`` (ceil_mode as extra bottom/right padding; storage_order only concerns Indices).

    The processor pads with zeros, which is only exact on non-negative inputs; :func:`~.fusion.fuse` moves padded
    max-pools whose input may be negative to the host.
    """
    if ctx.extra_outputs_used(node):
        return ctx.host(node, "the Indices output is not computed by the processor")
    if len(ctx.shape(node, node.input[0])) != 4:
        return ctx.host(node, "not a 2-D max pooling")
    attrs, dilated, _ = _pool_window(ctx, node, auto_pad=auto_pad, ceil_mode=ceil_mode, dilations=dilations,
                                     kernel_shape=kernel_shape, pads=pads, strides=strides)
    if dilated:
        return ctx.host(node, "dilated pooling windows are not supported by the processor")
    return ctx.layer(node, "maxpool", attrs=attrs)


def AveragePool(ctx: _Context, node: onnx.NodeProto, *, auto_pad: str = "NOTSET", ceil_mode: int = 0,
                count_include_pad: int = 0, dilations=None, kernel_shape=None, pads=None, strides=None) -> Layer:
    """Average pooling → ``avgpool`` when every window divides by the full kernel size."""
    if len(ctx.shape(node, node.input[0])) != 4:
        return ctx.host(node, "not a 2-D average pooling")
    attrs, dilated, ceil_extra = _pool_window(ctx, node, auto_pad=auto_pad, ceil_mode=ceil_mode,
                                              dilations=dilations, kernel_shape=kernel_shape, pads=pads,
                                              strides=strides)
    if dilated:
        return ctx.host(node, "dilated pooling windows are not supported by the processor")
    if ceil_extra:
        return ctx.host(node, "ceil_mode windows that run past the input divide by a smaller count; the processor "
                              "divides every window by the kernel size")
    if any(attrs["pads"]) and not count_include_pad:
        return ctx.host(node, "count_include_pad=0 with padding divides border windows by a smaller count; the "
                              "processor divides every window by the kernel size")
    attrs["count_include_pad"] = int(count_include_pad)
    return ctx.layer(node, "avgpool", attrs=attrs)


def GlobalAveragePool(ctx: _Context, node: onnx.NodeProto) -> Layer:
    """Global average pooling → ``gap``."""
    if len(ctx.shape(node, node.input[0])) != 4:
        return ctx.host(node, "not a 2-D global average pooling")
    return ctx.layer(node, "gap")


def GlobalMaxPool(ctx: _Context, node: onnx.NodeProto) -> Layer:
    """Global max pooling → ``maxpool`` with the whole feature map as window."""
    x_shape = ctx.shape(node, node.input[0])
    if len(x_shape) != 4:
        return ctx.host(node, "not a 2-D global max pooling")
    return ctx.layer(node, "maxpool", attrs={"kernel": (x_shape[2], x_shape[3]), "stride": (1, 1),
                                             "pads": (0, 0, 0, 0)})


def BatchNormalization(ctx: _Context, node: onnx.NodeProto, *, epsilon: float = 1e-5, momentum: float = 0.9,
                       training_mode: int = 0, spatial: int = 1) -> Layer:
    """Inference batch normalization → ``affine`` (folded into the preceding conv by fusion)."""
    if training_mode or len(ctx.outputs(node)) > 1:
        return ctx.host(node, "training-mode batch normalization (running statistics outputs)")
    params = [ctx.const(v) for v in node.input[1:5]]
    if any(p is None for p in params):
        return ctx.host(node, "the normalization parameters are computed at run time")
    scale, bias, mean, var = (np.asarray(p, np.float64).reshape(-1) for p in params)
    mult = scale / np.sqrt(var + epsilon)
    return ctx.layer(node, "affine", [node.input[0]], weight=mult.astype(np.float32),
                     bias=(bias - mean * mult).astype(np.float32), attrs={"op_type": node.op_type})


def _binary(ctx: _Context, node: onnx.NodeProto) -> Layer:
    """Add/Sub/Mul/Div: two activations (Add only) → ``add``; activation and per-channel constant → ``affine``."""
    a, b = node.input[0], node.input[1]
    ca, cb = ctx.const(a), ctx.const(b)
    op = node.op_type
    y_shape = ctx.shape(node, node.output[0])
    if ca is None and cb is None:
        if op == "Add" and ctx.shape(node, a) == ctx.shape(node, b) == y_shape:
            return ctx.layer(node, "add", [a, b], attrs={})
        what = "operands of different shapes (broadcasting)" if op == "Add" else "two activations"
        return ctx.host(node, f"{op} of {what}; the processor adds two activations of the same shape")
    x, c, x_first = (a, cb, True) if cb is not None else (b, ca, False)
    x_shape = ctx.shape(node, x)
    vec = _channel_vector(np.asarray(c), x_shape) if x_shape == y_shape else None
    if vec is None:
        return ctx.host(node, f"{op} with a constant of shape {list(np.shape(c))} that is not per-channel")
    ones, zeros = np.ones_like(vec), np.zeros_like(vec)
    if op == "Add":
        weight, bias = ones, vec
    elif op == "Sub":
        weight, bias = (ones, -vec) if x_first else (-ones, vec)
    elif op == "Mul":
        weight, bias = vec, zeros
    else:
        if not x_first or np.any(vec == 0):
            return ctx.host(node, "division by an activation or by zero")
        weight, bias = 1.0 / vec, zeros
    return ctx.layer(node, "affine", [x], weight=weight.astype(np.float32), bias=bias.astype(np.float32),
                     attrs={"op_type": op})


def Add(ctx: _Context, node: onnx.NodeProto) -> Layer:
    """Two activations of the same shape → ``add``; plus a per-channel constant → ``affine`` (a bias)."""
    return _binary(ctx, node)


def Sum(ctx: _Context, node: onnx.NodeProto) -> Layer:
    """Sum of two activations of the same shape (ResNet's residual add in old opsets) → ``add``; else host."""
    ins = [v for v in node.input if v]
    if len(ins) == 2 and not any(v in ctx.consts for v in ins):
        shapes = {ctx.shape(node, v) for v in ins} | {ctx.shape(node, node.output[0])}
        if len(shapes) == 1:
            return ctx.layer(node, "add", ins, attrs={})
    return ctx.host(node, f"Sum of {len(ins)} inputs (or with broadcasting/constants); the processor adds two "
                          "activations of the same shape")


def Sub(ctx: _Context, node: onnx.NodeProto) -> Layer:
    """Activation minus (or from) a per-channel constant → ``affine``."""
    return _binary(ctx, node)


def Mul(ctx: _Context, node: onnx.NodeProto) -> Layer:
    """Activation times a per-channel constant → ``affine``."""
    return _binary(ctx, node)


def Div(ctx: _Context, node: onnx.NodeProto) -> Layer:
    """Activation divided by a per-channel constant → ``affine``."""
    return _binary(ctx, node)


def Concat(ctx: _Context, node: onnx.NodeProto, *, axis: int | None = None) -> Layer:
    """Concatenation along the channel axis → ``concat``; other axes run on the host."""
    if axis is None:
        raise ModelError(f"node {ctx.name(node)!r} (Concat): the axis attribute is required")
    rank = len(ctx.shape(node, node.output[0]))
    if any(v in ctx.consts for v in node.input if v):
        return ctx.host(node, "concatenation with a constant tensor")
    if (axis % rank if rank else axis) != 1 or rank not in (2, 4):
        return ctx.host(node, f"concatenation along axis {axis} of a rank-{rank} tensor; the processor concatenates "
                              "channels (axis 1)")
    return ctx.layer(node, "concat", attrs={"axis": 1})


def _reshape_like(ctx: _Context, node: onnx.NodeProto) -> Layer:
    """Flatten/Reshape/Squeeze/Unsqueeze: layout-preserving → ``identity``, to ``(1, K)`` → ``flatten``, else host."""
    x = node.input[0]
    x_shape, y_shape = ctx.shape(node, x), ctx.shape(node, node.output[0])
    if not x_shape or not y_shape or x_shape[0] != 1 or y_shape[0] != 1:
        return ctx.host(node, f"a reshape from {list(x_shape)} to {list(y_shape)} moves the batch axis")
    if chw_shape(x_shape) == chw_shape(y_shape):
        return ctx.layer(node, "identity", [x], attrs={"op_type": node.op_type})
    if len(y_shape) == 2 and y_shape[1] == math.prod(x_shape[1:]):
        return ctx.layer(node, "flatten", [x], attrs={"op_type": node.op_type})
    return ctx.host(node, f"a reshape from {list(x_shape)} to {list(y_shape)} changes the (C, H, W) layout")


def Flatten(ctx: _Context, node: onnx.NodeProto, *, axis: int = 1) -> Layer:
    """Flatten to ``(1, K)`` → ``flatten`` (fused into the following fc); axis 0 is the same for batch 1."""
    return _reshape_like(ctx, node)


def Reshape(ctx: _Context, node: onnx.NodeProto, *, allowzero: int = 0) -> Layer:
    """Reshape: a flatten to ``(1, -1)`` → ``flatten``, a layout-preserving reshape → ``identity``, else host."""
    return _reshape_like(ctx, node)


def Squeeze(ctx: _Context, node: onnx.NodeProto, *, axes=None) -> Layer:
    """Squeeze (e.g. ``[1, C, 1, 1]`` → ``[1, C]`` after a global pooling) → ``identity``/``flatten``."""
    return _reshape_like(ctx, node)


def Unsqueeze(ctx: _Context, node: onnx.NodeProto, *, axes=None) -> Layer:
    """Unsqueeze (e.g. ``[1, C]`` → ``[1, C, 1, 1]``) → ``identity`` when the layout is kept."""
    return _reshape_like(ctx, node)


def Identity(ctx: _Context, node: onnx.NodeProto) -> Layer:
    """Identity → removed."""
    return ctx.layer(node, "identity", [node.input[0]], attrs={"op_type": node.op_type})


def Dropout(ctx: _Context, node: onnx.NodeProto, *, seed: int | None = None, ratio: float = 0.5,
            is_test: int = 0) -> Layer:
    """Dropout in inference mode → removed (the mask output or training mode run on the host)."""
    training = ctx.const(node.input[2]) if len(node.input) > 2 and node.input[2] else np.array(False)
    if ctx.extra_outputs_used(node) or training is None or bool(np.asarray(training)):
        return ctx.host(node, "dropout in training mode or with its mask output")
    return ctx.layer(node, "identity", [node.input[0]], attrs={"op_type": node.op_type})


def Softmax(ctx: _Context, node: onnx.NodeProto, *, axis: int = -1) -> Layer:
    """Softmax always runs on the host (the processor has no exponential unit)."""
    return ctx.host(node, "Softmax runs on the host: the processor has no exponential unit")


_HANDLERS: dict[str, Callable[..., Layer]] = {
    f.__name__: f for f in (Conv, Gemm, MatMul, Relu, LeakyRelu, Clip, MaxPool, AveragePool, GlobalAveragePool,
                            GlobalMaxPool, BatchNormalization, Add, Sum, Sub, Mul, Div, Concat, Flatten, Reshape,
                            Squeeze, Unsqueeze, Identity, Dropout, Softmax)}

#: ONNX operators with a handler (mapped to the processor or fused away when their arguments allow it).
SUPPORTED_OPS = tuple(sorted(op for op in _HANDLERS if op != "Softmax"))


# ---------------------------------------------------------------------------------------------- loading


def _load(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return copy.deepcopy(model)
    path = Path(model)
    if path.is_dir():
        raise ModelError(f"ONNX model {str(path)!r} is a directory; give the .onnx file")
    if not path.is_file():
        raise ModelError(f"ONNX model {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise ModelError(f"ONNX model {str(path)!r} is an empty file")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelError(f"{path}: not a readable ONNX model ({exc})") from exc


def _check_finite(g: onnx.GraphProto, consts: dict[str, np.ndarray]) -> None:
    """Refuse NaN/Inf in a floating-point initializer, naming it and its first consumer."""
    for name, value in consts.items():
        if value.dtype.kind == "f" and value.size and not np.all(np.isfinite(value)):
            bad = ~np.isfinite(value)
            user = next((f"{n.name or n.op_type!r} ({n.op_type})" for n in g.node if name in n.input), "no node")
            raise ModelError(f"initializer {name!r} (shape {list(value.shape)}, used by node {user}) holds "
                             f"{int(bad.sum())} NaN/Inf value(s), the first at index "
                             f"{tuple(int(i) for i in np.argwhere(bad)[0])}; weights must be finite")


_WINDOW_OPS = ("Conv", "MaxPool", "AveragePool")


def _check_window(ctx: _Context, node: onnx.NodeProto, attrs: dict) -> None:
    """Refuse window attributes no operator can have (stride 0, negative pads, a kernel larger than the input)
    before shape inference's silence turns them into "unknown shape"."""
    if node.op_type not in _WINDOW_OPS:
        return
    name = ctx.name(node)
    for key, least in (("strides", 1), ("dilations", 1), ("kernel_shape", 1), ("pads", 0)):
        values = attrs.get(key)
        if values is not None and any(int(v) < least for v in values):
            raise ShapeError(f"node {name!r} ({node.op_type}): {key} {list(values)} has an entry below {least}; "
                             f"{key} must be {'>= 0' if least == 0 else 'positive'}")
    x_shape = ctx.shapes.get(node.input[0])
    kernel = attrs.get("kernel_shape")
    if kernel is None and node.op_type == "Conv" and len(node.input) > 1:
        w = ctx.const(node.input[1])
        kernel = None if w is None else w.shape[2:]
    if x_shape is None or kernel is None or len(x_shape) != 2 + len(kernel) \
            or attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", b"NOTSET", b"VALID"):
        return
    pads = [int(p) for p in attrs.get("pads", [0] * 2 * len(kernel))]
    dil = [int(d) for d in attrs.get("dilations", [1] * len(kernel))]
    for i, k in enumerate(kernel):
        span = (int(k) - 1) * (dil[i] if i < len(dil) else 1) + 1
        size = x_shape[2 + i] + (pads[i] + pads[i + len(kernel)] if len(pads) == 2 * len(kernel) else 0)
        if span > size:
            raise ShapeError(f"node {name!r} ({node.op_type}): the kernel {list(map(int, kernel))} spans {span} on "
                             f"axis {2 + i} but the input {node.input[0]!r} {list(x_shape)} with padding is only "
                             f"{size} wide")


def _default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            version = int(imp.version)
            if not MIN_OPSET <= version <= MAX_OPSET:
                raise OpsetError(f"the model uses opset {version} of the default ONNX domain; the compiler supports "
                                 f"opsets {MIN_OPSET} to {MAX_OPSET} (convert it with onnx.version_converter)")
            return version
    raise ModelError("the model imports no opset of the default ONNX domain")


def _fix_batch(model: onnx.ModelProto, image_input: str) -> None:
    """Set the batch axis (axis 0) to 1 wherever it is symbolic; check the image input is otherwise static."""
    for vi in model.graph.input:
        if vi.name != image_input:
            continue
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            raise ShapeError(f"network input {vi.name!r} has no shape; the compiler needs [1, C, H, W]")
        dims = vi.type.tensor_type.shape.dim
        if len(dims) == 0:
            raise ShapeError(f"network input {vi.name!r} is a scalar; the compiler needs [1, C, H, W]")
        if dims[0].HasField("dim_value") and dims[0].dim_value != 1:
            raise ShapeError(f"network input {vi.name!r} has batch size {dims[0].dim_value}; the compiler needs "
                             "batch 1 or a symbolic batch axis")
        for i, d in enumerate(dims[1:], start=1):
            if d.HasField("dim_value") and d.dim_value <= 0:
                raise ShapeError(f"network input {vi.name!r}: axis {i} has size {d.dim_value} (shape "
                                 f"{[x.dim_value if x.HasField('dim_value') else x.dim_param for x in dims]}); "
                                 "every axis must hold at least one element")
            if not d.HasField("dim_value") or d.dim_value <= 0:
                raise ShapeError(f"network input {vi.name!r}: axis {i} is not static ({d.dim_param or '?'}); only "
                                 "the batch axis may be symbolic")
    for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            dims = vi.type.tensor_type.shape.dim
            if len(dims) and not dims[0].HasField("dim_value"):
                dims[0].dim_value = 1


def _static_shapes(model: onnx.ModelProto) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    shapes, types = {}, {}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is None:
            continue
        types[vi.name] = tt.elem_type
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            shapes[vi.name] = tuple(int(d.dim_value) for d in tt.shape.dim)
    return shapes, types


def _evaluate(node: onnx.NodeProto, opset: int, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run one node with the float evaluator (constant folding)."""
    inputs = [onnx.helper.make_tensor_value_info(k, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for k, v in feeds.items()]
    outputs = [onnx.helper.make_empty_tensor_value_info(v) for v in node.output if v]
    graph = onnx.helper.make_graph([node], "fold", inputs, outputs)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    return [np.asarray(v) for v in float_evaluator(model).run(None, feeds)]


def _fold(node: onnx.NodeProto, opset: int, consts: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]],
          types: dict[str, int]) -> bool:
    """Evaluate ``node`` at compile time when its inputs are constant (or only its input's static shape matters)."""
    if node.op_type in _NONDETERMINISTIC or node.domain not in ("", "ai.onnx") or _has_subgraph(node):
        return False
    inputs = [v for v in node.input if v]
    if node.op_type in ("Shape", "Size") and inputs[0] not in consts and inputs[0] in shapes:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(types.get(inputs[0], onnx.TensorProto.FLOAT))
        feeds = {inputs[0]: np.zeros(shapes[inputs[0]], dtype)}
    elif all(v in consts for v in inputs):
        feeds = {v: consts[v] for v in inputs}
    else:
        return False
    try:
        values = _evaluate(node, opset, feeds)
    except Exception as exc:
        raise ModelError(f"node {node.name!r} ({node.op_type}): constant folding failed ({exc})") from exc
    for name, value in zip([v for v in node.output if v], values, strict=False):
        consts[name] = value
    return True


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def _name_nodes(graph: onnx.GraphProto) -> None:
    """Give every node a unique name: its ONNX name, ``<op_type>_<index>`` for unnamed nodes (stable: the index in
    the original graph), a ``_<k>`` suffix for repeated names."""
    taken = {n.name for n in graph.node if n.name}
    seen: set[str] = set()
    for i, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{i}"
        if not node.name:
            while name in taken:
                name += "_"
        base, k = name, 1
        while name in seen:
            name, k = f"{base}_{k}", k + 1
        seen.add(name)
        node.name = name


def _infer(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Shape inference, strict first (inconsistencies are errors); operators without an inference function make
    strict mode fail, so a non-strict pass follows (every shape the compiler uses is still checked to be static).

    Inference runs on a skeleton of the model whose large initializers are typed inputs without data: ONNX's
    inference serializes the whole model, which for VGG-sized weights costs tens of seconds. The inferred
    value_info is copied back into ``proto``.
    """
    g = proto.graph
    big = {i.name for i in g.initializer if int(np.prod(i.dims)) > 4096}
    light = onnx.ModelProto()
    light.ir_version = proto.ir_version
    light.opset_import.extend(proto.opset_import)
    light.functions.extend(proto.functions)
    lg = light.graph
    lg.name = g.name
    lg.node.extend(g.node)
    lg.input.extend(i for i in g.input if i.name not in big)
    for init in g.initializer:
        if init.name in big:
            lg.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            lg.initializer.append(init)
    lg.output.extend(g.output)
    lg.value_info.extend(g.value_info)
    try:
        inferred = onnx.shape_inference.infer_shapes(light, check_type=True, strict_mode=True, data_prop=True)
    except Exception as strict_exc:  # InferenceError, ValidationError
        if "Inferred shape and existing shape differ" in str(strict_exc) or "Incompatible" in str(strict_exc):
            raise ShapeError(f"ONNX shape inference fails on the model: {strict_exc}") from strict_exc
        try:
            inferred = onnx.shape_inference.infer_shapes(light, check_type=True, strict_mode=False, data_prop=True)
        except Exception as exc:
            raise ShapeError(f"ONNX shape inference fails on the model: {strict_exc}") from exc
    del g.value_info[:]
    g.value_info.extend(inferred.graph.value_info)
    del g.output[:]
    g.output.extend(inferred.graph.output)
    return proto


def _fold_constants(proto: onnx.ModelProto, opset: int):
    """Fold constant subgraphs into initializers, re-running shape inference until nothing changes (a Reshape's
    output shape becomes known once its computed shape input is folded).

    Returns
    -------
    proto, shapes, types, consts
    """
    while True:
        proto = _infer(proto)
        shapes, types = _static_shapes(proto)
        g = proto.graph
        consts = {init.name: numpy_helper.to_array(init) for init in g.initializer}
        known = set(consts)
        nodes = list(g.node)
        folded = {i for i, node in enumerate(nodes) if _fold(node, opset, consts, shapes, types)}
        if not folded:
            return proto, shapes, types, consts
        kept = [node for i, node in enumerate(nodes) if i not in folded]
        del g.node[:]
        g.node.extend(kept)
        g.initializer.extend(numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items() if k not in known)


def _generic_host(ctx: _Context, node: onnx.NodeProto) -> Layer:
    """A node without a handler: host layer when the float evaluator can execute it, else
    UnsupportedOperatorError."""
    reason = host_executable(node.op_type, ctx.opset)
    if reason is not None:
        raise UnsupportedOperatorError(ctx.name(node), node.op_type, "neither the processor nor the host runtime "
                                       f"implements it: {reason}", SUPPORTED_OPS)
    return ctx.host(node, f"{node.op_type} has no processor implementation")


def load_onnx(model: str | Path | onnx.ModelProto, *, fuse: bool = True) -> Graph:
    """Load an ONNX model into the compiler's layer graph.

    Parameters
    ----------
    model : str, Path or onnx.ModelProto
        The model (file path or loaded proto; the proto is not modified).
    fuse : bool
        Run :func:`~.fusion.fuse` (BatchNormalization folding, activation fusion, flatten + fc, lowering of the
        front-end layer kinds). With ``False`` the graph still holds the :data:`FRONTEND_OPS` layers.

    Returns
    -------
    Graph

    Raises
    ------
    ModelError
        The checker rejects the model, or it is otherwise malformed.
    OpsetError
        The default-domain opset is outside 11 to 21.
    ShapeError
        A shape is not static (other than the batch axis) or the batch size is not 1.
    UnsupportedOperatorError
        A node can run neither on the processor nor on the host (control flow, custom domains).
    """
    proto = _load(model)
    if proto.producer_name == "dlproc" and proto.doc_string.startswith("int8 network exported by dlproc"):
        raise ModelError("this model is dlproc's own QDQ export (the processor's integer arithmetic spelled out for "
                         "onnx.reference/onnxruntime), which the compiler does not read back; compile the float model "
                         "with the same settings instead (dlproc compile --calibration ... --method/--percentile/"
                         "--per-tensor/--scale-mode)")
    for vi in proto.graph.input:
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            if not any(init.name == vi.name for init in proto.graph.initializer):
                raise ShapeError(f"network input {vi.name!r} has no shape; the compiler needs static shapes (only "
                                 "the batch axis may be symbolic)")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"the ONNX checker rejects the model: {exc}") from exc
    opset = _default_opset(proto)
    g = proto.graph
    consts = {init.name: numpy_helper.to_array(init) for init in g.initializer}
    _check_finite(g, consts)
    if not g.node:
        raise ModelError("the model has no nodes: there is nothing to compile")
    inputs = [vi.name for vi in g.input if vi.name not in consts]
    if not inputs:
        raise ModelError("the model has no network input")
    if len(inputs) > 1:
        raise ShapeError(f"the model has {len(inputs)} network inputs {inputs}; the processor takes one image input")
    image = inputs[0]
    elem = g.input[[vi.name for vi in g.input].index(image)].type.tensor_type.elem_type
    if elem != onnx.TensorProto.FLOAT:
        raise ModelError(f"network input {image!r} has type {onnx.TensorProto.DataType.Name(elem)}; the compiler "
                         "takes a float32 image")
    _fix_batch(proto, image)
    _name_nodes(proto.graph)
    qdq = strip_qdq(proto)  # a QDQ model: activation Q/DQ pairs are removed, their scales kept
    proto, shapes, types, consts = _fold_constants(proto, opset)
    g = proto.graph
    ctx = _Context(opset, shapes, consts)
    nodes = list(g.node)
    graph_outputs = [vi.name for vi in g.output]
    ctx.used = {v for node in nodes for v in node.input if v} | set(graph_outputs)
    layers: list[Layer] = []
    for node in nodes:
        name = node.name
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedOperatorError(name, f"{node.domain}.{node.op_type}", "operators of custom domains are "
                                           "not supported", SUPPORTED_OPS)
        if _has_subgraph(node):
            raise UnsupportedOperatorError(name, node.op_type, "control flow with subgraphs is not supported",
                                           SUPPORTED_OPS)
        handler = _HANDLERS.get(node.op_type)
        if handler is None:
            layer = _generic_host(ctx, node)
        else:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
            accepted = set(inspect.signature(handler).parameters) - {"ctx", "node"}
            unknown = sorted(set(attrs) - accepted)
            if unknown:
                raise ModelError(f"node {name!r} ({node.op_type}): unknown attribute(s) {unknown}; "
                                 f"{node.op_type} accepts {sorted(accepted)}")
            _check_window(ctx, node, attrs)
            layer = handler(ctx, node, **attrs)
            if qdq and layer.op in ("conv", "fc"):
                weight_scale = qdq.weight_scale(layer, node)
                if weight_scale is not None:
                    layer.attrs["weight_scale"] = weight_scale
        layers.append(layer)
    for out in graph_outputs:
        if out in consts:
            raise ModelError(f"network output {out!r} is a constant; the compiler needs outputs computed from the "
                             "input")
    tensors: dict[str, TensorInfo] = {}
    for name in [image] + [v for layer in layers for v in layer.inputs + layer.outputs]:
        if name in tensors:
            continue
        if name not in shapes:
            producer = next((la for la in layers if name in la.outputs), None)
            where = f"output of {producer.name!r}" if producer else "tensor"
            raise ShapeError(f"{where} {name!r} has no static shape after shape inference; the runtime needs static "
                             "shapes")
        if 0 in shapes[name]:
            raise ShapeError(f"tensor {name!r} has shape {list(shapes[name])} with a zero-size axis; every tensor "
                             "must hold at least one element")
        elem = types.get(name, onnx.TensorProto.FLOAT)
        if elem != onnx.TensorProto.FLOAT:
            raise ShapeError(f"tensor {name!r} has type {onnx.TensorProto.DataType.Name(elem)}; activations between "
                             "layers must be float32")
        tensors[name] = TensorInfo(name, chw_shape(shapes[name]), tuple(shapes[name]),
                                   scale=qdq.activations.get(name))
    used = {v for layer in layers for n in layer.onnx_nodes for v in n.input}
    initializers = {k: v for k, v in consts.items() if k in used}
    graph = Graph(name=g.name or "model", inputs=[image], outputs=graph_outputs, tensors=tensors, layers=layers,
                  initializers=initializers, opset=opset)
    return run_fusion(graph) if fuse else graph
