"""Floating-point execution: the project's one float evaluator of ONNX models, and of a layer graph.

:func:`float_evaluator` is the float yardstick of the whole project (host layers, ``Workflow.validate``, constant
folding in the front end, the tests): ``onnx.reference.ReferenceEvaluator`` with the corrections in
:data:`FLOAT_OPS`. Nothing else constructs a ``ReferenceEvaluator``.

:func:`run_float` executes a layer graph: processor layers run in numpy (float64) with the ONNX semantics of the
operators they came from; host layers run through :func:`float_evaluator` on a model holding just their ONNX nodes
(:func:`host_model`). Values are kept in their ONNX shapes with the batch axis ``N`` first (``[N, C, H, W]`` feature
maps, ``[N, K]`` vectors), so every tensor can be compared with :func:`float_evaluator` on the original model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from onnx.reference.ops import load_op

from .graph import LUT_ACTIVATIONS, Graph, Layer, pre_activation

__all__ = ["FLOAT_OPS", "BatchNormalization", "LRN", "HardSwish", "Mish", "GlobalLpPool", "GroupNormalization",
           "host_executable", "float_evaluator", "run_float", "host_model", "HostRunner"]


def _main_opset(opsets: dict[str, int]) -> int:
    for domain in ("", "ai.onnx"):
        if domain in opsets:
            return int(opsets[domain])
    raise KeyError(f"no ai.onnx opset among {sorted(opsets)}")


class BatchNormalization(OpRun):
    """BatchNormalization for ``onnx.reference`` with the opset 7-13 semantics of the ONNX specification.

    From opset 7 (where ``is_test`` went away) to 13 the number of outputs selects the mode: one output is inference
    with the running statistics; five outputs are training (the batch's statistics normalize, then
    ``running_mean``, ``running_var``, ``saved_mean`` and ``saved_var`` follow in schema order, ``saved_var`` being
    the inverse standard deviation as onnxruntime computes it). The onnx release we install decides by ``momentum is
    None`` in ``BatchNormalization_9`` (opsets 9-13), but the schema fills momentum's default 0.9, so every
    one-output node blends the running statistics with the current batch's; for opsets 7 and 8 it runs
    ``BatchNormalization_6``, which fails without ``is_test``. Other opsets use onnx's own implementation unchanged.

    Upstream fix: onnx/onnx pull request 8442 (https://github.com/onnx/onnx/pull/8442). Once an onnx release ships
    it, delete this class and take it out of :data:`FLOAT_OPS`: nothing else refers to it.
    """

    op_domain = ""
    #: Opsets whose onnx implementation (``BatchNormalization_6`` for 7-8, ``_9`` for 9-13) is replaced.
    FIXED_OPSETS = range(7, 14)

    def __init__(self, onnx_node: onnx.NodeProto, run_params: dict[str, Any], schema: Any = None):
        version = _main_opset(run_params["opsets"])
        self._upstream: OpRun | None = None
        if version not in self.FIXED_OPSETS:
            self._upstream = load_op("", "BatchNormalization", version)(onnx_node, run_params, schema)
        super().__init__(onnx_node, run_params, onnx.defs.get_schema("BatchNormalization", version))

    def run(self, *args, **kwargs):
        """``OpRun.run``; outside :attr:`FIXED_OPSETS`, onnx's own implementation's."""
        if self._upstream is not None:
            return self._upstream.run(*args, **kwargs)
        return super().run(*args, **kwargs)

    def _run(self, x, scale, bias, mean, var, epsilon=None, momentum=None, spatial=1):
        # spatial (opsets 7 and 8): 1 = one statistic per channel, 0 = one per element of a sample
        shape = (-1,) + (1,) * (x.ndim - 2) if spatial else x.shape[1:]
        if not any(self.onnx_node.output[1:]):  # one output: inference with the running statistics
            std = np.sqrt(var + epsilon)
            y = scale.reshape(shape) * (x - mean.reshape(shape)) / std.reshape(shape) + bias.reshape(shape)
            return (y.astype(x.dtype),)
        axes = tuple(i for i in range(x.ndim) if i != 1) if spatial else (0,)
        batch_mean, batch_var = x.mean(axis=axes).reshape(mean.shape), x.var(axis=axes).reshape(var.shape)
        inv_std = 1 / np.sqrt(batch_var + epsilon)
        y = scale.reshape(shape) * (x - batch_mean.reshape(shape)) * inv_std.reshape(shape) + bias.reshape(shape)
        stats = (mean * momentum + batch_mean * (1 - momentum), var * momentum + batch_var * (1 - momentum),
                 batch_mean, inv_std)
        return tuple(v.astype(x.dtype) for v in (y, *stats))[:len(self.onnx_node.output)]


class HardSwish(OpRun):
    """HardSwish (opset 14): ``x * max(0, min(1, x / 6 + 1 / 2))``.

    onnx.reference has no kernel for it (it expands the schema's function body node by node); this one-liner is the
    specification's formula, computed in the input's dtype.
    """

    op_domain = ""

    def _run(self, x):
        return ((x * np.clip(x / 6 + 0.5, 0, 1)).astype(x.dtype),)


class Mish(OpRun):
    """Mish (opset 18): ``x * tanh(softplus(x))``, softplus computed without overflow (``logaddexp(0, x)``).

    onnx.reference has no kernel for it (it expands the schema's function body).
    """

    op_domain = ""

    def _run(self, x):
        return ((x * np.tanh(np.logaddexp(0, x))).astype(x.dtype),)


class GlobalLpPool(OpRun):
    """GlobalLpPool (opsets 2-21): ``(sum |x|^p) ** (1/p)`` over every spatial axis, kept as size-1 axes.

    onnx.reference implements neither the operator nor a function body for it.
    """

    op_domain = ""

    def _run(self, x, p=2):
        axes = tuple(range(2, x.ndim))
        return ((np.sum(np.abs(x) ** p, axis=axes, keepdims=True) ** (1.0 / p)).astype(x.dtype),)


class GroupNormalization(OpRun):
    """GroupNormalization (opsets 18 and 21): normalize each group of ``C / num_groups`` channels by its mean and
    variance over the channels and spatial axes, then scale and shift.

    Opset 18 has one scale and bias per group, opset 21 one per channel. onnx.reference fails on opset 21 (its
    context-dependent function body cannot be built without input types) and on opset 18 expands the function body.
    """

    op_domain = ""

    def _run(self, x, scale, bias, epsilon=1e-5, num_groups=None, stash_type=1):
        n, c = x.shape[:2]
        groups = x.astype(np.float64).reshape(n, num_groups, -1)
        mean, var = groups.mean(axis=2, keepdims=True), groups.var(axis=2, keepdims=True)
        y = ((groups - mean) / np.sqrt(var + epsilon)).reshape(x.shape)
        per = np.repeat if scale.size == num_groups and c != num_groups else None
        s = per(scale, c // num_groups) if per else scale
        b = per(bias, c // num_groups) if per else bias
        shape = (1, c) + (1,) * (x.ndim - 2)
        return ((y * s.reshape(shape) + b.reshape(shape)).astype(x.dtype),)


class LRN(OpRun):
    """LRN (opsets 1-13): ``y = x / (bias + alpha / size * square_sum) ** beta``, ``square_sum[c]`` the sum of ``x**2``
    over channels ``max(0, c - floor((size-1)/2)) .. min(C-1, c + ceil((size-1)/2))``.

    onnx.reference's ``LRN._run`` loops ``for c in range(x.shape[0])`` (the batch axis) instead of the channels, so
    with batch 1 only channel 0 is normalized and every other channel is divided by ``bias ** beta``; onnxruntime
    follows the specification. Delete this class once an onnx release fixes the loop.
    """

    op_domain = ""

    def _run(self, x, alpha=1e-4, beta=0.75, bias=1.0, size=None):
        c = x.shape[1]
        lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
        sq = x.astype(np.float64) ** 2
        square_sum = np.stack([sq[:, max(0, ch - lo):min(c, ch + hi + 1)].sum(axis=1) for ch in range(c)], axis=1)
        return ((x / (bias + alpha / size * square_sum) ** beta).astype(x.dtype),)


#: Operator implementations that replace onnx.reference's (``new_ops`` of every evaluator :func:`float_evaluator`
#: makes): corrections (BatchNormalization, LRN) and numpy kernels for operators onnx.reference lacks or only expands
#: from a function body.
FLOAT_OPS: tuple[type[OpRun], ...] = (BatchNormalization, LRN, HardSwish, Mish, GlobalLpPool, GroupNormalization)


def host_executable(op_type: str, opset: int) -> str | None:
    """Whether :func:`float_evaluator` can execute a default-domain operator at an opset.

    Parameters
    ----------
    op_type : str
        The ONNX operator.
    opset : int
        The model's default-domain opset.

    Returns
    -------
    str or None
        None when it can (an operator of :data:`FLOAT_OPS`, an onnx.reference kernel, or a function body the
        evaluator expands), else the reason it cannot.
    """
    if any(op.__name__ == op_type for op in FLOAT_OPS):
        return None
    try:
        schema = onnx.defs.get_schema(op_type, opset)
    except onnx.defs.SchemaError:
        return f"ONNX defines no operator {op_type!r} at opset {opset}"
    if schema.has_function or schema.has_context_dependent_function:
        return None
    try:
        load_op("", op_type, opset)
    except Exception as exc:  # onnx.reference raises several kinds for a missing kernel
        return f"onnx.reference has no implementation ({exc})"
    return None


def float_evaluator(model: onnx.ModelProto | str | Path, **kwargs) -> ReferenceEvaluator:
    """The project's float evaluator of an ONNX model: ``onnx.reference`` with the operators of :data:`FLOAT_OPS`.

    Parameters
    ----------
    model : onnx.ModelProto or str or Path
        The model (or its file).
    **kwargs
        Further arguments of ``onnx.reference.ReferenceEvaluator`` (``verbose``, ``functions``, ...).

    Returns
    -------
    onnx.reference.ReferenceEvaluator
        Call ``run(None, feeds)`` for the outputs in graph order.
    """
    if isinstance(model, Path):
        model = str(model)
    return ReferenceEvaluator(model, new_ops=list(FLOAT_OPS), **kwargs)


def host_model(graph: Graph, layer: Layer) -> onnx.ModelProto:
    """A model that executes the ONNX nodes of a host layer (batch 1, float32 inputs).

    Parameters
    ----------
    graph : Graph
        The graph (tensor shapes, initializers, opset).
    layer : Layer
        A layer with ``onnx_nodes``.

    Returns
    -------
    onnx.ModelProto
        Inputs are ``layer.inputs`` (float32, their ONNX shapes), outputs ``layer.outputs``; the constant inputs of
        the nodes are initializers.
    """
    produced = {v for node in layer.onnx_nodes for v in node.output}
    inputs = [onnx.helper.make_tensor_value_info(v, onnx.TensorProto.FLOAT, graph.tensors[v].onnx_shape)
              for v in dict.fromkeys(layer.inputs)]
    consts = {v for node in layer.onnx_nodes for v in node.input
              if v and v not in produced and v not in layer.inputs}
    missing = sorted(consts - set(graph.initializers))
    if missing:
        raise KeyError(f"host layer {layer.name!r}: no value for the constant inputs {missing}")
    inits = [onnx.numpy_helper.from_array(np.asarray(graph.initializers[v]), v) for v in sorted(consts)]
    outputs = [onnx.helper.make_empty_tensor_value_info(v) for v in layer.outputs]
    body = onnx.helper.make_graph(list(layer.onnx_nodes), f"host_{layer.name}", inputs, outputs, inits)
    return onnx.helper.make_model(body, opset_imports=[onnx.helper.make_opsetid("", graph.opset)])


class HostRunner:
    """Executes host layers with :func:`float_evaluator`, one sample at a time (the model was compiled for batch 1).

    Parameters
    ----------
    graph : Graph
        The graph the layers belong to.
    """

    def __init__(self, graph: Graph):
        self.graph = graph
        self._evaluators: dict[str, ReferenceEvaluator] = {}

    def __call__(self, layer: Layer, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run ``layer`` on float inputs ``[N, ...]``; returns its outputs ``[N, ...]`` as float arrays."""
        if layer.name not in self._evaluators:
            self._evaluators[layer.name] = float_evaluator(host_model(self.graph, layer))
        evaluator = self._evaluators[layer.name]
        names = list(dict.fromkeys(layer.inputs))
        feeds = dict(zip(layer.inputs, inputs, strict=True))
        n = inputs[0].shape[0] if inputs else 1
        per_sample = []
        for i in range(n):
            one = {k: np.asarray(feeds[k][i:i + 1], np.float32).reshape(self.graph.tensors[k].onnx_shape)
                   for k in names}
            per_sample.append(evaluator.run(None, one))
        return [np.concatenate([np.asarray(s[j]) for s in per_sample]) for j in range(len(layer.outputs))]


def _pad(x: np.ndarray, pads: tuple[int, int, int, int], value: float = 0.0) -> np.ndarray:
    top, left, bottom, right = pads
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def _windows(xp: np.ndarray, kernel, stride, dilation, out_hw):
    """Yield ``(ky, kx, view [N, C, OH, OW])`` of every kernel tap over the padded input."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = ky * dh, kx * dw
            yield ky, kx, xp[:, :, y0:y0 + (oh - 1) * sh + 1:sh, x0:x0 + (ow - 1) * sw + 1:sw]


def _out_hw(x: np.ndarray, kernel, stride, dilation, pads) -> tuple[int, int]:
    h = x.shape[2] + pads[0] + pads[2]
    w = x.shape[3] + pads[1] + pads[3]
    return ((h - ((kernel[0] - 1) * dilation[0] + 1)) // stride[0] + 1,
            (w - ((kernel[1] - 1) * dilation[1] + 1)) // stride[1] + 1)


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, *, stride, pads, dilation,
           group: int) -> np.ndarray:
    """Grouped 2-D convolution in float64 (ONNX Conv semantics), ``x`` ``[N, C, H, W]``."""
    n = x.shape[0]
    oc, icg, kh, kw = weight.shape
    out_hw = _out_hw(x, (kh, kw), stride, dilation, pads)
    xp = _pad(x.astype(np.float64), pads)
    # im2col: [group, icg * taps, N * OH * OW] so each group is one BLAS matrix product
    taps = [view for _, _, view in _windows(xp, (kh, kw), stride, dilation, out_hw)]
    cols = np.stack(taps, axis=2).reshape(n, group, icg * kh * kw, out_hw[0] * out_hw[1])
    cols = cols.transpose(1, 2, 0, 3).reshape(group, icg * kh * kw, -1)
    w = weight.astype(np.float64).reshape(group, oc // group, icg * kh * kw)
    out = np.matmul(w, cols).reshape(group, oc // group, n, *out_hw)
    out = out.transpose(2, 0, 1, 3, 4).reshape(n, oc, *out_hw)
    if bias is not None:
        out += bias.astype(np.float64).reshape(1, -1, 1, 1)
    return out


def _pool(x: np.ndarray, attrs: dict, kind: str) -> np.ndarray:
    kernel, stride, pads = attrs["kernel"], attrs["stride"], attrs["pads"]
    out_hw = _out_hw(x, kernel, stride, (1, 1), pads)
    if kind == "max":
        xp = _pad(x, pads, -np.inf)  # ONNX ignores padded positions
        out = np.full(x.shape[:2] + out_hw, -np.inf)
        for _, _, view in _windows(xp, kernel, stride, (1, 1), out_hw):
            out = np.maximum(out, view)
        return out
    xp = _pad(x, pads)  # count_include_pad (or no padding): every window divides by the kernel size
    out = np.zeros(x.shape[:2] + out_hw)
    for _, _, view in _windows(xp, kernel, stride, (1, 1), out_hw):
        out += view
    return out / (kernel[0] * kernel[1])


def run_layer(graph: Graph, layer: Layer, inputs: list[np.ndarray], host: HostRunner | None = None,
              pre: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
    """Execute one layer in float64.

    Parameters
    ----------
    graph : Graph
        The graph (for tensor shapes and host layers).
    layer : Layer
        The layer (processor kinds, front-end kinds or host).
    inputs : list of ndarray
        Input values ``[N, ...]`` in their ONNX shapes.
    host : HostRunner, optional
        Runner (with its cache of evaluators) for host layers.
    pre : dict, optional
        Receives the value before a :data:`~.graph.LUT_ACTIVATIONS` activation, under
        :func:`~.graph.pre_activation` of the layer's name (calibration of the lookup table's input).

    Returns
    -------
    list of ndarray
        Output values ``[N, ...]`` in the ONNX shapes of ``layer.outputs``.
    """
    n = inputs[0].shape[0] if inputs else 1

    def fmap(value: np.ndarray, name: str) -> np.ndarray:
        return value.reshape((n,) + graph.tensors[name].shape).astype(np.float64)

    op = layer.op
    if op == "host":
        outs = (host or HostRunner(graph))(layer, inputs)
    else:
        x = fmap(inputs[0], layer.inputs[0])
        if op == "conv":
            a = layer.attrs
            y = conv2d(x, layer.weight, layer.bias, stride=a["stride"], pads=a["pads"], dilation=a["dilation"],
                       group=a["group"])
        elif op == "fc":
            y = x.reshape(n, -1) @ layer.weight.astype(np.float64).T + layer.bias.astype(np.float64)
        elif op == "maxpool":
            y = _pool(x, layer.attrs, "max")
        elif op == "avgpool":
            y = _pool(x, layer.attrs, "avg")
        elif op == "gap":
            y = x.mean(axis=(2, 3))
        elif op == "add":
            y = x + fmap(inputs[1], layer.inputs[1])
        elif op == "mul":  # the second operand may be a [C, 1, 1] gate
            y = x * fmap(inputs[1], layer.inputs[1])
        elif op == "concat":
            y = np.concatenate([fmap(v, k) for v, k in zip(inputs, layer.inputs, strict=True)], axis=1)
        elif op == "affine":
            y = x * layer.weight.reshape(1, -1, 1, 1) + layer.bias.reshape(1, -1, 1, 1)
        elif op in ("act", "flatten", "identity"):
            y = x
        else:
            raise ValueError(f"layer {layer.name!r}: unknown layer kind {op!r}")
        if pre is not None and layer.act.kind in LUT_ACTIVATIONS:
            pre[pre_activation(layer.name)] = y
        outs = [layer.act.apply(y)]
    return [np.asarray(v).reshape((n,) + graph.tensors[name].onnx_shape[1:])
            for v, name in zip(outs, layer.outputs, strict=True)]


def run_float(graph: Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Execute a float graph layer by layer.

    Parameters
    ----------
    graph : Graph
        A graph from :func:`~.frontend.load_onnx` (fused or not); quantization parameters are ignored.
    x : ndarray
        The network input ``[N, C, H, W]`` (a batch; a single ``[C, H, W]`` image is accepted too).

    Returns
    -------
    dict of str to ndarray
        The value of every tensor (network input included) in its ONNX shape with batch ``N``; processor layers in
        float64, host layers in the dtype :func:`float_evaluator` returns.
    """
    info = graph.tensors[graph.inputs[0]]
    x = np.asarray(x)
    if x.shape == info.onnx_shape[1:]:
        x = x[None]
    if x.shape[1:] != info.onnx_shape[1:]:
        raise ValueError(f"input of shape {x.shape}; the network takes [N, {', '.join(map(str, info.onnx_shape[1:]))}]")
    values = {graph.inputs[0]: x.astype(np.float64)}
    host = HostRunner(graph)
    for layer in graph.layers:
        outs = run_layer(graph, layer, [values[v] for v in layer.inputs], host)
        values.update(zip(layer.outputs, outs, strict=True))
    return values
