"""Back end: tiles every hardware layer to the on-chip buffers and emits the instruction stream.

Each hardware layer becomes a list of *steps*. A step loads an input tile (and, when they change, a weight
chunk and a parameter entry) into one half of the double-buffered input/weight/parameter buffers, runs GEMM
instructions on it, and stores the finished output tile from one half of the output buffer. Steps are
software-pipelined over the two engines::

    loads(0) SYNC | gemm(0) loads(1) SYNC store(0) | gemm(1) loads(2) SYNC store(1) | ...

so the DMA engine moves tile t+1 (and stores tile t-1) while the conv array computes tile t. The golden model's
hazard check verifies that no two instructions on different engines between SYNCs touch the same buffer range.

Where a conv layer is tiled: :meth:`CodeGenerator.conv`. :func:`plan_conv` chooses per layer the loop order
(weight-stationary: output-channel blocks outermost; input-stationary: spatial tiles outermost, each input tile
loaded once for all output blocks) and the tile that move the fewest DDR bytes; convs with one kernel row load only
the input rows their stride uses. Pooling tiles come from :func:`choose_conv_tile`.

The back end serves both number formats: int8 graphs come quantized (``compiler/quantize.py``); for the fp32
processor :func:`lower_fp32` gives every hardware layer its float32 weights and a :class:`FloatPost` (bias,
multipliers, clamps as binary32 words), with no quantization. Weights are then 4 bytes each in the DDR image.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from dlproc.compiler.graph import HW_OPS, Activation, Graph, Layer, LayerQuant, Requant
from dlproc.compiler.memory import TensorView, align
from dlproc.processor.buffers import CONTROL_WORD_LAYOUT, MULT_WORD_LAYOUT, pack_fields
from dlproc.processor.config import ProcessorConfig
from dlproc.processor.isa import EXTENT_BITS, LUT_ENTRIES, Buffer, GemmMode, Instruction, InstructionSet, Opcode

__all__ = ["CodeGenerator", "LayerCode", "choose_conv_tile", "plan_conv", "ConvPlan", "param_entry_bytes",
           "TilingError",
           "FloatPost", "lower_fp32"]

MAX_EXTENT = (1 << EXTENT_BITS) - 1
#: Fewest software-pipeline steps per conv layer (see :meth:`CodeGenerator.conv`).
MIN_PIPELINE_STEPS = 4
#: :func:`plan_conv` counts a contiguous DDR run shorter than this many AXI beats as if it were this long: the DMA
#: keeps ``dma.MAX_OUTSTANDING`` (4) bursts in flight over a read round trip of about 30 cycles, so runs of one
#: or two beats (a column of pixels) take about as long as runs of eight.
MIN_RUN_BEATS = 8


class TilingError(ValueError):
    """A layer cannot be mapped onto the configuration's buffers."""


@dataclass
class LayerCode:
    """What the back end did with one layer (for the compile report and the profiler)."""

    index: int
    name: str
    op: str
    target: str
    instr_start: int = 0
    instr_count: int = 0
    macs: int = 0
    weight_bytes: int = 0
    weight_count: int = 0
    param_bytes: int = 0
    tiles: int = 0
    tile: str = ""
    note: str = ""
    input_shape: tuple = ()
    output_shape: tuple = ()
    outputs: list[str] = field(default_factory=list)  # output tensor names (ONNX names), for reading activations


@dataclass
class _Step:
    loads: list[Instruction] = field(default_factory=list)
    gemms: list[Instruction] = field(default_factory=list)
    stores: list[Instruction] = field(default_factory=list)


@dataclass
class FloatPost:
    """Post-processing of one layer on the fp32 processor, per output channel (``docs/numerics.md``).

    ``v = acc + bias[c]``; ``y = v * (mult_neg[c] if v < 0 else mult_pos[c])``; ``y = min(max(y, lo), hi)``, each
    operation rounded in binary32. ReLU is ``lo = 0``, LeakyReLU ``mult_neg = alpha``, Clip ``[lo, hi]``; average
    pooling folds ``1 / window`` into the multipliers.
    """

    bias: np.ndarray       #: float32 [C]
    mult_pos: np.ndarray   #: float32 [C]
    mult_neg: np.ndarray   #: float32 [C]
    lo: float = -math.inf  #: lower clamp
    hi: float = math.inf   #: upper clamp


def _float_post(channels: int, act: Activation, *, bias: np.ndarray | None = None, mult: float = 1.0) -> FloatPost:
    alpha = act.alpha if act.kind == "leaky_relu" else 1.0
    lo = 0.0 if act.kind == "relu" else act.lo if act.kind == "clip" else -math.inf
    hi = act.hi if act.kind == "clip" else math.inf
    b = np.zeros(channels, np.float32) if bias is None else np.asarray(bias, np.float32)
    return FloatPost(bias=b, mult_pos=np.full(channels, mult, np.float32),
                     mult_neg=np.full(channels, np.float32(mult) * np.float32(alpha), np.float32), lo=lo, hi=hi)


def lower_fp32(graph: Graph) -> Graph:
    """Parameters of every hardware layer for the fp32 processor: float32 weights and a :class:`FloatPost`.

    Parameters
    ----------
    graph : Graph
        The fused float graph (:func:`~.fusion.fuse`); no calibration is needed.

    Returns
    -------
    Graph
        A copy whose hardware layers have :attr:`Layer.quant` set (``weight`` float32, ``requant`` a
        :class:`FloatPost`, SUM-mode ``input_mults`` of 1).
    """
    g = copy.deepcopy(graph)
    for layer in g.layers:
        if layer.target != "hw":
            layer.quant = None
            continue
        if layer.op not in HW_OPS:
            raise ValueError(f"layer {layer.name!r} has the front-end kind {layer.op!r}; run fusion.fuse first")
        channels = g.tensors[layer.output].channels
        weight, mults, post = None, [], None
        if layer.op in ("conv", "fc"):
            weight = np.asarray(layer.weight, np.float32)
            post = _float_post(channels, layer.act, bias=layer.bias)
        elif layer.op == "add":
            post, mults = _float_post(channels, layer.act), [1, 1]
        elif layer.op == "avgpool":
            kh, kw = layer.attrs["kernel"]
            post, mults = _float_post(channels, Activation(), mult=1.0 / (kh * kw)), [1]
        elif layer.op == "gap":
            _, h, w = g.tensors[layer.inputs[0]].shape
            post, mults = _float_post(channels, Activation(), mult=1.0 / (h * w)), [1]
        else:   # maxpool, concat
            post = _float_post(channels, Activation())
        layer.quant = LayerQuant(weight=weight, weight_scale=None, requant=post, input_mults=mults)
    return g


def param_entry_bytes(config: ProcessorConfig, rq: Requant | FloatPost, lo_ch: int, n_ch: int,
                      lanes: int | None = None) -> bytes:
    """One parameter-buffer entry (``oc lanes`` x 4 words, word-major) for channels ``lo_ch .. lo_ch+n_ch-1``.

    int8 (:class:`~.graph.Requant`): lanes past ``n_ch`` get multiplier 0 and clamp [0, 0], so padded channels
    produce exact zeros. fp32 (:class:`FloatPost`): binary32 bias, mult_pos, mult_neg; the clamp words alternate
    ``lo`` (even lanes) and ``hi`` (odd lanes), each pair serving both its lanes; padded lanes get bias and
    multipliers 0 (and clamp [0, 0] when neither lane of their pair is a channel), so they produce finite values.
    """
    if config.dtype == "fp32":
        return _param_entry_fp32(config, rq, lo_ch, n_ch)
    co = config.conv_oc_lanes
    lanes = co if lanes is None else lanes
    words = np.zeros((4, co), np.uint32)
    sl = slice(lo_ch, lo_ch + n_ch)
    words[0, :n_ch] = np.asarray(rq.bias[sl], np.int64).astype(np.int32).view(np.uint32)
    words[1, :n_ch] = pack_fields(MULT_WORD_LAYOUT, value=rq.mult_pos[sl])
    words[2, :n_ch] = pack_fields(MULT_WORD_LAYOUT, value=rq.mult_neg[sl])
    words[3, :n_ch] = pack_fields(CONTROL_WORD_LAYOUT, shift=rq.shift[sl], lo=rq.lo, hi=rq.hi)
    return words.tobytes()


def _param_entry_fp32(config: ProcessorConfig, post: FloatPost, lo_ch: int, n_ch: int) -> bytes:
    co = config.conv_oc_lanes
    words = np.zeros((4, co), np.float32)
    sl = slice(lo_ch, lo_ch + n_ch)
    words[0, :n_ch] = post.bias[sl]
    words[1, :n_ch] = post.mult_pos[sl]
    words[2, :n_ch] = post.mult_neg[sl]
    pairs = -(-n_ch // 2)   # lane pairs holding at least one channel
    words[3, 0:2 * pairs:2] = post.lo
    words[3, 1:2 * pairs:2] = post.hi
    return words.tobytes()


def choose_conv_tile(config: ProcessorConfig, K: int, kernel: tuple[int, int], stride: tuple[int, int],
                     dilation: tuple[int, int], out_hw: tuple[int, int], *, inp_cap: int | None = None,
                     wgt_cap: int | None = None, out_cap: int | None = None) -> tuple[int, int, int, int]:
    """Choose ``(kc, kr, th, tw)`` for one output block of a window operation (the pooling layers use it).

    ``kc`` input-channel blocks and ``kr`` kernel rows form one reduction chunk; ``th x tw`` is the output tile.
    The input tile ``kc x ih x iw`` must fit half the input buffer, ``kc * kr * kw`` weight entries half the
    weight buffer, and ``th * tw`` outputs half the output buffer. Prefers the whole reduction in one chunk
    (weights loaded once per output block), then the largest tile. Kernels larger than half the weight
    buffer are split by rows (``kr < kh``).
    """
    kh, kw = kernel
    sh, sw = stride
    dh, dw = dilation
    Ho, Wo = out_hw
    inp_cap = inp_cap or config.input_entries // 2
    wgt_cap = wgt_cap or config.weight_entries // 2
    out_cap = out_cap or config.acc_buffer_entries // 2
    kr = kh if kh * kw <= wgt_cap else wgt_cap // kw
    if kr < 1:
        raise TilingError(f"one row of a {kh}x{kw} kernel needs {kw} weight entries; half the weight buffer holds "
                          f"{wgt_cap}")
    kh = kr
    kc_max = min(K, wgt_cap // (kh * kw), MAX_EXTENT)
    widths = sorted({min(Wo, MAX_EXTENT)} | {max(1, -(-Wo // d)) for d in (2, 3, 4, 6, 8, 16, 32, 64)}, reverse=True)
    want = min(Ho * Wo, 16)  # avoid degenerate tiles: rather split the reduction than compute 1 pixel per GEMM
    best = None
    kc = kc_max
    while kc >= 1:
        for tw in widths:
            iw = (tw - 1) * sw + (kw - 1) * dw + 1
            rows_fit = inp_cap // (kc * iw)
            th = (rows_fit - ((kh - 1) * dh + 1)) // sh + 1 if rows_fit >= (kh - 1) * dh + 1 else 0
            th = min(th, Ho, out_cap // tw, MAX_EXTENT)
            if th >= 1 and (best is None or th * tw > best[1] * best[2]):
                best = (kc, th, tw)
        if best is not None and best[1] * best[2] >= want:
            break
        kc //= 2
    if best is None:
        raise TilingError(f"no tile of a {kh}x{kw} conv fits the input buffer ({inp_cap} entries per half)")
    kc = best[0]
    kc = -(-K // -(-K // kc))  # balance the chunks: 8 blocks in chunks of at most 7 become 4 + 4, not 7 + 1
    kr = -(-kernel[0] // -(-kernel[0] // kr))
    return kc, kr, best[1], best[2]


def _input_rows(out_rows: int, kernel_rows: int, stride: int, dilation: int) -> int:
    """Input rows a tile of ``out_rows`` output rows reads for ``kernel_rows`` kernel rows.

    With one kernel row the rows used are ``stride`` apart: only those are loaded (the LOAD's row stride is
    ``stride`` DDR rows), so a strided 1x1 conv does not move the rows it skips.
    """
    if kernel_rows == 1:
        return out_rows
    return (out_rows - 1) * stride + (kernel_rows - 1) * dilation + 1


def _spans(n: int, step: int) -> list[tuple[int, int]]:
    """``(start, length)`` of the tiles of ``step`` covering ``range(n)``."""
    return [(i, min(step, n - i)) for i in range(0, n, step)]


@dataclass(frozen=True)
class ConvPlan:
    """How one conv layer is tiled and in which loop order (chosen by :func:`plan_conv`).

    Attributes
    ----------
    order : {"weight", "input"}
        ``"weight"`` (weight-stationary): output-channel blocks outermost; a block's weights stay while its
        spatial tiles stream by, and the input tile is re-read for every block. ``"input"`` (input-stationary):
        spatial tiles outermost; an input tile holding the whole reduction is loaded once and used by every
        output block; the weights stay resident when all blocks fit the weight buffer, else each block's
        weights are reloaded per tile.
    kc, kr : int
        Input-channel blocks and kernel rows of one reduction chunk (one weight load, one GEMM).
    th, tw : int
        Output tile.
    load_bytes : int
        DDR bytes the layer's LOADs move (inputs, weights, per-channel parameters); stores are the same for
        every plan.
    cost : int
        ``load_bytes`` with every input run shorter than :data:`MIN_RUN_BEATS` beats counted as that long.
    steps : int
        Software-pipeline steps (one GEMM each).
    """

    order: str
    kc: int
    kr: int
    th: int
    tw: int
    load_bytes: int
    cost: int
    steps: int


def plan_conv(config: ProcessorConfig, K: int, n_ob: int, kernel: tuple[int, int], stride: tuple[int, int],
              dilation: tuple[int, int], out_hw: tuple[int, int], *, in_blocks: int | None = None) -> ConvPlan:
    """The loop order and tile of a conv layer that move the fewest DDR bytes (ties: fewer steps).

    Input runs (one row of an input tile, contiguous in DDR) shorter than :data:`MIN_RUN_BEATS` beats count as
    that long, so a tile one pixel wide, which loads only the pixels a strided conv uses but in one-beat bursts,
    is not preferred to whole rows the DMA streams at full rate.

    Parameters
    ----------
    config : ProcessorConfig
        Buffer depths and lanes.
    K : int
        Input-channel blocks in the reduction of one output-channel block.
    n_ob : int
        Output-channel blocks (``conv_oc_lanes`` channels each).
    kernel, stride, dilation : tuple of int
        ``(h, w)`` of the convolution.
    out_hw : tuple of int
        Output height and width.
    in_blocks : int, optional
        Input-channel blocks an input-stationary tile must hold for all output blocks (grouped convs: every
        block of the input; default ``K``).

    Returns
    -------
    ConvPlan
        Every candidate of both orders is costed with the bytes its LOADs would move; half the input buffer
        holds an input tile (double buffering), half the weight buffer a weight chunk, half the output buffer
        an output tile. Raises :class:`TilingError` when no tile fits.
    """
    c = config
    kh, kw = kernel
    sh, sw = stride
    dh, dw = dilation
    Ho, Wo = out_hw
    in_blocks = in_blocks or K
    inp_cap, wgt_cap, out_cap = c.input_entries // 2, c.weight_entries // 2, c.acc_buffer_entries // 2
    pix, went, pent = c.input_entry_bytes, c.weight_entry_bytes, c.param_entry_bytes
    kr = kh if kh * kw <= wgt_cap else wgt_cap // kw
    if kr < 1:
        raise TilingError(f"one row of a {kh}x{kw} kernel needs {kw} weight entries; half the weight buffer holds "
                          f"{wgt_cap}")
    kr = -(-kh // -(-kh // kr))
    row_chunks = _spans(kh, kr)
    kc_max = min(K, wgt_cap // (kr * kw), MAX_EXTENT)
    widths = sorted({min(Wo, MAX_EXTENT)} | {max(1, -(-Wo // d)) for d in (2, 3, 4, 6, 8, 16, 32, 64)}, reverse=True)
    want = min(Ho * Wo, 16)  # avoid degenerate tiles: rather split the reduction than compute 1 pixel per GEMM
    w_total = n_ob * K * kh * kw * went

    min_run = MIN_RUN_BEATS * c.beat_bytes

    def iw_of(tw: int) -> int:
        return (tw - 1) * sw + (kw - 1) * dw + 1

    def run_cost(iw: int) -> tuple[int, int]:   # bytes and cost of one input row
        return iw * pix, max(iw * pix, min_run)

    def tiles(th: int, tw: int) -> list[tuple[int, int]]:
        return [(tht, twt) for _, tht in _spans(Ho, th) for _, twt in _spans(Wo, tw)]

    def largest_th(rows_of, blocks: int, tw: int) -> int:
        room = inp_cap // (blocks * iw_of(tw))
        th = 0
        for t in range(min(Ho, out_cap // tw, MAX_EXTENT), 0, -1):
            if rows_of(t) <= room:
                th = t
                break
        return -(-Ho // -(-Ho // th)) if th else 0   # balanced: same number of row tiles

    candidates: list[ConvPlan] = []
    kcs = []
    kc = kc_max
    while kc >= 1:
        kcs.append(-(-K // -(-K // kc)))
        kc //= 2
    for kc in kcs:   # weight-stationary: input chunk kc x rows x iw per GEMM
        chunks = [(min(kc, K - k), kyn) for k in range(0, K, kc) for _, kyn in row_chunks]
        for tw in widths:
            th = largest_th(lambda t: max(_input_rows(t, kyn, sh, dh) for _, kyn in row_chunks), kc, tw)
            if th < 1:
                continue
            tl = tiles(th, tw)
            runs = [(n_ob * kn * _input_rows(tht, kyn, sh, dh), run_cost(iw_of(twt)))
                    for tht, twt in tl for kn, kyn in chunks]
            rest = (w_total if len(chunks) == 1 else len(tl) * w_total) + n_ob * pent
            candidates.append(ConvPlan("weight", kc, kr, th, tw, rest + sum(n * b for n, (b, _) in runs),
                                       rest + sum(n * e for n, (_, e) in runs), len(tl) * n_ob * len(chunks)))
    kc = kcs[0]   # input-stationary: the tile holds the whole reduction; weight chunks as large as they fit
    n_chunks = -(-K // kc) * len(row_chunks)
    resident_w = n_ob * K * kh * kw <= c.weight_entries
    resident_p = n_ob <= c.param_buffer_entries
    for tw in widths:
        th = largest_th(lambda t: _input_rows(t, kh, sh, dh), in_blocks, tw)
        if th < 1:
            continue
        tl = tiles(th, tw)
        runs = [(in_blocks * _input_rows(tht, kh, sh, dh), run_cost(iw_of(twt))) for tht, twt in tl]
        rest = (w_total if resident_w else len(tl) * w_total) + (n_ob * pent if resident_p else len(tl) * n_ob * pent)
        candidates.append(ConvPlan("input", kc, kr, th, tw, rest + sum(n * b for n, (b, _) in runs),
                                   rest + sum(n * e for n, (_, e) in runs), len(tl) * n_ob * n_chunks))
    if not candidates:
        raise TilingError(f"no tile of a {kh}x{kw} conv fits the input buffer ({inp_cap} entries per half)")
    good = [p for p in candidates if p.th * p.tw >= want] or candidates
    return min(good, key=lambda p: (p.cost, p.steps, p.order != "weight"))


class CodeGenerator:
    """Emits the instruction stream and the parameter blob of one network.

    Parameters
    ----------
    config : ProcessorConfig
        Target configuration.
    graph : Graph
        Quantized graph (int8), or the :func:`lower_fp32` graph (fp32).
    views : dict of str to TensorView
        DDR placement of every activation tensor.
    param_base : int
        DDR offset where the parameter blob (weights and per-channel parameters) will be placed.
    """

    def __init__(self, config: ProcessorConfig, graph: Graph, views: dict[str, TensorView], param_base: int):
        self.config = c = config
        self.graph = graph
        self.views = views
        self.isa = InstructionSet(config)
        self.param_base = param_base
        self.words: list[int] = []
        self.blob = bytearray()
        self._blob_cache: dict[tuple, int] = {}
        self.B, self.co, self.eb = c.channel_block, c.conv_oc_lanes, c.element_bytes
        self.element = np.int8 if c.dtype == "int8" else np.float32   # weights in the DDR image
        self.S = c.subblocks_per_output
        self.inp_half = c.input_entries // 2
        self.wgt_half = c.weight_entries // 2
        self.out_half = c.acc_buffer_entries // 2
        self.par_half = c.param_buffer_entries // 2
        self._inp_sel = 0
        self._out_sel = 0
        self._wgt_sel = 1
        self._par_sel = 1
        self._weight_bytes = 0
        self._param_bytes = 0

    # ------------------------------------------------------------------ primitives
    def emit(self, *instructions: Instruction) -> None:
        """Append instructions to the program."""
        self.words.extend(ins.encode() for ins in instructions)

    def add_blob(self, data: bytes, key: tuple | None = None, *, kind: str = "weight") -> int:
        """Append bytes to the parameter blob (deduplicated by ``key``); returns the DDR offset."""
        if key is not None and key in self._blob_cache:
            return self._blob_cache[key]
        pad = align(len(self.blob), max(64, self.config.beat_bytes)) - len(self.blob)
        self.blob.extend(b"\0" * pad)
        off = self.param_base + len(self.blob)
        self.blob.extend(data)
        if kind == "weight":
            self._weight_bytes += len(data)
        else:
            self._param_bytes += len(data)
        if key is not None:
            self._blob_cache[key] = off
        return off

    def _next_inp(self) -> int:
        base = self._inp_sel * self.inp_half
        self._inp_sel ^= 1
        return base

    def _next_out(self) -> int:
        base = self._out_sel * self.out_half
        self._out_sel ^= 1
        return base

    def _next_wgt(self) -> int:
        self._wgt_sel ^= 1
        return self._wgt_sel * self.wgt_half

    def _next_par(self, entries: int = 1) -> int:
        self._par_sel ^= 1
        if entries > self.par_half:
            raise TilingError(f"{entries} parameter entries exceed half the parameter buffer ({self.par_half})")
        return self._par_sel * self.par_half

    def _load(self, buffer: Buffer, buf_addr: int, ddr_addr: int, len0: int, n1: int = 1, s1: int = 0,
              n2: int = 1, s2: int = 0) -> Instruction:
        return self.isa.Load(buffer=buffer, buf_addr=buf_addr, ddr_addr=ddr_addr, len0=len0,
                             n1=n1, ddr_stride1=s1 if n1 > 1 else 0, n2=n2, ddr_stride2=s2 if n2 > 1 else 0)

    def _store(self, view: TensorView, block: int, y: int, x: int, buf_addr: int, n0: int, n1: int, buf_stride1: int,
               n2: int, sb0: int = 0) -> Instruction:
        return self.isa.Store(buf_addr=buf_addr, ddr_addr=view.addr(block, y, x), n0=n0, n1=n1,
                              ddr_stride1=view.row_stride if n1 > 1 else 0, buf_stride1=buf_stride1 if n1 > 1 else 0,
                              n2=n2, ddr_stride2=view.plane_stride if n2 > 1 else 0, sb0=sb0)

    def _params(self, layer: Layer, lo_ch: int, n_ch: int, uniform_key: str = "") -> int:
        rq = layer.quant.requant
        data = param_entry_bytes(self.config, rq, lo_ch, n_ch)
        return self.add_blob(data, key=("par", layer.name, lo_ch, n_ch), kind="param")

    def _run_steps(self, steps: list[_Step]) -> None:
        """Software-pipelined emission (see the module docstring)."""
        if not steps:
            return
        self.emit(*steps[0].loads, self.isa.Sync())
        for t, step in enumerate(steps):
            self.emit(*step.gemms)
            if t + 1 < len(steps):
                self.emit(*steps[t + 1].loads)
            self.emit(self.isa.Sync(), *step.stores)

    def _load_lut(self, layer: Layer, lut: np.ndarray) -> None:
        """Load a layer's nonlinear-unit table (before its first instruction: the previous layer's finalizing GEMMs
        precede the SYNC that ended its last tile, so nothing reads the old table any more)."""
        if not self.config.has_nonlinear_unit:
            raise TilingError(f"layer {layer.name!r} has a {layer.act.kind} activation but the processor has no "
                              "nonlinear unit (ProcessorConfig.has_nonlinear_unit)")
        table = np.asarray(lut, np.int8).tobytes()
        off = self.add_blob(table, key=("lut", layer.name), kind="param")
        self.emit(self.isa.Sync(), self._load(Buffer.LUT, 0, off, LUT_ENTRIES))

    def _set_lut_flags(self, start: int) -> None:
        """Set ``lut`` on every finalizing GEMM and every POST emitted since instruction ``start``."""
        for pc in range(start, len(self.words)):
            ins = self.isa.decode(self.words[pc])
            if (ins.opcode == Opcode.GEMM and ins.finalize) or ins.opcode == Opcode.POST:
                self.words[pc] = dataclasses.replace(ins, lut=1).encode()

    # ------------------------------------------------------------------ layers
    def generate(self, layers: list[Layer]) -> list[LayerCode]:
        """Emit code for the hardware layers of one segment; returns a record per layer."""
        records = []
        for layer in layers:
            rec = LayerCode(index=-1, name=layer.name, op=layer.op, target="hw")
            start = len(self.words)
            w0, p0 = self._weight_bytes, self._param_bytes
            lut = layer.quant.lut if layer.quant is not None else None
            if lut is not None:
                self._load_lut(layer, lut)
            handler = getattr(self, layer.op)
            handler(layer, rec)
            if lut is not None:
                self._set_lut_flags(start)
            if layer.quant is not None and layer.quant.weight is not None:
                rec.weight_count = int(np.asarray(layer.quant.weight).size)
            rec.instr_start, rec.instr_count = start, len(self.words) - start
            rec.weight_bytes, rec.param_bytes = self._weight_bytes - w0, self._param_bytes - p0
            records.append(rec)
        return records

    def conv(self, layer: Layer, rec: LayerCode) -> None:
        """A convolution (dense, grouped or depthwise) with bias, requantization and activation.

        The loop order and tile come from :func:`plan_conv` (fewest DDR bytes): weight-stationary (output blocks
        outermost, :meth:`_conv_weight_stationary`) or input-stationary (spatial tiles outermost,
        :meth:`_conv_input_stationary`).
        """
        q = layer.quant
        inv, outv = self.views[layer.inputs[0]], self.views[layer.output]
        B, co = self.B, self.co
        OC, ICg, kh, kw = q.weight.shape
        g = layer.attrs.get("group", 1)
        sh, sw = layer.attrs.get("stride", (1, 1))
        dh, dw = layer.attrs.get("dilation", (1, 1))
        Ho, Wo = outv.height, outv.width
        OCg = OC // g
        n_ob = -(-OC // co)
        dense = np.zeros((n_ob * co, inv.blocks * B, kh, kw), self.element)
        for gi in range(g):
            dense[gi * OCg:(gi + 1) * OCg, gi * ICg:(gi + 1) * ICg] = q.weight[gi * OCg:(gi + 1) * OCg]
        rec.macs = Ho * Wo * OC * ICg * kh * kw
        blocks = []   # per output block: (first channel, end channel, first input block, input blocks)
        for ob in range(n_ob):
            oc0, oc1 = ob * co, min(OC, ob * co + co)
            ic_lo, ic_hi = (oc0 // OCg) * ICg, ((oc1 - 1) // OCg + 1) * ICg
            kb0, kb1 = ic_lo // B, -(-ic_hi // B)
            blocks.append((oc0, oc1, kb0, kb1 - kb0))
        K = max(k for *_, k in blocks)
        in_lo = min(kb0 for _, _, kb0, _ in blocks)
        in_blocks = max(kb0 + k for _, _, kb0, k in blocks) - in_lo
        plan = plan_conv(self.config, K, n_ob, (kh, kw), (sh, sw), (dh, dw), (Ho, Wo), in_blocks=in_blocks)
        kc, kr, th, tw = plan.kc, plan.kr, plan.th, plan.tw
        n_chunks = -(-K // kc) * -(-kh // kr)
        if plan.steps < MIN_PIPELINE_STEPS and Ho > 1:
            # a layer that fits in one tile would leave its loads and stores exposed: split its rows so the
            # DMA streams tile t+1 and stores tile t-1 while the array computes tile t
            want = -(-MIN_PIPELINE_STEPS // (n_ob * n_chunks * -(-Wo // tw)))
            th = max(1, -(-Ho // min(want, Ho)))
        tiles = [(y0, tht, x0, twt) for y0, tht in _spans(Ho, th) for x0, twt in _spans(Wo, tw)]
        rec.tile = f"{th}x{tw}x{kc * B}" + (f" ({kr} kernel rows)" if kr < kh else "")
        if plan.order == "input":
            resident = sum(k for *_, k in blocks) * kh * kw <= self.config.weight_entries
            rec.note = (f"input-stationary: each input tile ({in_blocks * B} channels) serves all {n_ob} output "
                        f"blocks; weights {'resident' if resident else 'reloaded per tile'}")
            steps = self._conv_input_stationary(layer, dense, blocks, tiles, kc, kr, in_lo, in_blocks)
        else:
            steps = self._conv_weight_stationary(layer, dense, blocks, tiles, kc, kr)
        rec.tiles = len(steps)
        self._run_steps(steps)

    def _conv_geometry(self, layer: Layer) -> tuple:
        a = layer.attrs
        return (*a.get("stride", (1, 1)), *a.get("dilation", (1, 1)), *a.get("pads", (0, 0, 0, 0))[:2])

    def _conv_weight_load(self, layer: Layer, dense: np.ndarray, ob: int, kb: int, kn: int, ky0: int, kyn: int,
                          slot: int) -> Instruction:
        """LOAD of the weights of output block ``ob``, input blocks ``kb .. kb+kn-1``, kernel rows ``ky0 ..``."""
        B, co = self.B, self.co
        kw = dense.shape[3]
        blk = dense[ob * co:ob * co + co, kb * B:(kb + kn) * B, ky0:ky0 + kyn]
        blk = blk.reshape(co, kn, B, kyn, kw).transpose(1, 3, 4, 0, 2)
        woff = self.add_blob(np.ascontiguousarray(blk).tobytes(), key=("w", layer.name, ob, kb, kn, ky0, kyn))
        return self._load(Buffer.WEIGHT, slot, woff, kn * kyn * kw * self.config.weight_entry_bytes)

    def _conv_input_load(self, inv: TensorView, base: int, kb: int, kn: int, y: int, x: int, rows: int, iw: int,
                         row_step: int) -> Instruction:
        """LOAD of ``kn`` channel blocks x ``rows`` rows (``row_step`` DDR rows apart) x ``iw`` pixels."""
        return self._load(Buffer.INPUT, base, inv.addr(kb, y, x), iw * self.B * self.eb, rows,
                          inv.row_stride * row_step, kn, inv.plane_stride)

    def _conv_weight_stationary(self, layer: Layer, dense: np.ndarray, blocks: list, tiles: list, kc: int,
                                kr: int) -> list[_Step]:
        """Output blocks outermost: each block's weights (one chunk) stay while its tiles stream by."""
        inv, outv = self.views[layer.inputs[0]], self.views[layer.output]
        S = self.S
        kh, kw = dense.shape[2:]
        sh, sw, dh, dw, pt, pl = self._conv_geometry(layer)
        steps = []
        for ob, (oc0, oc1, kb0, K) in enumerate(blocks):
            chunks = [(k, kn, r, kyn) for k, kn in _spans(K, kc) for r, kyn in _spans(kh, kr)]
            par_off = self._params(layer, oc0, oc1 - oc0)
            par_slot = None
            wgt_slot = None
            for y0, tht, x0, twt in tiles:
                iw = (twt - 1) * sw + (kw - 1) * dw + 1
                out_base = None
                for ci, (k0, kn, ky0, kyn) in enumerate(chunks):
                    ih = _input_rows(tht, kyn, sh, dh)
                    row_step = sh if kyn == 1 else 1   # one kernel row: load only the rows it uses
                    step = _Step()
                    inp_base = self._next_inp()
                    step.loads.append(self._conv_input_load(inv, inp_base, kb0 + k0, kn, y0 * sh - pt + ky0 * dh,
                                                            x0 * sw - pl, ih, iw, row_step))
                    if len(chunks) > 1 or wgt_slot is None:
                        wgt_slot = self._next_wgt()
                        step.loads.append(self._conv_weight_load(layer, dense, ob, kb0 + k0, kn, ky0, kyn, wgt_slot))
                    if par_slot is None:
                        par_slot = self._next_par()
                        step.loads.append(self._load(Buffer.PARAM, par_slot, par_off, self.config.param_entry_bytes))
                    last = ci == len(chunks) - 1
                    if last:
                        out_base = self._next_out()
                    step.gemms.append(self.isa.Gemm(mode=GemmMode.MAC, overwrite=ci == 0, finalize=last,
                                                    acc_base=0, out_base=out_base or 0, inp_base=inp_base,
                                                    wgt_base=wgt_slot, param_addr=par_slot, r0=kn, r1=kyn, r2=kw,
                                                    s0=tht, s1=twt, ri0=ih * iw, ri1=dh * iw, ri2=dw,
                                                    si0=sh * iw // row_step, si1=sw))
                    if last:
                        nsb = min(S, outv.blocks - ob * S)
                        step.stores.append(self._store(outv, ob * S, y0, x0, out_base, twt, tht, twt, nsb))
                    steps.append(step)
        return steps

    def _conv_input_stationary(self, layer: Layer, dense: np.ndarray, blocks: list, tiles: list, kc: int, kr: int,
                               in_lo: int, in_blocks: int) -> list[_Step]:
        """Spatial tiles outermost: one input tile (the whole reduction) serves every output block.

        The weights of all blocks stay resident (loaded during the first tile, each chunk at its own place in
        the whole weight buffer) when they fit it, and likewise one parameter entry per block; otherwise they
        alternate between the buffer halves step by step. The input tile of tile ``t+1`` is loaded while the
        array computes the second step of tile ``t`` (its other half was last read by tile ``t-1``).
        """
        c = self.config
        inv, outv = self.views[layer.inputs[0]], self.views[layer.output]
        S = self.S
        kh, kw = dense.shape[2:]
        sh, sw, dh, dw, pt, pl = self._conv_geometry(layer)
        chunks_of = [[(k, kn, r, kyn) for k, kn in _spans(K, kc) for r, kyn in _spans(kh, kr)]
                     for _, _, _, K in blocks]
        resident_w = sum(K for *_, K in blocks) * kh * kw <= c.weight_entries
        resident_p = len(blocks) <= c.param_buffer_entries
        w_slots: dict[tuple[int, int], int] = {}
        w_next = 0
        p_slots: dict[int, int] = {}
        row_step = sh if kh == 1 else 1   # a 1-row kernel: load only the rows it uses
        steps: list[_Step] = []
        tile_loads = []   # (first step of the tile, its input LOAD)
        for y0, tht, x0, twt in tiles:
            iw = (twt - 1) * sw + (kw - 1) * dw + 1
            ih = _input_rows(tht, kh, sh, dh)
            inp_base = self._next_inp()
            tile_loads.append((len(steps), self._conv_input_load(inv, inp_base, in_lo, in_blocks, y0 * sh - pt,
                                                                 x0 * sw - pl, ih, iw, row_step)))
            for ob, (oc0, oc1, kb0, _) in enumerate(blocks):
                chunks = chunks_of[ob]
                out_base = None
                par_slot = 0
                for ci, (k0, kn, ky0, kyn) in enumerate(chunks):
                    step = _Step()
                    if not resident_w:
                        wgt_slot = self._next_wgt()
                        step.loads.append(self._conv_weight_load(layer, dense, ob, kb0 + k0, kn, ky0, kyn, wgt_slot))
                    elif (ob, ci) in w_slots:
                        wgt_slot = w_slots[ob, ci]
                    else:
                        wgt_slot = w_slots[ob, ci] = w_next
                        w_next += kn * kyn * kw
                        step.loads.append(self._conv_weight_load(layer, dense, ob, kb0 + k0, kn, ky0, kyn, wgt_slot))
                    if ci == 0:
                        if not resident_p or ob not in p_slots:
                            par_slot = self._next_par() if not resident_p else ob
                            p_slots[ob] = par_slot
                            step.loads.append(self._load(Buffer.PARAM, par_slot,
                                                         self._params(layer, oc0, oc1 - oc0), c.param_entry_bytes))
                        par_slot = p_slots[ob]
                    last = ci == len(chunks) - 1
                    if last:
                        out_base = self._next_out()
                    step.gemms.append(self.isa.Gemm(mode=GemmMode.MAC, overwrite=ci == 0, finalize=last,
                                                    acc_base=0, out_base=out_base or 0,
                                                    inp_base=inp_base + (kb0 - in_lo + k0) * ih * iw + ky0 * dh * iw,
                                                    wgt_base=wgt_slot, param_addr=par_slot, r0=kn, r1=kyn, r2=kw,
                                                    s0=tht, s1=twt, ri0=ih * iw, ri1=dh * iw, ri2=dw,
                                                    si0=sh * iw // row_step, si1=sw))
                    if last:
                        nsb = min(S, outv.blocks - ob * S)
                        step.stores.append(self._store(outv, ob * S, y0, x0, out_base, twt, tht, twt, nsb))
                    steps.append(step)
        for t, (first, load) in enumerate(tile_loads):
            # tile 0 with the first step; tile t+1 one step into tile t, so it streams while tile t computes
            at = first if t == 0 else min(first, tile_loads[t - 1][0] + 1)
            steps[at].loads.insert(0, load)
        return steps

    def _pool(self, layer: Layer, rec: LayerCode, mode: GemmMode) -> None:
        inv, outv = self.views[layer.inputs[0]], self.views[layer.output]
        B, eb = self.B, self.eb
        kh, kw = layer.attrs["kernel"]
        sh, sw = layer.attrs.get("stride", (1, 1))
        pt, pl = layer.attrs.get("pads", (0, 0, 0, 0))[:2]
        Ho, Wo = outv.height, outv.width
        _, _, th, tw = choose_conv_tile(self.config, 1, (kh, kw), (sh, sw), (1, 1), (Ho, Wo), wgt_cap=1 << 30)
        imm = layer.quant.input_mults[0] if mode == GemmMode.SUM else 0
        steps = []
        for cb in range(inv.blocks):
            par_off = self._params(layer, cb * B, min(B, inv.channels - cb * B))
            par_slot = None
            for y0 in range(0, Ho, th):
                tht = min(th, Ho - y0)
                for x0 in range(0, Wo, tw):
                    twt = min(tw, Wo - x0)
                    ih, iw = (tht - 1) * sh + kh, (twt - 1) * sw + kw
                    step = _Step()
                    inp_base = self._next_inp()
                    step.loads.append(self._load(Buffer.INPUT, inp_base, inv.addr(cb, y0 * sh - pt, x0 * sw - pl),
                                                 iw * B * eb, ih, inv.row_stride))
                    if par_slot is None:
                        par_slot = self._next_par()
                        step.loads.append(self._load(Buffer.PARAM, par_slot, par_off, self.config.param_entry_bytes))
                    out_base = self._next_out()
                    step.gemms.append(self.isa.Gemm(mode=mode, overwrite=1, finalize=1, acc_base=0,
                                                    out_base=out_base, inp_base=inp_base, wgt_base=0,
                                                    param_addr=par_slot, r0=1, r1=kh, r2=kw, s0=tht, s1=twt, ri0=0,
                                                    ri1=iw, ri2=1, si0=sh * iw, si1=sw, imm=imm))
                    step.stores.append(self._store(outv, cb, y0, x0, out_base, twt, tht, twt, 1))
                    steps.append(step)
        rec.tiles = len(steps)
        rec.tile = f"{th}x{tw}x{B}"
        self._run_steps(steps)

    def maxpool(self, layer: Layer, rec: LayerCode) -> None:
        """Max pooling on the conv array in MAX mode (one channel block per instruction)."""
        self._pool(layer, rec, GemmMode.MAX)

    def avgpool(self, layer: Layer, rec: LayerCode) -> None:
        """Average pooling: SUM mode, the 1/window factor folded into the requantization."""
        self._pool(layer, rec, GemmMode.SUM)

    def gap(self, layer: Layer, rec: LayerCode) -> None:
        """Global average pooling: SUM over the whole plane, several channel blocks per instruction."""
        inv, outv = self.views[layer.inputs[0]], self.views[layer.output]
        B, eb = self.B, self.eb
        H, W = inv.height, inv.width
        rows = min(H, self.inp_half // W, MAX_EXTENT)
        if rows < 1 or W > MAX_EXTENT:
            raise TilingError(f"a {W}-pixel row does not fit the input buffer for global pooling")
        kc = max(1, min(self.inp_half // (rows * W), self.out_half, MAX_EXTENT)) if rows == H else 1
        imm = layer.quant.input_mults[0]
        steps = []
        for cb0 in range(0, inv.blocks, kc):
            kn = min(kc, inv.blocks - cb0)
            out_base = None
            par_slot = None
            # per-block parameters differ only if the requantization is per channel; use one entry per block chunk
            par_off = self._params(layer, cb0 * B, min(B, inv.channels - cb0 * B))
            for r0 in range(0, H, rows):
                rn = min(rows, H - r0)
                step = _Step()
                inp_base = self._next_inp()
                step.loads.append(self._load(Buffer.INPUT, inp_base, inv.addr(cb0, r0, 0), W * B * eb, rn,
                                             inv.row_stride, kn, inv.plane_stride))
                if par_slot is None:
                    par_slot = self._next_par()
                    step.loads.append(self._load(Buffer.PARAM, par_slot, par_off, self.config.param_entry_bytes))
                last = r0 + rn >= H
                if last:
                    out_base = self._next_out()
                step.gemms.append(self.isa.Gemm(mode=GemmMode.SUM, overwrite=r0 == 0, finalize=last, acc_base=0,
                                                out_base=out_base or 0, inp_base=inp_base, wgt_base=0,
                                                param_addr=par_slot, r0=1, r1=rn, r2=W, s0=1, s1=kn, ri0=0, ri1=W,
                                                ri2=1, si0=0, si1=rn * W, imm=imm))
                if last:
                    step.stores.append(self.isa.Store(buf_addr=out_base, ddr_addr=outv.addr(cb0, 0, 0), n0=1, n1=kn,
                                                      ddr_stride1=outv.plane_stride if kn > 1 else 0,
                                                      buf_stride1=1 if kn > 1 else 0, n2=1, ddr_stride2=0, sb0=0))
                steps.append(step)
        rec.tiles = len(steps)
        rec.tile = f"{rows}x{W}x{kc * B}"
        self._run_steps(steps)

    def add(self, layer: Layer, rec: LayerCode) -> None:
        """Residual add: two SUM-mode passes (scaled by each input's multiplier) and requantization."""
        av, bv = self.views[layer.inputs[0]], self.views[layer.inputs[1]]
        outv = self.views[layer.output]
        B, eb = self.B, self.eb
        H, W = outv.height, outv.width
        ma, mb = layer.quant.input_mults
        th = max(1, min(H, self.inp_half // (2 * W), self.out_half // W, MAX_EXTENT // W))
        if 2 * th * W > self.inp_half or th * W > MAX_EXTENT:
            raise TilingError(f"a {W}-pixel row does not fit the buffers for an elementwise add")
        kc = max(1, min(self.inp_half // (2 * th * W), self.out_half // (th * W), MAX_EXTENT)) if th == H else 1
        steps = []
        par_cache: dict[int, int] = {}
        for cb0 in range(0, outv.blocks, kc):
            kn = min(kc, outv.blocks - cb0)
            for y0 in range(0, H, th):
                tht = min(th, H - y0)
                n = tht * W
                step = _Step()
                base = self._next_inp()
                step.loads.append(self._load(Buffer.INPUT, base, av.addr(cb0, y0, 0), W * B * eb, tht, av.row_stride,
                                             kn, av.plane_stride))
                step.loads.append(self._load(Buffer.INPUT, base + kn * n, bv.addr(cb0, y0, 0), W * B * eb, tht,
                                             bv.row_stride, kn, bv.plane_stride))
                par_off = self._params(layer, 0, min(B, outv.channels))
                par_slot = self._next_par()
                par_cache[cb0] = par_slot
                step.loads.append(self._load(Buffer.PARAM, par_slot, par_off, self.config.param_entry_bytes))
                out_base = self._next_out()
                common = dict(mode=GemmMode.SUM, acc_base=0, out_base=out_base, wgt_base=0, param_addr=par_slot,
                              r0=1, r1=1, r2=1, s0=kn, s1=n, ri0=0, ri1=0, ri2=0, si0=n, si1=1)
                step.gemms.append(self.isa.Gemm(**common, overwrite=1, finalize=0, inp_base=base, imm=ma))
                step.gemms.append(self.isa.Gemm(**common, overwrite=0, finalize=1, inp_base=base + kn * n, imm=mb))
                for k in range(kn):
                    step.stores.append(self._store(outv, cb0 + k, y0, 0, out_base + k * n, W, tht, W, 1))
                steps.append(step)
        rec.tiles = len(steps)
        rec.tile = f"{th}x{W}x{kc * B}"
        self._run_steps(steps)

    def mul(self, layer: Layer, rec: LayerCode) -> None:
        """Elementwise multiply (nonlinear unit): a SUM pass copies the first operand into the accumulators, a MUL
        pass multiplies by the second, one requantization. A ``[C, 1, 1]`` second operand (a squeeze-excitation
        gate) is loaded once per channel block and read at every pixel (spatial input stride 0)."""
        av, bv = self.views[layer.inputs[0]], self.views[layer.inputs[1]]
        outv = self.views[layer.output]
        B, eb = self.B, self.eb
        H, W = outv.height, outv.width
        gate = (bv.height, bv.width) == (1, 1) and (H, W) != (1, 1)
        per_row = 1 if gate else 2
        th = max(1, min(H, self.inp_half // (per_row * W + 1), self.out_half // W, MAX_EXTENT // W))
        if (per_row * th * W + 1) > self.inp_half or th * W > MAX_EXTENT:
            raise TilingError(f"a {W}-pixel row does not fit the buffers for an elementwise multiply")
        kc = max(1, min(self.inp_half // (per_row * th * W + 1), self.out_half // (th * W), MAX_EXTENT)) \
            if th == H else 1
        steps = []
        for cb0 in range(0, outv.blocks, kc):
            kn = min(kc, outv.blocks - cb0)
            for y0 in range(0, H, th):
                tht = min(th, H - y0)
                n = tht * W
                step = _Step()
                base = self._next_inp()
                step.loads.append(self._load(Buffer.INPUT, base, av.addr(cb0, y0, 0), W * B * eb, tht, av.row_stride,
                                             kn, av.plane_stride))
                if gate:
                    step.loads.append(self._load(Buffer.INPUT, base + kn * n, bv.addr(cb0, 0, 0), B * eb, 1, 0, kn,
                                                 bv.plane_stride))
                    si0, si1 = 1, 0
                else:
                    step.loads.append(self._load(Buffer.INPUT, base + kn * n, bv.addr(cb0, y0, 0), W * B * eb, tht,
                                                 bv.row_stride, kn, bv.plane_stride))
                    si0, si1 = n, 1
                par_off = self._params(layer, 0, min(B, outv.channels))
                par_slot = self._next_par()
                step.loads.append(self._load(Buffer.PARAM, par_slot, par_off, self.config.param_entry_bytes))
                out_base = self._next_out()
                common = dict(acc_base=0, out_base=out_base, wgt_base=0, param_addr=par_slot, r0=1, r1=1, r2=1,
                              s0=kn, s1=n, ri0=0, ri1=0, ri2=0)
                step.gemms.append(self.isa.Gemm(**common, mode=GemmMode.SUM, overwrite=1, finalize=0, inp_base=base,
                                                si0=n, si1=1, imm=1))
                step.gemms.append(self.isa.Gemm(**common, mode=GemmMode.MUL, overwrite=0, finalize=1,
                                                inp_base=base + kn * n, si0=si0, si1=si1))
                for k in range(kn):
                    step.stores.append(self._store(outv, cb0 + k, y0, 0, out_base + k * n, W, tht, W, 1))
                steps.append(step)
        rec.tiles = len(steps)
        rec.tile = f"{th}x{W}x{kc * B}"
        self._run_steps(steps)

    def concat(self, layer: Layer, rec: LayerCode) -> None:
        """Channel concatenation costs nothing: its inputs were written into the concat's region."""
        rec.note = "zero-copy (inputs written in place)"

    def fc(self, layer: Layer, rec: LayerCode) -> None:
        """Fully connected layer on the fc module: weight rows streamed from DDR."""
        q = layer.quant
        inv, outv = self.views[layer.inputs[0]], self.views[layer.output]
        B, co, S, eb = self.B, self.co, self.S, self.eb
        C, H, W = inv.channels, inv.height, inv.width
        n_out, n_in_feat = q.weight.shape
        if n_in_feat != C * H * W:
            raise TilingError(f"fc weight has {n_in_feat} inputs but its input tensor has {C}x{H}x{W}")
        rec.macs = n_out * n_in_feat
        plane = H * W
        n_in = inv.blocks * plane
        # weight columns reordered to the blocked layout [cb][y][x][b]; padded channels get zero weight
        wpad = np.zeros((n_out, inv.blocks * B, H, W), self.element)
        wpad[:, :C] = q.weight.reshape(n_out, C, H, W)
        whw = wpad.reshape(n_out, inv.blocks, B, H, W).transpose(0, 1, 3, 4, 2).reshape(n_out, n_in * B)
        row_stride = n_in * B * eb
        wbase = self.add_blob(np.ascontiguousarray(whw).tobytes(), key=("fc", layer.name))
        cbs_per_chunk = self.inp_half // plane
        if cbs_per_chunk < 1:
            raise TilingError(f"one channel block of the fc input ({plane} pixels) exceeds half the input buffer")
        chunks = [(cb, min(cbs_per_chunk, inv.blocks - cb)) for cb in range(0, inv.blocks, cbs_per_chunk)]
        group = co * self.par_half
        self.emit(self.isa.Sync())
        single = len(chunks) == 1
        if single:
            self._emit_fc_input(inv, chunks[0], 0)
        tiles = 0
        for o0 in range(0, n_out, group):
            g = min(group, n_out - o0)
            entries = -(-g // co)
            par_slot = self._next_par(entries)
            data = b"".join(param_entry_bytes(self.config, q.requant, o0 + e * co, min(co, g - e * co))
                            for e in range(entries))
            par_off = self.add_blob(data, key=("fcpar", layer.name, o0), kind="param")
            self.emit(self._load(Buffer.PARAM, par_slot, par_off, entries * self.config.param_entry_bytes))
            for i, (cb0, kn) in enumerate(chunks):
                if not single:
                    self._emit_fc_input(inv, (cb0, kn), 0)
                self.emit(self.isa.Fc(accumulate=i > 0, ddr_addr=wbase + o0 * row_stride + cb0 * plane * B * eb,
                                      row_stride=row_stride, n_out=g, n_in=kn * plane, inp_base=0, acc_base=0))
                tiles += 1
            self.emit(self.isa.Sync())
            out_base = self._next_out()
            self.emit(self.isa.Post(acc_base=0, out_base=out_base, n=entries, param_addr=par_slot, param_inc=1),
                      self.isa.Sync())
            blk0 = o0 // B
            valid_blocks = -(-g // B)
            full, rest = divmod(valid_blocks, S)
            if full:
                self.emit(self.isa.Store(buf_addr=out_base, ddr_addr=outv.addr(blk0, 0, 0), n0=1, n1=full,
                                         ddr_stride1=S * outv.plane_stride if full > 1 else 0,
                                         buf_stride1=1 if full > 1 else 0, n2=S,
                                         ddr_stride2=outv.plane_stride if S > 1 else 0, sb0=0))
            if rest:
                self.emit(self.isa.Store(buf_addr=out_base + full, ddr_addr=outv.addr(blk0 + full * S, 0, 0), n0=1,
                                         n1=1, ddr_stride1=0, buf_stride1=0, n2=rest,
                                         ddr_stride2=outv.plane_stride if rest > 1 else 0, sb0=0))
        rec.tiles = tiles
        rec.tile = f"{min(group, n_out)} outputs x {min(cbs_per_chunk, inv.blocks) * B * plane} inputs"

    def _emit_fc_input(self, inv: TensorView, chunk: tuple[int, int], base: int) -> None:
        cb0, kn = chunk
        B, eb = self.B, self.eb
        self.emit(self._load(Buffer.INPUT, base, inv.addr(cb0, 0, 0), inv.width * B * eb, inv.height,
                             inv.row_stride, kn, inv.plane_stride))

