"""Small ONNX networks in the style of modern edge networks (seeded random weights): MobileNet v3 blocks
(HardSwish, HardSigmoid, squeeze-excitation) and EfficientNet blocks (SiLU as Sigmoid * x, squeeze-excitation with
a Sigmoid gate). Builders return ``(model, input_shape)`` like :mod:`nets`."""

from __future__ import annotations

from collections.abc import Callable

from nets import Net, NetBuilder

__all__ = ["EDGE_NETS"]


def _se(b: NetBuilder, x: str, c: int, squeeze: int, gate: str) -> str:
    """Squeeze-excitation: GlobalAveragePool -> Conv -> ReLU -> Conv -> gate -> Mul with the feature map."""
    s = b.node("GlobalAveragePool", [x])
    s = b.relu(b.conv(s, c, squeeze, 1, pad=0))
    s = b.conv(s, squeeze, c, 1, pad=0)
    s = b.node(gate, [s]) if gate == "Sigmoid" else b.node(gate, [s], alpha=1 / 6, beta=0.5)
    return b.node("Mul", [x, s])


def mobilenet_v3_block() -> Net:
    """Stem conv + HardSwish, an inverted residual (1x1 expand + HardSwish, depthwise 3x3 + HardSwish,
    squeeze-excitation with a HardSigmoid gate, 1x1 project, residual add), a HardSwish head and a classifier."""
    b = NetBuilder("mobilenet_v3_block", (1, 3, 16, 16), seed=31)
    x = b.node("HardSwish", [b.bn(b.conv("input", 3, 8, 3, stride=2, bias=False), 8)])
    y = b.node("HardSwish", [b.bn(b.conv(x, 8, 16, 1, pad=0, bias=False), 16)])
    y = b.node("HardSwish", [b.bn(b.conv(y, 16, 16, 3, group=16, bias=False), 16)])
    y = _se(b, y, 16, 8, "HardSigmoid")
    y = b.bn(b.conv(y, 16, 8, 1, pad=0, bias=False), 8)
    x = b.node("Add", [x, y])
    x = b.node("HardSwish", [b.conv(x, 8, 24, 1, pad=0)])
    x = b.node("Flatten", [b.node("GlobalAveragePool", [x])], axis=1)
    return b.model([b.gemm(x, 24, 10)], opset=17), (1, 3, 16, 16)


def efficientnet_block() -> Net:
    """Stem conv + SiLU (Sigmoid, Mul), an MBConv block (1x1 expand + SiLU, depthwise 3x3 + SiLU,
    squeeze-excitation with a SiLU squeeze and a Sigmoid gate, 1x1 project, residual add) and a classifier."""
    b = NetBuilder("efficientnet_block", (1, 3, 16, 16), seed=32)

    def silu(v: str) -> str:
        return b.node("Mul", [v, b.node("Sigmoid", [v])])

    x = silu(b.bn(b.conv("input", 3, 8, 3, stride=2, bias=False), 8))
    y = silu(b.bn(b.conv(x, 8, 16, 1, pad=0, bias=False), 16))
    y = silu(b.bn(b.conv(y, 16, 16, 3, group=16, bias=False), 16))
    s = b.node("GlobalAveragePool", [y])
    s = silu(b.conv(s, 16, 4, 1, pad=0))
    y = b.node("Mul", [y, b.node("Sigmoid", [b.conv(s, 4, 16, 1, pad=0)])])
    y = b.bn(b.conv(y, 16, 8, 1, pad=0, bias=False), 8)
    x = b.node("Add", [x, y])
    x = b.node("Flatten", [b.node("GlobalAveragePool", [silu(b.conv(x, 8, 24, 1, pad=0))])], axis=1)
    return b.model([b.gemm(x, 24, 10)], opset=17), (1, 3, 16, 16)


EDGE_NETS: dict[str, Callable[[], Net]] = {f.__name__: f for f in (mobilenet_v3_block, efficientnet_block)}


def lut_activations() -> Net:
    """Every activation of the nonlinear unit after a conv or an add: Sigmoid, Tanh, HardSigmoid (non-default
    alpha/beta), HardSwish, SiLU (Mul(x, Sigmoid(x)), operands in either order); a Sigmoid whose input another layer
    also reads (not fusable) and a network output that is a conv's Tanh."""
    b = NetBuilder("lut_activations", (1, 5, 11, 13), seed=33)
    x = b.node("Sigmoid", [b.conv("input", 5, 8, 3)])
    x = b.node("Tanh", [b.conv(x, 8, 8, 3)])
    x = b.node("HardSigmoid", [b.conv(x, 8, 12, 3)], alpha=0.25, beta=0.4)
    y = b.node("HardSwish", [b.conv(x, 12, 12, 1, pad=0)])
    s = b.node("Add", [x, y])
    s = b.node("Mul", [b.node("Sigmoid", [s]), s])
    z = b.conv(s, 12, 6, 3)
    z = b.node("Mul", [z, b.node("Sigmoid", [z])])
    shared = b.conv(z, 6, 6, 1, pad=0)
    t = b.node("Add", [b.node("Sigmoid", [shared]), shared])
    out = b.node("Tanh", [b.conv(t, 6, 4, 3)])
    return b.model([out], opset=17), (1, 5, 11, 13)


def elementwise_mul() -> Net:
    """Elementwise Mul on the processor: two different same-shape maps (10 channels, not a multiple of the channel
    block), a [C, 1, 1] gate on either side of the Mul, a ReLU after a Mul (a 1x1 depthwise conv: the pass runs after
    the activation fusion), a gate over a 1x1 map, and a Mul of a
    tensor with itself."""
    b = NetBuilder("elementwise_mul", (1, 3, 18, 21), seed=34)
    x = b.relu(b.conv("input", 3, 10, 3))
    y = b.conv(x, 10, 10, 3)
    m = b.relu(b.node("Mul", [x, y]))
    g = b.node("Sigmoid", [b.conv(b.node("GlobalAveragePool", [m]), 10, 10, 1, pad=0)])
    m = b.node("Mul", [g, m])
    p = b.node("GlobalAveragePool", [b.conv(m, 10, 6, 3, stride=2)])
    p = b.node("Mul", [p, b.node("HardSigmoid", [b.conv(p, 6, 6, 1, pad=0)])])
    p = b.node("Mul", [p, p])
    return b.model([b.node("Flatten", [p], axis=1)], opset=17), (1, 3, 18, 21)


def lrn() -> Net:
    """LRN across channels: GoogLeNet's parameters (size 5, alpha 1e-4, beta 0.75, bias 1) after a ReLU conv, and a
    strong one (size 3, alpha 2, beta 0.75, bias 2: the factor varies over the data) on 13 channels."""
    b = NetBuilder("lrn", (1, 3, 15, 17), seed=35)
    x = b.relu(b.conv("input", 3, 16, 3))
    x = b.node("LRN", [x], size=5, alpha=1e-4, beta=0.75, bias=1.0)
    x = b.relu(b.conv(x, 16, 13, 3, stride=2))
    x = b.node("LRN", [x], size=3, alpha=2.0, beta=0.75, bias=2.0)
    return b.model([b.conv(x, 13, 8, 3)], opset=17), (1, 3, 15, 17)


EDGE_NETS["lut_activations"] = lut_activations
EDGE_NETS["lrn"] = lrn
EDGE_NETS["elementwise_mul"] = elementwise_mul
