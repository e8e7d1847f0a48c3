"""DDR memory planning: where every activation tensor lives and how it is laid out.

Every activation tensor is stored blocked, ``[C/B][H + 2P][W + 2P][B]`` elements (``B`` = channel block =
the conv array's input lanes), with a zero halo of ``P`` pixels that the consumers' convolution and pooling
padding reads. The halo is written once (the DDR image starts zeroed) and producers only write the interior,
so the hardware never handles padding. Channel concatenation is free: the inputs of a concat are views into the
concat's region at a channel-block offset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlproc.compiler.graph import Graph
from dlproc.processor.config import ProcessorConfig

__all__ = ["TensorView", "Region", "align", "plan_activations", "to_blocked", "from_blocked", "span_bytes",
           "REGION_ALIGN"]

#: Alignment of every DDR region (bytes): a multiple of any AXI beat and of the 32-byte instruction.
REGION_ALIGN = 256


def align(value: int, to: int = REGION_ALIGN) -> int:
    """Round ``value`` up to a multiple of ``to``."""
    return -(-value // to) * to


@dataclass(frozen=True)
class Region:
    """A named range of the DDR window (for the memory map report)."""

    name: str
    kind: str  # "instructions" | "parameters" | "input" | "output" | "activation"
    offset: int
    size: int


@dataclass(frozen=True)
class TensorView:
    """Where a ``(C, H, W)`` tensor lives in DDR.

    Attributes
    ----------
    name : str
        Tensor name.
    region : str
        Name of the region holding it (a concat's inputs share the concat's region).
    offset : int
        Byte offset of the region (channel block 0, halo corner) in the DDR window.
    channels, height, width : int
        The tensor's shape.
    halo : int
        Zero border in pixels on every side.
    block_offset : int
        First channel block of this tensor inside the region.
    block : int
        Channels per block.
    element_bytes : int
        Bytes per element.
    """

    name: str
    region: str
    offset: int
    channels: int
    height: int
    width: int
    halo: int
    block_offset: int
    block: int
    element_bytes: int

    @property
    def blocks(self) -> int:
        """Channel blocks of this tensor."""
        return -(-self.channels // self.block)

    @property
    def pixel_bytes(self) -> int:
        return self.block * self.element_bytes

    @property
    def row_stride(self) -> int:
        """Bytes between vertically adjacent pixels."""
        return (self.width + 2 * self.halo) * self.pixel_bytes

    @property
    def plane_stride(self) -> int:
        """Bytes between channel blocks."""
        return (self.height + 2 * self.halo) * self.row_stride

    def addr(self, block: int, y: int, x: int) -> int:
        """Byte offset of pixel ``(y, x)`` (interior coordinates; may be negative into the halo) of a block."""
        p = self.halo
        return (self.offset + (self.block_offset + block) * self.plane_stride + (y + p) * self.row_stride
                + (x + p) * self.pixel_bytes)

    def region_bytes(self, region_blocks: int) -> int:
        return region_blocks * self.plane_stride

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("name", "region", "offset", "channels", "height", "width", "halo",
                                               "block_offset", "block", "element_bytes")}


def _pad_need(layer) -> int:
    if layer.target != "hw" or layer.op not in ("conv", "maxpool", "avgpool"):
        return 0
    return max(layer.attrs.get("pads", (0, 0, 0, 0)))


def plan_activations(graph: Graph, config: ProcessorConfig, start: int = 0) -> tuple[dict[str, TensorView],
                                                                                    list[Region], int]:
    """Place every activation tensor in DDR.

    Parameters
    ----------
    graph : Graph
        The quantized graph.
    config : ProcessorConfig
        Processor configuration (channel block, element size).
    start : int
        First free byte offset.

    Returns
    -------
    views : dict of str to TensorView
    regions : list of Region
    end : int
        First free byte offset after the activations.
    """
    B, eb = config.channel_block, config.element_bytes
    # concat members become views of the concat output's region
    owner: dict[str, tuple[str, int]] = {}
    for layer in graph.layers:
        if layer.op == "concat" and layer.target == "hw":
            off = 0
            for name in layer.inputs:
                owner[name] = (layer.output, off)
                off += -(-graph.tensors[name].channels // B)
    def root(name: str) -> tuple[str, int]:
        total = 0
        while name in owner:
            name, off = owner[name]
            total += off
        return name, total

    halo: dict[str, int] = {}
    for layer in graph.layers:
        need = _pad_need(layer)
        for name in layer.inputs:
            if name in graph.tensors:
                r, _ = root(name)
                halo[r] = max(halo.get(r, 0), need)
    views: dict[str, TensorView] = {}
    regions: list[Region] = []
    offset = start
    allocated: dict[str, int] = {}
    names = [n for n in graph.tensors if n not in graph.initializers]
    for name in names:
        r, _ = root(name)
        if r in allocated:
            continue
        info = graph.tensors[r]
        C, H, W = info.shape
        P = halo.get(r, 0)
        blocks = -(-C // B)
        size = blocks * (H + 2 * P) * (W + 2 * P) * B * eb
        kind = "input" if r in graph.inputs else "output" if r in graph.outputs else "activation"
        offset = align(offset)
        allocated[r] = offset
        regions.append(Region(r, kind, offset, size))
        offset += size
    for name in names:
        r, boff = root(name)
        C, H, W = graph.tensors[name].shape
        views[name] = TensorView(name, r, allocated[r], C, H, W, halo.get(r, 0), boff, B, eb)
    return views, regions, align(offset)


def to_blocked(x: np.ndarray, view: TensorView) -> tuple[int, np.ndarray]:
    """Lay out a ``(C, H, W)`` array as the view's DDR bytes (halo zero): returns ``(byte offset, bytes)``."""
    C, H, W = x.shape
    B, P = view.block, view.halo
    full = np.zeros((view.blocks * B, H + 2 * P, W + 2 * P), x.dtype)
    full[:C, P:P + H, P:P + W] = x
    blocked = full.reshape(view.blocks, B, H + 2 * P, W + 2 * P).transpose(0, 2, 3, 1)  # [cb][y][x][b]
    return view.addr(0, -P, -P), np.ascontiguousarray(blocked).view(np.uint8).reshape(-1)


def from_blocked(raw: np.ndarray, view: TensorView, dtype) -> np.ndarray:
    """Turn the view's DDR bytes (as read from ``view.addr(0, -halo, -halo)``, ``span_bytes`` long) into
    a ``(C, H, W)`` array."""
    B, H, W, P = view.block, view.height, view.width, view.halo
    arr = np.asarray(raw, np.uint8).view(dtype).reshape(view.blocks, H + 2 * P, W + 2 * P, B)
    arr = arr[:, P:P + H, P:P + W, :]
    return arr.transpose(0, 3, 1, 2).reshape(view.blocks * B, H, W)[:view.channels]


def span_bytes(view: TensorView) -> int:
    """Bytes of the view's channel blocks including their halo."""
    return view.blocks * view.plane_stride
