"""Fusions on the front end's layer graph, and lowering of the front-end layer kinds.

:func:`fuse` runs the named passes of :data:`FUSION_PASSES` and leaves only processor layers
(:data:`~.graph.HW_OPS`) and host layers:

1. :func:`drop_identities`: ``identity`` layers (Identity, Dropout, layout-preserving reshapes) are removed;
2. :func:`fold_affine_and_activations`: ``affine`` layers (BatchNormalization, per-channel Add/Sub/Mul/Div) fold
   into the preceding conv or fc, and ``act`` layers (Relu, LeakyRelu, Clip) fuse into the preceding conv, fc or add,
   when that layer has no activation yet and its output has no other reader (nor is a network output); those that
   cannot fuse become 1x1 depthwise convolutions (a standalone BatchNormalization then ReLU is one conv);
3. :func:`absorb_flatten`: a ``flatten`` feeding an fc disappears (the fc reads the ``(C, H, W)`` tensor; its
   weight is already in ONNX flatten order c, h, w); leftover ``flatten`` layers run on the host;
4. :func:`host_padded_maxpool`: processor limits become host layers: a padded max-pool whose input may be negative
   (the processor pads with zeros, which only equals ONNX's -inf padding on non-negative data);
5. :func:`assign_targets`: the remaining layers are marked for the processor; unused tensors are dropped.

For a processor with the nonlinear unit (``ProcessorConfig.has_nonlinear_unit``), ``fuse(graph,
nonlinear_unit=True)`` then runs :func:`fuse_lut_activations`: the host layers of Sigmoid, Tanh, HardSigmoid and
HardSwish, and SiLU written as ``Mul(x, Sigmoid(x))``, become the lookup-table activation
(:data:`~.graph.LUT_ACTIVATIONS`) of the conv or add producing their input, so they cost no pass over DDR; and
:func:`elementwise_mul` puts a ``Mul`` of two activations (same shape, or a ``[C, 1, 1]`` gate) on the processor;
:func:`lrn_on_processor` writes LRN as two of those multiplies around a 1x1 conv with a lookup-table activation.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
from onnx.helper import get_attribute_value as onnx_attr

from .graph import HW_OPS, Activation, Graph, Layer, TensorInfo

__all__ = ["fuse", "FUSION_PASSES", "drop_identities", "fold_affine_and_activations", "absorb_flatten",
           "host_padded_maxpool", "assign_targets", "fuse_lut_activations", "elementwise_mul",
           "lrn_on_processor"]


def _replace_input(graph: Graph, old: str, new: str) -> None:
    """Make every reader of ``old`` read ``new``, including the ONNX nodes a layer keeps for a host fallback."""
    for layer in graph.layers:
        if old not in layer.inputs:
            continue
        layer.inputs = [new if v == old else v for v in layer.inputs]
        renamed = []
        for node in layer.onnx_nodes:
            if old in node.input:
                node = copy.deepcopy(node)
                for i, v in enumerate(node.input):
                    if v == old:
                        node.input[i] = new
            renamed.append(node)
        layer.onnx_nodes = renamed


def _sole_reader(graph: Graph, tensor: str, layer: Layer) -> bool:
    """Whether ``layer`` is the only reader of ``tensor`` and the network does not return it."""
    return tensor not in graph.outputs and all(c is layer for c in graph.consumers(tensor))


def _merge(graph: Graph, producer: Layer, layer: Layer) -> None:
    """Absorb ``layer`` (the sole reader of ``producer``'s output) into ``producer``."""
    graph.tensors.pop(producer.output, None)
    producer.outputs = list(layer.outputs)
    producer.nodes += layer.nodes
    producer.onnx_nodes += layer.onnx_nodes
    graph.layers.remove(layer)


def _drop_identity(graph: Graph, layer: Layer) -> None:
    x, y = layer.inputs[0], layer.output
    if any(c.target == "host" for c in graph.consumers(y)):
        # host layers execute their ONNX nodes as written: they must see the tensor name and rank they expect
        _to_host(layer, "a reshape read by a host layer")
        return
    if y not in graph.outputs:
        producer = graph.producer(x)
        if producer is not None:
            producer.nodes += layer.nodes  # for the report: the removed node belongs to the producer
        _replace_input(graph, y, x)
        graph.layers.remove(layer)
        graph.tensors.pop(y, None)
        return
    producer = graph.producer(x)
    if producer is not None and _sole_reader(graph, x, layer) and producer.op != "host":
        # the network returns y: the producer writes y directly (reshaping is free in the (C, H, W) layout)
        producer.outputs = [y if v == x else v for v in producer.outputs]
        producer.nodes += layer.nodes
        producer.onnx_nodes += layer.onnx_nodes
        graph.tensors.pop(x, None)
        graph.layers.remove(layer)
        return
    _to_host(layer, "an identity between the network input/another output and a network output")


def _to_host(layer: Layer, reason: str) -> None:
    layer.op, layer.target, layer.host_reason = "host", "host", reason
    layer.attrs = {"op_type": "+".join(n.op_type for n in layer.onnx_nodes)}
    layer.act = Activation()
    layer.weight = layer.bias = None


def _fold_affine(producer: Layer, layer: Layer) -> None:
    scale = layer.weight.astype(np.float64)
    w = producer.weight.astype(np.float64)
    producer.weight = (w * scale.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
    producer.bias = (producer.bias.astype(np.float64) * scale + layer.bias).astype(np.float32)


def _depthwise(graph: Graph, layer: Layer, weight: np.ndarray, bias: np.ndarray) -> None:
    """Turn a per-channel layer into a 1x1 depthwise conv (or the host when its input is not a feature map)."""
    info = graph.tensors[layer.inputs[0]]
    if len(info.onnx_shape) not in (2, 4):
        _to_host(layer, f"a per-channel operation on a rank-{len(info.onnx_shape)} tensor")
        return
    channels = info.channels
    layer.op, layer.target = "conv", "hw"
    layer.weight = np.broadcast_to(np.asarray(weight, np.float32), (channels,)).reshape(channels, 1, 1, 1).copy()
    layer.bias = np.broadcast_to(np.asarray(bias, np.float32), (channels,)).copy()
    layer.attrs = {"kernel": (1, 1), "stride": (1, 1), "pads": (0, 0, 0, 0), "dilation": (1, 1), "group": channels}


def _nonnegative(graph: Graph, tensor: str) -> bool:
    """Whether ``tensor`` can never be negative (by the activation of the layers producing it)."""
    producer = graph.producer(tensor)
    if producer is None or producer.target != "hw":
        return False
    if producer.op in ("conv", "fc", "add"):
        act = producer.act
        return act.kind == "relu" or (act.kind == "clip" and act.lo >= 0)
    if producer.op in ("maxpool", "avgpool", "gap", "concat"):
        return all(_nonnegative(graph, v) for v in producer.inputs)
    return False


def drop_identities(g: Graph) -> None:
    """Pass 1: remove ``identity`` layers (Identity, Dropout, layout-preserving reshapes)."""
    for layer in [la for la in g.layers if la.op == "identity"]:
        _drop_identity(g, layer)


def fold_affine_and_activations(g: Graph) -> None:
    """Pass 2: fold ``affine`` layers into a preceding conv/fc and fuse ``act`` layers into a conv/fc/add; what
    cannot fuse becomes a 1x1 depthwise conv."""
    # topological order: when a layer is reached, everything before it is final (conv -> BN -> ReLU folds both)
    for layer in list(g.layers):
        if layer.op not in ("affine", "act"):
            continue
        producer = g.producer(layer.inputs[0])
        fusable = (producer is not None and producer.target == "hw" and producer.act.kind == "none"
                   and _sole_reader(g, layer.inputs[0], layer))
        if layer.op == "affine":
            if fusable and producer.op in ("conv", "fc"):
                _fold_affine(producer, layer)
                _merge(g, producer, layer)
            else:
                _depthwise(g, layer, layer.weight, layer.bias)
        elif fusable and producer.op in ("conv", "fc", "add"):
            producer.act = copy.copy(layer.act)
            _merge(g, producer, layer)
        else:
            _depthwise(g, layer, np.float32(1), np.float32(0))


def absorb_flatten(g: Graph) -> None:
    """Pass 3: an fc reads the ``(C, H, W)`` tensor its ``flatten`` flattens; leftover flattens go to the host."""
    for layer in [la for la in g.layers if la.op == "fc"]:
        producer = g.producer(layer.inputs[0])
        if producer is None or producer.op != "flatten":
            continue
        flat = layer.inputs[0]
        layer.inputs = [producer.inputs[0]]
        layer.nodes = producer.nodes + layer.nodes
        if not g.consumers(flat) and flat not in g.outputs:
            g.layers.remove(producer)
            g.tensors.pop(flat, None)
    for layer in g.layers:
        if layer.op == "flatten":
            _to_host(layer, "a flatten that does not feed a fully connected layer")


def host_padded_maxpool(g: Graph) -> None:
    """Pass 4: a padded max-pool whose input may be negative runs on the host (the processor pads with zeros)."""
    for layer in g.layers:
        if layer.op == "maxpool" and any(layer.attrs["pads"]) and not _nonnegative(g, layer.inputs[0]):
            _to_host(layer, "max pooling with padding on an input that may be negative (the processor pads with "
                            "zeros, exact only after ReLU/ReLU6/Clip(lo >= 0))")


def assign_targets(g: Graph) -> None:
    """Pass 5: processor layers get ``target == "hw"``; unused tensors and initializers are dropped."""
    for layer in g.layers:
        if layer.op in HW_OPS:
            layer.target, layer.host_reason, layer.onnx_nodes = "hw", "", []
        elif layer.op != "host":
            raise AssertionError(f"layer {layer.name!r}: front-end kind {layer.op!r} survived fusion")
    names = set(g.inputs) | set(g.outputs) | {v for la in g.layers for v in la.inputs + la.outputs}
    g.tensors = {k: v for k, v in g.tensors.items() if k in names}
    used = {v for la in g.layers for n in la.onnx_nodes for v in n.input}
    g.initializers = {k: v for k, v in g.initializers.items() if k in used}


#: The fusion passes, in order; each rewrites the graph in place.
FUSION_PASSES: tuple[Callable[[Graph], None], ...] = (
    drop_identities, fold_affine_and_activations, absorb_flatten, host_padded_maxpool, assign_targets)


def _host_op(layer: Layer | None) -> str | None:
    """The ONNX operator of a one-node host layer."""
    if layer is None or layer.op != "host" or len(layer.onnx_nodes) != 1:
        return None
    return layer.onnx_nodes[0].op_type


def _lut_activation(layer: Layer) -> Activation | None:
    """The lookup-table activation a one-node host layer computes, if any."""
    op = _host_op(layer)
    if op == "Sigmoid":
        return Activation("sigmoid")
    if op == "Tanh":
        return Activation("tanh")
    if op == "HardSwish":
        return Activation("hard_swish")
    if op == "HardSigmoid":
        attrs = {a.name: onnx_attr(a) for a in layer.onnx_nodes[0].attribute}
        return Activation("hard_sigmoid", alpha=float(attrs.get("alpha", 0.2)), beta=float(attrs.get("beta", 0.5)))
    return None


def fuse_lut_activations(g: Graph) -> None:
    """Pass for the nonlinear unit: Sigmoid, Tanh, HardSigmoid, HardSwish and SiLU (``Mul(x, Sigmoid(x))``) host
    layers become the activation of the conv or add producing their input (which has no activation yet, and whose
    output nothing else reads)."""
    for layer in list(g.layers):
        if layer not in g.layers:
            continue
        act = _lut_activation(layer)
        if act is None:
            continue
        x = layer.inputs[0]
        producer = g.producer(x)
        if producer is None or producer.op not in ("conv", "add", "mul") or producer.target != "hw" \
                or producer.act.kind != "none" or x in g.outputs:
            continue
        readers = g.consumers(x)
        # SiLU: x read by this Sigmoid and by one Mul(x, sigmoid(x)), the sigmoid read only by that Mul
        gate = layer.output
        mul = next((r for r in readers if r is not layer), None)
        if readers == [layer]:
            producer.act = act
            _merge(g, producer, layer)
        elif (act.kind == "sigmoid" and len(readers) == 2 and _host_op(mul) == "Mul"
                and sorted(mul.inputs) == sorted([x, gate]) and g.consumers(gate) == [mul]
                and gate not in g.outputs):
            producer.act = Activation("silu")
            _merge(g, producer, layer)      # producer now writes the gate tensor...
            _merge(g, producer, mul)        # ...and then the Mul's output
            g.tensors.pop(x, None)
        else:
            continue
        producer.onnx_nodes = []  # a processor layer keeps no ONNX nodes (assign_targets)


def elementwise_mul(g: Graph) -> None:
    """Pass for the nonlinear unit's elementwise multiply: a host ``Mul`` of two activations of the same shape, or of
    a ``[C, H, W]`` feature map and a ``[C, 1, 1]`` gate (squeeze-excitation), becomes a processor ``mul`` layer (the
    feature map first)."""
    for layer in g.layers:
        if _host_op(layer) != "Mul" or len(layer.inputs) != 2 or len(layer.outputs) != 1:
            continue
        a, b = layer.inputs
        if any(v not in g.tensors or v in g.initializers for v in (a, b)):
            continue
        sa, sb = g.tensors[a].shape, g.tensors[b].shape
        if sa != sb and sa[1:] == (1, 1) and sb[0] == sa[0]:
            a, b, sa, sb = b, a, sb, sa
        out = g.tensors[layer.output].shape
        if out != sa or not (sb == sa or sb == (sa[0], 1, 1)):
            continue
        if len(g.tensors[a].onnx_shape) != 4 or len(g.tensors[b].onnx_shape) != 4:
            continue
        layer.op, layer.inputs, layer.target, layer.host_reason, layer.onnx_nodes = "mul", [a, b], "hw", "", []
        layer.attrs = {}


def lrn_on_processor(g: Graph) -> None:
    """Pass for the nonlinear unit: a host LRN (across channels) of a feature map becomes three processor layers,
    ``y = x * (k + alpha / size * sum_window x**2) ** -beta``: ``mul(x, x)``, a 1x1 conv whose banded ``[C, C]`` weight
    of ones sums each channel's window of squares, with the ``lrn_scale`` lookup-table activation, and ``mul`` of
    ``x`` by that factor."""
    for layer in list(g.layers):
        if _host_op(layer) != "LRN" or len(g.tensors[layer.inputs[0]].onnx_shape) != 4:
            continue
        attrs = {a.name: onnx_attr(a) for a in layer.onnx_nodes[0].attribute}
        size = int(attrs["size"])
        alpha, beta, k = (float(attrs.get(n, d)) for n, d in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
        x, y = layer.inputs[0], layer.output
        info = g.tensors[x]
        c = info.channels
        lo, hi = (size - 1) // 2, (size - 1) - (size - 1) // 2   # ONNX: [c - floor((size-1)/2), c + ceil(...)]
        band = np.zeros((c, c, 1, 1), np.float32)
        for ch in range(c):
            band[ch, max(0, ch - lo):min(c, ch + hi + 1)] = 1.0
        sq, den = f"{y}/lrn_square", f"{y}/lrn_scale"
        for name in (sq, den):
            g.tensors[name] = TensorInfo(name, info.shape, info.onnx_shape)
        index = g.layers.index(layer)
        g.layers[index:index + 1] = [
            Layer(name=f"{layer.name}/square", op="mul", inputs=[x, x], outputs=[sq], nodes=list(layer.nodes)),
            Layer(name=f"{layer.name}/window_sum", op="conv", inputs=[sq], outputs=[den], nodes=list(layer.nodes),
                  attrs={"kernel": (1, 1), "stride": (1, 1), "pads": (0, 0, 0, 0), "dilation": (1, 1), "group": 1},
                  act=Activation("lrn_scale", alpha=alpha / size, beta=beta, k=k), weight=band,
                  bias=np.zeros(c, np.float32)),
            Layer(name=layer.name, op="mul", inputs=[x, den], outputs=[y], nodes=list(layer.nodes)),
        ]


def fuse(graph: Graph, *, nonlinear_unit: bool = False) -> Graph:
    """Fuse the front end's graph into processor and host layers: :data:`FUSION_PASSES` on a copy.

    Parameters
    ----------
    graph : Graph
        The front end's graph (:func:`~.frontend.load_onnx` with ``fuse=False``); calling ``fuse`` on an already
        fused graph changes nothing.
    nonlinear_unit : bool
        The processor has the nonlinear unit (``ProcessorConfig.has_nonlinear_unit``): also run
        :func:`fuse_lut_activations`.

    Returns
    -------
    Graph
        A new graph whose layers are all of :data:`~.graph.HW_OPS` (``target == "hw"``) or ``"host"``.
    """
    g = copy.deepcopy(graph)
    for fusion_pass in FUSION_PASSES:
        fusion_pass(g)
    if nonlinear_unit:
        fuse_lut_activations(g)   # first: SiLU is a Mul of the host Sigmoid's output
        elementwise_mul(g)
        lrn_on_processor(g)
        fuse_lut_activations(g)   # then activations after the new mul layers
    return g
