"""Small ONNX test networks covering every operator of the front end (seeded random weights).

Each builder returns ``(model, input_shape)`` with ``input_shape`` including the batch axis 1. Weights follow He
initialisation so activations keep a similar range through the network; BatchNormalization statistics are random
but plausible. :data:`ALL_NETS` maps a name to each builder.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["ALL_NETS", "NetBuilder"]


class NetBuilder:
    """Builds an ONNX graph node by node; every helper returns the name of the node's output.

    Parameters
    ----------
    name : str
        Graph name.
    input_shape : tuple of int
        Shape of the network input ``"input"`` (batch first; ``"N"`` makes the batch axis symbolic).
    seed : int
        Seed of the random weights.
    """

    def __init__(self, name: str, input_shape: tuple, seed: int = 0):
        self.name = name
        self.input_shape = input_shape
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0
        self.unnamed = False  #: leave node names empty (the front end must invent stable ones)

    def _fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def const(self, value: np.ndarray, prefix: str = "c") -> str:
        """Add an initializer; returns its name."""
        name = self._fresh(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], n_out: int = 1, **attrs) -> str:
        """Add a node; returns its (first) output."""
        name = self._fresh(op.lower())
        outs = [f"{name}_out"] + [f"{name}_out{i}" for i in range(1, n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name="" if self.unnamed else name, **attrs))
        return outs[0]

    def conv(self, x: str, cin: int, cout: int, k: int, *, stride: int = 1, pad: int | list[int] | None = None,
             dilation: int = 1, group: int = 1, bias: bool = True, auto_pad: str | None = None) -> str:
        fan_in = cin // group * k * k
        w = self.rng.normal(0, np.sqrt(2.0 / fan_in), (cout, cin // group, k, k)).astype(np.float32)
        inputs = [x, self.const(w, "w")]
        if bias:
            inputs.append(self.const(self.rng.normal(0, 0.1, cout).astype(np.float32), "b"))
        attrs: dict = {"kernel_shape": [k, k], "strides": [stride, stride], "dilations": [dilation, dilation],
                       "group": group}
        if auto_pad is not None:
            attrs["auto_pad"] = auto_pad
        else:
            p = (k - 1) * dilation // 2 if pad is None else pad
            attrs["pads"] = [p] * 4 if isinstance(p, int) else list(p)
        return self.node("Conv", inputs, **attrs)

    def bn(self, x: str, c: int, epsilon: float = 1e-5) -> str:
        r = self.rng
        params = [r.uniform(0.5, 1.5, c), r.normal(0, 0.1, c), r.normal(0, 0.2, c), r.uniform(0.5, 1.5, c)]
        return self.node("BatchNormalization", [x] + [self.const(p.astype(np.float32), "bn") for p in params],
                         epsilon=epsilon)

    def relu(self, x: str) -> str:
        return self.node("Relu", [x])

    def leaky(self, x: str, alpha: float = 0.1) -> str:
        return self.node("LeakyRelu", [x], alpha=alpha)

    def clip(self, x: str, lo: float | None = 0.0, hi: float | None = 6.0) -> str:
        inputs = [x, "" if lo is None else self.const(np.float32(lo), "min"),
                  "" if hi is None else self.const(np.float32(hi), "max")]
        while inputs[-1] == "":
            inputs.pop()
        return self.node("Clip", inputs)

    def maxpool(self, x: str, k: int, stride: int, pad: int = 0, ceil_mode: int = 0) -> str:
        return self.node("MaxPool", [x], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4,
                         ceil_mode=ceil_mode)

    def avgpool(self, x: str, k: int, stride: int, pad: int = 0, count_include_pad: int = 0) -> str:
        return self.node("AveragePool", [x], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4,
                         count_include_pad=count_include_pad)

    def gemm(self, x: str, fan_in: int, out: int, *, trans_b: int = 1, alpha: float = 1.0, beta: float = 1.0) -> str:
        w = self.rng.normal(0, np.sqrt(2.0 / fan_in), (out, fan_in)).astype(np.float32)
        b = self.rng.normal(0, 0.1, out).astype(np.float32)
        return self.node("Gemm", [x, self.const(w if trans_b else w.T.copy(), "fcw"), self.const(b, "fcb")],
                         transB=trans_b, alpha=alpha, beta=beta)

    def model(self, outputs: list[str], opset: int = 17, output_shapes: dict | None = None) -> onnx.ModelProto:
        """The finished model (checked, with inferred output shapes unless given in ``output_shapes``)."""
        shape = list(self.input_shape)
        graph = helper.make_graph(self.nodes, self.name, [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                          shape)],
                                  [helper.make_empty_tensor_value_info(o) for o in outputs], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="dlproc-tests")
        inferred = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(model, data_prop=True).graph.value_info}
        del model.graph.output[:]
        model.graph.output.extend(helper.make_tensor_value_info(o, TensorProto.FLOAT, output_shapes[o])
                                  if output_shapes and o in output_shapes else inferred[o] for o in outputs)
        model.ir_version = min(model.ir_version, 8)
        onnx.checker.check_model(model)
        return model


Net = tuple[onnx.ModelProto, tuple[int, ...]]


def conv_kernels() -> Net:
    """Kernels 1, 3, 5, 7, 11, strides 1 and 2, odd sizes (15x17) and channel counts 3, 5, 13, 20."""
    b = NetBuilder("conv_kernels", (1, 3, 15, 17), seed=1)
    x = b.relu(b.conv("input", 3, 5, 1))
    x = b.leaky(b.conv(x, 5, 13, 3, stride=2))
    x = b.clip(b.conv(x, 13, 20, 5))
    x = b.relu(b.conv(x, 20, 13, 7))
    x = b.conv(x, 13, 5, 11, stride=2)
    return b.model([x]), (1, 3, 15, 17)


def conv_padding() -> Net:
    """Dilation, auto_pad SAME_UPPER / SAME_LOWER / VALID, asymmetric pads, a conv without bias."""
    b = NetBuilder("conv_padding", (1, 5, 15, 17), seed=2)
    x = b.relu(b.conv("input", 5, 13, 3, dilation=2))
    x = b.relu(b.conv(x, 13, 13, 3, stride=2, auto_pad="SAME_UPPER"))
    x = b.relu(b.conv(x, 13, 20, 4, auto_pad="SAME_LOWER", bias=False))
    x = b.relu(b.conv(x, 20, 8, 3, auto_pad="VALID"))
    x = b.conv(x, 8, 5, 3, pad=[0, 1, 2, 1])
    return b.model([x], opset=13), (1, 5, 15, 17)


def grouped_depthwise() -> Net:
    """Grouped conv, depthwise convs (multiplier 1 and 2) with BN and ReLU6, MobileNet style."""
    b = NetBuilder("grouped_depthwise", (1, 20, 16, 16), seed=3)
    x = b.relu(b.bn(b.conv("input", 20, 20, 3, group=4, bias=False), 20))
    x = b.clip(b.bn(b.conv(x, 20, 20, 3, stride=2, group=20, bias=False), 20))
    x = b.bn(b.conv(x, 20, 13, 1, bias=False), 13)
    x = b.leaky(b.conv(x, 13, 26, 3, group=13), 0.2)
    return b.model([x]), (1, 20, 16, 16)


def bn_fold() -> Net:
    """BN after convs with and without bias, a standalone BN + ReLU, a BN after an activation, input normalisation
    with Sub/Div (become 1x1 depthwise convs)."""
    b = NetBuilder("bn_fold", (1, 3, 16, 16), seed=4)
    mean = b.const(np.array([0.4, 0.5, 0.6], np.float32).reshape(1, 3, 1, 1), "mean")
    std = b.const(np.array([0.2, 0.25, 0.3], np.float32).reshape(1, 3, 1, 1), "std")
    x = b.node("Div", [b.node("Sub", ["input", mean]), std])
    x = b.relu(b.bn(b.conv(x, 3, 13, 3, bias=False), 13))
    x = b.bn(b.conv(x, 13, 13, 3), 13)
    x = b.maxpool(x, 2, 2)
    x = b.relu(b.bn(x, 13))
    x = b.bn(b.relu(b.conv(x, 13, 5, 3)), 5)
    return b.model([x]), (1, 3, 16, 16)


def activations() -> Net:
    """ReLU, LeakyReLU, ReLU6, Clip with a negative lower bound and with only a max, an activation after a pool."""
    b = NetBuilder("activations", (1, 5, 15, 17), seed=5)
    x = b.leaky(b.conv("input", 5, 13, 3), 0.01)
    x = b.clip(b.conv(x, 13, 13, 3), -1.0, 1.0)
    x = b.clip(b.conv(x, 13, 13, 3), None, 2.0)
    x = b.maxpool(b.conv(x, 13, 13, 3), 2, 2)
    x = b.relu(x)
    x = b.clip(b.conv(x, 13, 20, 3), 0.0, 6.0)
    return b.model([x], opset=11), (1, 5, 15, 17)


def pooling() -> Net:
    """Max pooling with padding (processor after ReLU, host otherwise), ceil_mode, average pooling with
    count_include_pad 1 / without padding (processor) / count_include_pad 0 with padding (host), global pooling."""
    b = NetBuilder("pooling", (1, 5, 31, 33), seed=6)
    x = b.maxpool(b.relu(b.conv("input", 5, 13, 3)), 3, 2, pad=1)
    x = b.maxpool(b.conv(x, 13, 13, 3), 3, 2, pad=1)
    x = b.maxpool(b.relu(b.conv(x, 13, 20, 3)), 2, 2, ceil_mode=1)
    x = b.avgpool(x, 3, 1, pad=1, count_include_pad=1)
    x = b.avgpool(x, 2, 2)
    x = b.avgpool(b.conv(x, 20, 20, 3), 3, 1, pad=1, count_include_pad=0)
    x = b.node("GlobalAveragePool", [x])
    return b.model([x]), (1, 5, 31, 33)


def residual() -> Net:
    """ResNet basic blocks: conv-BN-ReLU, conv-BN, 1x1 shortcut (stride 1 and 2), add, ReLU; then GAP, flatten, fc."""
    b = NetBuilder("residual", (1, 13, 15, 17), seed=7)
    x = "input"
    for cin, cout, stride in ((13, 20, 1), (20, 20, 1), (20, 32, 2)):
        y = b.relu(b.bn(b.conv(x, cin, cout, 3, stride=stride, bias=False), cout))
        y = b.bn(b.conv(y, cout, cout, 3, bias=False), cout)
        short = x if (cin == cout and stride == 1) else b.bn(b.conv(x, cin, cout, 1, stride=stride, bias=False), cout)
        x = b.relu(b.node("Add", [y, short]))
    x = b.node("Flatten", [b.node("GlobalAveragePool", [x])], axis=1)
    x = b.gemm(x, 32, 10)
    return b.model([x]), (1, 13, 15, 17)


def concat() -> Net:
    """Inception-style channel concatenation (conv branches and a padded max-pool branch), a concat of concats,
    concatenated leaky and plain branches."""
    b = NetBuilder("concat", (1, 8, 15, 17), seed=8)
    stem = b.relu(b.conv("input", 8, 8, 3))
    b1 = b.relu(b.conv(stem, 8, 5, 1))
    b2 = b.relu(b.conv(stem, 8, 13, 3))
    b3 = b.maxpool(stem, 3, 1, pad=1)
    x = b.node("Concat", [b1, b2, b3], axis=1)
    x = b.maxpool(x, 2, 2)
    y1 = b.leaky(b.conv(x, 26, 3, 3))
    y2 = b.conv(x, 26, 5, 1)
    x = b.node("Concat", [y1, y2, x], axis=-3)
    x = b.conv(x, 34, 13, 3)
    return b.model([x]), (1, 8, 15, 17)


def classifier() -> Net:
    """AlexNet-style: conv, ReLU, max-pool, Flatten, Gemm (transB 1), ReLU, Dropout, Gemm (transB 0, alpha, beta),
    Softmax."""
    b = NetBuilder("classifier", (1, 3, 32, 32), seed=9)
    x = b.maxpool(b.relu(b.conv("input", 3, 13, 5, stride=2)), 2, 2)
    x = b.maxpool(b.relu(b.conv(x, 13, 20, 3)), 2, 2)
    x = b.node("Flatten", [x], axis=1)
    x = b.node("Dropout", [b.relu(b.gemm(x, 20 * 4 * 4, 32)), b.const(np.float32(0.3), "ratio")], n_out=2)
    x = b.gemm(x, 32, 10, trans_b=0, alpha=0.5, beta=2.0)
    x = b.node("Softmax", [x], axis=1)
    return b.model([x], opset=12), (1, 3, 32, 32)


def matmul_add() -> Net:
    """PyTorch-style flatten (Shape, Gather, Unsqueeze, Concat, Reshape folded to a constant), MatMul + Add as fc
    with bias, Identity, Softmax at the end; symbolic batch axis."""
    b = NetBuilder("matmul_add", ("N", 5, 15, 17), seed=10)
    x = b.relu(b.conv("input", 5, 20, 3, stride=2))
    x = b.node("GlobalAveragePool", [x])
    batch = b.node("Gather", [b.node("Shape", [x]), b.const(np.array(0, np.int64), "idx")], axis=0)
    shape = b.node("Concat", [b.node("Unsqueeze", [batch, b.const(np.array([0], np.int64), "ax")]),
                              b.const(np.array([-1], np.int64), "m1")], axis=0)
    x = b.node("Identity", [b.node("Reshape", [x, shape])])
    w1 = b.rng.normal(0, np.sqrt(2 / 20), (20, 13)).astype(np.float32)
    x = b.relu(b.node("Add", [b.node("MatMul", [x, b.const(w1, "mw")]),
                              b.const(b.rng.normal(0, 0.1, 13).astype(np.float32), "mb")]))
    w2 = b.rng.normal(0, np.sqrt(2 / 13), (13, 7)).astype(np.float32)
    x = b.node("Add", [b.const(b.rng.normal(0, 0.1, (1, 7)).astype(np.float32), "mb"),
                       b.node("MatMul", [x, b.const(w2, "mw")])])
    x = b.node("Softmax", [x], axis=-1)
    return b.model([x], opset=13, output_shapes={x: ["N", 7]}), (1, 5, 15, 17)


def large_conv() -> Net:
    """64-channel 3x3 convolutions on 32x32: needs tiling on small buffers."""
    b = NetBuilder("large_conv", (1, 64, 32, 32), seed=11)
    x = b.relu(b.conv("input", 64, 64, 3))
    x = b.relu(b.conv(x, 64, 64, 3))
    x = b.conv(x, 64, 32, 3, stride=2)
    return b.model([x]), (1, 64, 32, 32)


def host_ops() -> Net:
    """Operators the processor does not implement (LRN, Transpose, Sigmoid) between processor layers; an
    intermediate tensor that is also a network output."""
    b = NetBuilder("host_ops", (1, 5, 15, 17), seed=12)
    x = b.relu(b.conv("input", 5, 13, 3))
    x = b.node("LRN", [x], size=3, alpha=1e-4, beta=0.75, bias=1.0)
    mid = b.relu(b.conv(x, 13, 13, 3))
    x = b.node("Transpose", [mid], perm=[0, 1, 3, 2])
    x = b.conv(x, 13, 8, 3)
    x = b.node("Sigmoid", [x])
    return b.model([mid, x], opset=21), (1, 5, 15, 17)


def mlp() -> Net:
    """A vector network: [1, 20] input, Gemm layers with ReLU, LeakyReLU and ReLU6, a vector add and concat."""
    b = NetBuilder("mlp", (1, 20), seed=13)
    h = b.relu(b.gemm("input", 20, 32))
    g = b.leaky(b.gemm(h, 32, 32))
    x = b.node("Add", [h, g])
    x = b.node("Concat", [x, b.clip(b.gemm(x, 32, 5))], axis=1)
    x = b.gemm(x, 37, 10)
    return b.model([x], opset=11), (1, 20)


def unnamed_globalmax() -> Net:
    """Unnamed nodes (the front end invents names), symbolic batch, GlobalMaxPool, Squeeze before an fc."""
    b = NetBuilder("unnamed_globalmax", ("batch", 3, 15, 17), seed=14)
    b.unnamed = True
    x = b.relu(b.conv("input", 3, 13, 3, stride=2))
    x = b.node("GlobalMaxPool", [b.conv(x, 13, 20, 3)])
    x = b.node("Squeeze", [x, b.const(np.array([2, 3], np.int64), "axes")])
    x = b.gemm(x, 20, 4)
    return b.model([x], opset=21), (1, 3, 15, 17)


def bn_opset13() -> Net:
    """Opset 13 (one-output BatchNormalization selects inference by its output count): a residual block with BN
    folded into its convs, then BNs the fusion cannot fold -- after the Add, after a ReLU and after a MaxPool."""
    b = NetBuilder("bn_opset13", (1, 8, 12, 12), seed=15)
    y = b.relu(b.bn(b.conv("input", 8, 8, 3, bias=False), 8))
    y = b.bn(b.conv(y, 8, 8, 3, bias=False), 8)
    x = b.bn(b.node("Add", [y, "input"]), 8)
    x = b.bn(b.relu(x), 8)
    x = b.bn(b.maxpool(b.conv(x, 8, 13, 3), 2, 2), 13)
    x = b.node("Flatten", [b.node("GlobalAveragePool", [b.relu(x)])], axis=1)
    return b.model([b.gemm(x, 13, 10)], opset=13), (1, 8, 12, 12)


def loop_orders() -> Net:
    """Conv layers for both loop orders of the code generator (``plan_conv``): many output-channel blocks on one
    input (input-stationary), strided 1x1 convs (stride 2 and 3: only the rows used are loaded), 5x5 kernels
    whose weights are split into chunks (in both orders on small_int8)."""
    b = NetBuilder("loop_orders", (1, 13, 15, 17), seed=16)
    x = b.relu(b.conv("input", 13, 40, 3))
    y = b.relu(b.conv(x, 40, 24, 1, stride=2))
    w = b.conv(x, 40, 24, 5, stride=2, pad=2)
    x = b.relu(b.node("Add", [y, w]))
    x = b.relu(b.conv(x, 24, 40, 5))
    x = b.conv(x, 40, 16, 1, stride=3)
    return b.model([x]), (1, 13, 15, 17)


ALL_NETS: dict[str, Callable[[], Net]] = {f.__name__: f for f in (
    conv_kernels, conv_padding, grouped_depthwise, bn_fold, activations, pooling, residual, concat, classifier,
    matmul_add, large_conv, host_ops, mlp, unnamed_globalmax, bn_opset13, loop_orders)}
