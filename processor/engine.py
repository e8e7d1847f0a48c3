"""The compute engine: GEMM (MAC, MAX and SUM modes) and POST instructions on the conv array.

Semantics are those of ``GoldenModel._gemm`` and ``GoldenModel._post`` in ``dlproc.sim.golden``; the engine executes
them as a stream of *steps*, one per cycle:

* GEMM: a loop nest ``r0, r1, r2`` (reduction, outer) x ``s0, s1`` (spatial, inner). Each step reads one input
  entry (``inp_base + a*ri0 + b*ri1 + c*ri2 + y*si0 + x*si1``, computed incrementally: one adder per loop level,
  no multipliers), one weight entry (``wgt_base + reduction step``) and one accumulator entry
  (``acc_base + spatial step``), and writes the accumulator back. On the last reduction step of a ``finalize``
  GEMM the new accumulator also goes through the :class:`~dlproc.processor.postproc.PostProcessor` into the output
  buffer at ``out_base + spatial step``.
* POST: the same pipeline with ``n`` steps that read ``acc[acc_base + j]`` and ``params[param_addr + j*param_inc]``
  and write ``out[out_base + j]``, without touching the accumulators (they pass the update unit unchanged).

One engine serves both number formats: the configuration's dtype picks the arithmetic components, which have the
same members and a ``LATENCY`` attribute: :class:`DotProductInt8` / :class:`DotProductFp32` (the array's lanes),
:class:`AccumulatorUpdateInt32` / :class:`AccumulatorUpdateFp32`, and the post-processor's lanes. With ``L`` the
array's latency and ``U`` the update's (:class:`EngineTiming`), a step issued in cycle ``t`` goes through::

    t              issue: input and weight read addresses (straight from the loop-counter registers)
    t+1            input/weight data -> MacArray (int8: products, adder trees; fp32: FpMul, FpAdd tree)
    t+L            accumulator read address; forwarding matches are computed
    t+L+1          A: old accumulator (read data, or forwarded) enters the update unit
    t+L+U+1        the update unit's result is registered; param read address
    t+L+U+2        W: accumulator write; PostProcessor input (params arrive now)
    t+L+U+2+P      output buffer write (P = PostProcessor latency)

int8: ``L = 2``, ``U = 0``, ``P = 4``. fp32 on ``conv_ic_lanes = B``: ``L = 4 + 5*log2(B)``, ``U = 5``, ``P = 10``.

Read-after-write on the accumulator: a step in stage A whose entry was updated by the step ``U+1`` or ``U+2``
issues earlier (now in W, or written one cycle ago and missed by the read) takes that value from the W or W2
register instead of the read data. The comparisons are made one cycle ahead, so forwarding costs no cycle. Steps
that update the same entry are ``s0*s1`` issues apart (the spatial extent); when that is less than ``U+1`` (only
with the fp32 update's latency) the engine waits ``U+1 - s0*s1`` cycles at each reduction-step boundary, so the
value is ready to forward. With int8 (``U = 0``) throughput is one step per cycle for every spatial extent,
including ``s0*s1 == 1`` (FC-like GEMMs, global pooling). This works whether or not the top level makes the
accumulator read port transparent.

Timing: the command is accepted in cycle 0 (``cmd.ready`` is ``~busy``); steps issue from cycle 1 on; the last
write is presented ``out_write`` (``acc_write`` without outputs) cycles after the last issue, and ``busy`` falls one
cycle later; see :meth:`EngineTiming.cycles` (int8: ``N + 9`` cycles for ``N`` steps with outputs, ``N + 5``
without).
"""

from dataclasses import dataclass

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .buffers import acc_entry_layout, buffer_geometry, input_entry_layout, weight_entry_layout
from .config import ProcessorConfig
from .fp32 import FpAdd, FpMul, FpTreeSum, f32_flush, f32_from_int16, f32_max
from .isa import EXTENT_BITS, INSTRUCTION_BITS, GemmMode, InstructionSet, Opcode
from .postproc import PostProcessor

__all__ = ["DotProductInt8", "DotProductFp32", "AccumulatorUpdateInt32", "AccumulatorUpdateFp32", "MacArray",
           "ComputeEngine", "EngineTiming", "dot_product_class", "accumulator_update_class"]


def _check_config(config: ProcessorConfig, what: str) -> None:
    if not isinstance(config, ProcessorConfig):
        raise TypeError(f"{what}: config must be a ProcessorConfig, not {config!r}")


def _check_lanes(lanes: int) -> None:
    if not isinstance(lanes, int) or isinstance(lanes, bool) or not 1 <= lanes <= 1 << 17:
        raise TypeError(f"Lanes must be an integer from 1 to 131072, not {lanes!r}")


def _delay(m: Module, value, cycles: int, name: str):
    """``value`` delayed by ``cycles`` registers (``cycles`` may be 0)."""
    for k in range(cycles):
        reg = Signal.like(value, name=f"{name}_d{k}")
        m.d.sync += reg.eq(value)
        value = reg
    return value


def _tree_sum(terms: list) -> object:
    """Balanced adder tree (depth ``ceil(log2(len(terms)))``) over Amaranth values."""
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


class DotProductInt8(wiring.Component):
    """Dot product of two int8 vectors, pipelined: products in one stage, an adder tree in the next.

    :class:`DotProductFp32` is its binary32 counterpart.

    Parameters
    ----------
    lanes : int
        Vector length (a positive integer).

    Members
    -------
    a, b : In(data.ArrayLayout(signed(8), lanes))
        Operands.
    sum : Out(signed(32))
        ``sum(a[i] * b[i])``, :attr:`LATENCY` cycles after the operands (exact; it fits 32 bits for any
        ``lanes <= 2**17``).
    """

    #: Cycles from the operands to ``sum``.
    LATENCY = 2

    def __init__(self, *, lanes: int):
        _check_lanes(lanes)
        self._lanes = lanes
        vector = data.ArrayLayout(signed(8), lanes)
        super().__init__({"a": In(vector), "b": In(vector), "sum": Out(signed(32))})

    @property
    def lanes(self) -> int:
        """Vector length."""
        return self._lanes

    @classmethod
    def latency_for(cls, lanes: int) -> int:
        """:attr:`LATENCY` of a dot product of ``lanes`` elements (the same for every length)."""
        return cls.LATENCY

    def elaborate(self, platform):
        m = Module()
        products = [Signal(signed(16), name=f"p{i}") for i in range(self._lanes)]
        m.d.sync += [p.eq(self.a[i] * self.b[i]) for i, p in enumerate(products)]
        m.d.sync += self.sum.eq(_tree_sum(list(products)))
        return m


class AccumulatorUpdateInt32(wiring.Component):
    """Combine an accumulator lane with a new value: add (MAC, SUM), maximum (MAX), or replace.

    Combinational. int32 addition wraps (two's complement), as in the golden model.

    Members
    -------
    mode : In(GemmMode)
        MAC and SUM add, MAX takes the signed maximum.
    replace : In(1)
        Ignore ``old`` and output ``val`` (the first reduction step of an ``overwrite`` GEMM).
    old, val : In(signed(32))
        Accumulator value and the array's new value.
    new : Out(signed(32))
        Result.
    """

    #: Cycles from the inputs to ``new`` (combinational).
    LATENCY = 0

    mode: In(GemmMode)
    replace: In(1)
    old: In(signed(32))
    val: In(signed(32))
    new: Out(signed(32))

    def elaborate(self, platform):
        m = Module()
        with m.If(self.replace):
            m.d.comb += self.new.eq(self.val)
        with m.Elif(self.mode == GemmMode.MAX):
            m.d.comb += self.new.eq(Mux(self.val > self.old, self.val, self.old))
        with m.Else():
            m.d.comb += self.new.eq(self.old + self.val)
        return m


class DotProductFp32(wiring.Component):
    """Dot product of two binary32 vectors: rounded products, then a balanced tree of rounded additions.

    The tree adds neighbours in lane order, ``((p0 + p1) + (p2 + p3)) + ...``; with an odd number of terms the last
    one passes up a level unchanged (delayed to stay aligned). Fully pipelined, one dot product per cycle.

    Parameters
    ----------
    lanes : int
        Vector length (a positive integer).

    Members
    -------
    a, b : In(data.ArrayLayout(unsigned(32), lanes))
        Operands (binary32 words).
    sum : Out(unsigned(32))
        The dot product, :attr:`LATENCY` cycles after the operands.
    """

    def __init__(self, *, lanes: int):
        _check_lanes(lanes)
        self._lanes = lanes
        #: Cycles from the operands to ``sum``: one multiplier and ``ceil(log2(lanes))`` adders.
        self.LATENCY = self.latency_for(lanes)
        vector = data.ArrayLayout(unsigned(32), lanes)
        super().__init__({"a": In(vector), "b": In(vector), "sum": Out(unsigned(32))})

    @property
    def lanes(self) -> int:
        """Vector length."""
        return self._lanes

    @staticmethod
    def latency_for(lanes: int) -> int:
        """:attr:`LATENCY` of a dot product of ``lanes`` elements."""
        return FpMul.LATENCY + FpTreeSum.latency_for(lanes)

    def elaborate(self, platform):
        m = Module()
        m.submodules.tree = tree = FpTreeSum(terms=self._lanes)
        for i in range(self._lanes):
            mul = FpMul()
            m.submodules[f"mul{i}"] = mul
            m.d.comb += [mul.a.eq(self.a[i]), mul.b.eq(self.b[i]), tree.t[i].eq(mul.y)]
        m.d.comb += self.sum.eq(tree.sum)
        return m


class AccumulatorUpdateFp32(wiring.Component):
    """Combine a binary32 accumulator lane with a new value: add (MAC, SUM), maximum (MAX), or replace.

    Pipelined like its adder (:class:`~.fp32.FpAdd`); the maximum (NaN if either is NaN, ``-0 < +0``) and the
    replacement are delayed to the same latency. ``mode`` and ``replace`` travel with the operands.

    Members
    -------
    mode : In(GemmMode)
        MAC and SUM add, MAX takes the maximum.
    replace : In(1)
        Ignore ``old`` and output ``val`` unchanged (the first reduction step of an ``overwrite`` GEMM, POST).
    old, val : In(unsigned(32))
        Accumulator value and the array's new value (binary32 words).
    new : Out(unsigned(32))
        Result, :attr:`LATENCY` cycles after the inputs.
    """

    #: Cycles from the inputs to ``new``.
    LATENCY = FpAdd.LATENCY

    mode: In(GemmMode)
    replace: In(1)
    old: In(unsigned(32))
    val: In(unsigned(32))
    new: Out(unsigned(32))

    def elaborate(self, platform):
        m = Module()
        m.submodules.add = add = FpAdd()
        m.d.comb += [add.a.eq(self.old), add.b.eq(self.val)]
        largest = Signal(32)
        m.d.comb += largest.eq(f32_max(self.old, self.val))
        largest = _delay(m, largest, self.LATENCY, "max")
        val = _delay(m, self.val, self.LATENCY, "val")
        replace = _delay(m, self.replace, self.LATENCY, "replace")
        is_max = Signal()
        m.d.comb += is_max.eq(self.mode == GemmMode.MAX)
        is_max = _delay(m, is_max, self.LATENCY, "is_max")
        m.d.comb += self.new.eq(Mux(replace, val, Mux(is_max, largest, add.y)))
        return m


def dot_product_class(config: ProcessorConfig) -> type:
    """:class:`DotProductInt8` or :class:`DotProductFp32`, by the configuration's dtype."""
    return DotProductInt8 if config.dtype == "int8" else DotProductFp32


def accumulator_update_class(config: ProcessorConfig) -> type:
    """:class:`AccumulatorUpdateInt32` or :class:`AccumulatorUpdateFp32`, by the configuration's dtype."""
    return AccumulatorUpdateInt32 if config.dtype == "int8" else AccumulatorUpdateFp32


class MacArray(wiring.Component):
    """The conv array: ``conv_oc_lanes`` dot products of ``conv_ic_lanes`` pairs, and the MAX/SUM lanes.

    Output lane ``c`` is, :attr:`LATENCY` cycles after the operands:

    * MAC: ``sum_i inp[i] * wgt[c][i]`` (int8: exact in int32; fp32: :class:`DotProductFp32`);
    * MAX: ``inp[c]`` for ``c < conv_ic_lanes``, else 0 (fp32: subnormals flushed, NaN canonical);
    * SUM: ``inp[c] * imm`` for ``c < conv_ic_lanes``, else 0 (fp32: ``imm`` converted to binary32 exactly, the
      product rounded).

    Parameters
    ----------
    config : ProcessorConfig
        Lanes and dtype.

    Members
    -------
    inp : In(input entry layout)
        One input buffer entry.
    wgt : In(weight entry layout)
        One weight buffer entry, ``[co][ci]``.
    mode : In(GemmMode)
        Held constant during an instruction.
    imm : In(signed(16))
        SUM-mode scale, held constant during an instruction.
    val : Out(accumulator entry layout)
        The lane values (int32, or binary32 words).
    """

    def __init__(self, *, config: ProcessorConfig):
        _check_config(config, "MacArray")
        self._config = config
        self._dot = dot_product_class(config)
        #: Cycles from the operands to ``val`` (the dot product's latency).
        self.LATENCY = self._dot.latency_for(config.conv_ic_lanes)
        super().__init__({
            "inp": In(input_entry_layout(config)),
            "wgt": In(weight_entry_layout(config)),
            "mode": In(GemmMode),
            "imm": In(signed(16)),
            "val": Out(acc_entry_layout(config)),
        })

    def elaborate(self, platform):
        m = Module()
        ci, co = self._config.conv_ic_lanes, self._config.conv_oc_lanes
        dots = []
        for c in range(co):
            dot = self._dot(lanes=ci)
            m.submodules[f"dot{c}"] = dot
            m.d.comb += [dot.a.eq(self.inp), dot.b.eq(self.wgt[c])]
            dots.append(dot.sum)
        lane_vals = []
        if self._config.dtype == "int8":
            # MAX and SUM lanes: one small 8 x 16 multiplier per input lane, delayed to the dot products' latency.
            for c in range(ci):
                stage = [Signal(signed(24), name=f"lane{c}_s{k}") for k in range(self.LATENCY)]
                m.d.sync += stage[0].eq(Mux(self.mode == GemmMode.SUM, self.inp[c] * self.imm, self.inp[c]))
                for k in range(1, self.LATENCY):
                    m.d.sync += stage[k].eq(stage[k - 1])
                lane_vals.append(stage[-1])
        else:
            # MAX lanes pass the flushed input; SUM lanes multiply by the immediate (one FpMul per input lane).
            scale = Signal(32)
            m.d.comb += scale.eq(f32_from_int16(self.imm))
            is_sum = _delay(m, self.mode == GemmMode.SUM, self.LATENCY, "is_sum")
            for c in range(ci):
                mul = FpMul()
                m.submodules[f"scale{c}"] = mul
                m.d.comb += [mul.a.eq(self.inp[c]), mul.b.eq(scale)]
                flushed = Signal(32, name=f"flushed{c}")
                m.d.comb += flushed.eq(f32_flush(self.inp[c]))
                product = _delay(m, mul.y, self.LATENCY - FpMul.LATENCY, f"product{c}")
                passed = _delay(m, flushed, self.LATENCY, f"passed{c}")
                lane_vals.append(Mux(is_sum, product, passed))
        for c in range(co):
            other = lane_vals[c] if c < ci else 0
            m.d.comb += self.val[c].eq(Mux(self.mode == GemmMode.MAC, dots[c], other))
        return m


@dataclass(frozen=True)
class EngineTiming:
    """Latencies of the compute engine's pipeline for one configuration, and the cycle count of an instruction.

    Attributes
    ----------
    array : int
        MacArray latency (operands to lane values).
    update : int
        Accumulator update latency (0 for int8: combinational).
    post : int
        PostProcessor latency.
    """

    array: int
    update: int
    post: int

    @property
    def acc_write(self) -> int:
        """Issue to accumulator write (stage W)."""
        return 1 + self.array + 1 + self.update

    @property
    def out_write(self) -> int:
        """Issue to output buffer write."""
        return self.acc_write + self.post

    @property
    def reuse_distance(self) -> int:
        """Fewest cycles between the issues of two steps that update the same accumulator entry."""
        return self.update + 1

    def gap(self, spatial: int) -> int:
        """Cycles the engine waits at each reduction-step boundary of a GEMM with ``spatial = s0*s1`` steps."""
        return max(0, self.reuse_distance - spatial)

    def cycles(self, steps: int, *, writes_outputs: bool, spatial: int | None = None) -> int:
        """Cycles of an instruction, from its command handshake to the earliest handshake of the next one.

        Parameters
        ----------
        steps : int
            ``r0*r1*r2*s0*s1`` for GEMM, ``n`` for POST.
        writes_outputs : bool
            True for POST and for a ``finalize`` GEMM (the last writes go through the post-processor).
        spatial : int, optional
            ``s0*s1`` of a GEMM (default: ``steps``, i.e. one reduction step, or POST).
        """
        spatial = steps if spatial is None else spatial
        waits = (steps // spatial - 1) * self.gap(spatial)
        return steps + waits + 1 + (self.out_write if writes_outputs else self.acc_write)


class ComputeEngine(wiring.Component):
    """Executes GEMM and POST instructions, one at a time, one step per cycle.

    Parameters
    ----------
    config : ProcessorConfig
        The processor configuration (int8 or fp32 arithmetic).

    Members
    -------
    cmd : In(stream.Signature(256))
        The raw instruction word (GEMM or POST; other opcodes are accepted and ignored). ``ready`` is ``~busy``.
        Fields are assumed legal (the instruction checker rejects illegal ones before dispatch).
    busy : Out(1)
        High from the cycle after the command handshake until the cycle of its last buffer write, inclusive.
    mac_active : Out(1)
        High in each cycle a MAC-mode GEMM step enters the array (for the MAC_BUSY counter).
    inp_rd : In(ReadPort.Signature(input))
        Input buffer read port (synchronous, 1 cycle).
    wgt_rd : In(ReadPort.Signature(weight))
        Weight buffer read port.
    acc_rd : In(ReadPort.Signature(acc))
        Accumulator read port (transparent or not, both work).
    acc_wr : In(WritePort.Signature(acc, granularity=32))
        Accumulator write port; the engine always writes whole entries (all ``en`` bits together).
    par_rd : In(ReadPort.Signature(param))
        Parameter buffer read port.
    out_wr : In(WritePort.Signature(output))
        Output buffer write port.

    The ``In(...)`` port members are flipped memory port signatures: connect them to the memories' ports with
    ``wiring.connect(m, engine.inp_rd, input_memory.read_port())`` etc.
    """

    def __init__(self, *, config: ProcessorConfig):
        _check_config(config, "ComputeEngine")
        self._config = config
        #: The pipeline's latencies (:class:`EngineTiming`).
        self.timing = self.timing_of(config)
        self._isa = InstructionSet(config)
        geo = {name: buffer_geometry(config, name) for name in ("input", "weight", "param", "acc", "output")}
        super().__init__({
            "cmd": In(stream.Signature(INSTRUCTION_BITS)),
            "busy": Out(1),
            "mac_active": Out(1),
            "inp_rd": In(geo["input"].read_port_signature()),
            "wgt_rd": In(geo["weight"].read_port_signature()),
            "acc_rd": In(geo["acc"].read_port_signature()),
            "acc_wr": In(geo["acc"].write_port_signature()),
            "par_rd": In(geo["param"].read_port_signature()),
            "out_wr": In(geo["output"].write_port_signature()),
        })

    @property
    def config(self) -> ProcessorConfig:
        """The processor configuration."""
        return self._config

    @staticmethod
    def timing_of(config: ProcessorConfig) -> EngineTiming:
        """The pipeline latencies of a configuration."""
        _check_config(config, "ComputeEngine.timing_of")
        return EngineTiming(array=dot_product_class(config).latency_for(config.conv_ic_lanes),
                            update=accumulator_update_class(config).LATENCY,
                            post=PostProcessor.lane_class(config).LATENCY)

    @classmethod
    def cycles(cls, steps: int, *, writes_outputs: bool, config: ProcessorConfig | None = None,
               spatial: int | None = None) -> int:
        """Cycles of an instruction, from its command handshake to the earliest handshake of the next one.

        Parameters
        ----------
        steps : int
            ``r0*r1*r2*s0*s1`` for GEMM, ``n`` for POST.
        writes_outputs : bool
            True for POST and for a ``finalize`` GEMM (the last writes go through the post-processor).
        config : ProcessorConfig, optional
            The configuration (default: an int8 one; the latencies do not depend on its lanes).
        spatial : int, optional
            ``s0*s1`` of a GEMM, for the waits of the fp32 engine (see :meth:`EngineTiming.cycles`).

        Returns
        -------
        int
            int8: ``steps + 9`` when writing outputs, ``steps + 5`` otherwise (``busy`` is high for one cycle less).
        """
        timing = cls.timing_of(config or ProcessorConfig())
        return timing.cycles(steps, writes_outputs=writes_outputs, spatial=spatial)

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        co = cfg.conv_oc_lanes
        inp_bits, wgt_bits, acc_bits, par_bits = (cfg.input_addr_bits, cfg.weight_addr_bits, cfg.acc_addr_bits,
                                                  cfg.param_addr_bits)
        gemm = data.View(self._isa.layout(Opcode.GEMM), self.cmd.payload)
        post = data.View(self._isa.layout(Opcode.POST), self.cmd.payload)

        # ------------------------------------------------------------------ instruction registers
        mode = Signal(GemmMode)
        overwrite, finalize, is_post, param_inc = Signal(), Signal(), Signal(), Signal()
        imm = Signal(signed(16))
        acc_base, out_base = Signal(acc_bits), Signal(acc_bits)
        # Loop levels r0, r1, r2, s0, s1 (outer to inner). POST runs as r = 1, s0 = 1, s1 = n.
        count_bits = [EXTENT_BITS] * 3 + [max(EXTENT_BITS, acc_bits + 1)] * 2
        last = [Signal(w, name=f"last{k}") for k, w in enumerate(count_bits)]      # extent - 1
        count = [Signal(w, name=f"count{k}") for k, w in enumerate(count_bits)]
        stride = [Signal(inp_bits, name=f"stride{k}") for k in range(5)]
        # level_addr[k]: input address of the current iteration of level k with all inner counters at 0;
        # level_addr[4] is the address of the step being issued.
        level_addr = [Signal(inp_bits, name=f"level_addr{k}") for k in range(5)]
        wgt_addr = Signal(wgt_bits)
        acc_addr, out_addr = Signal(acc_bits), Signal(acc_bits)
        par_addr = Signal(par_bits)
        first = Signal()     # in the first reduction step
        running = Signal()   # issuing steps
        # Waits at reduction-step boundaries, so two updates of one accumulator entry are timing.reuse_distance
        # cycles apart (never needed when the update is combinational).
        waits = self.timing.reuse_distance > 1
        gap = Signal(range(self.timing.reuse_distance + 1))    # cycles to wait at each boundary
        hold = Signal(range(self.timing.reuse_distance + 1))   # cycles still to wait
        issue = Signal()     # a step issues this cycle

        # ------------------------------------------------------------------ the step pipeline
        step_layout = data.StructLayout({
            "valid": 1, "acc_addr": acc_bits, "out_addr": acc_bits, "par_addr": par_bits,
            "replace": 1,    # first reduction step of an overwrite GEMM
            "write_acc": 1,  # GEMM (POST leaves the accumulators alone)
            "emit": 1,       # goes through the post-processor into the output buffer
        })
        timing = self.timing
        pipe = [Signal(step_layout, name=f"pipe{k}") for k in range(timing.array + 1)]
        stage_a = pipe[-1]       # combine stage; its predecessor issues the accumulator read
        # the steps inside the update unit (none for int8), then stage W
        updating = [Signal(step_layout, name=f"upd{k}") for k in range(timing.update)]
        stage_w = Signal(step_layout)   # accumulator write, post-processor input
        before_w = updating[-1] if updating else stage_a
        w_data = Signal(acc_entry_layout(cfg))
        w2_data = Signal(acc_entry_layout(cfg))          # what stage W wrote one cycle ago
        fwd_w, fwd_w2 = Signal(), Signal()   # stage A takes its old value from W / W2

        m.submodules.array = array = MacArray(config=cfg)
        m.submodules.post = postproc = PostProcessor(config=cfg)

        pipe_busy = stage_w.valid
        for stage in pipe + updating:
            pipe_busy = pipe_busy | stage.valid
        busy = running | pipe_busy | postproc.busy
        m.d.comb += [self.busy.eq(busy), self.cmd.ready.eq(~busy)]

        # ------------------------------------------------------------------ accept a command
        with m.If(self.cmd.valid & self.cmd.ready):
            with m.Switch(gemm.opcode):
                with m.Case(Opcode.GEMM):
                    m.d.sync += [
                        mode.eq(gemm.mode), overwrite.eq(gemm.overwrite), finalize.eq(gemm.finalize),
                        is_post.eq(0), param_inc.eq(0), imm.eq(gemm.imm),
                        acc_base.eq(gemm.acc_base), out_base.eq(gemm.out_base),
                        acc_addr.eq(gemm.acc_base), out_addr.eq(gemm.out_base), par_addr.eq(gemm.param_addr),
                        wgt_addr.eq(gemm.wgt_base), first.eq(1), running.eq(1),
                    ]
                    if waits:
                        # s0*s1 < distance only matters for small extents: multiply them saturated at the distance
                        distance = self.timing.reuse_distance
                        s0, s1 = (Mux(e >= distance, distance, e[:distance.bit_length()]) for e in (gemm.s0, gemm.s1))
                        spatial = s0 * s1
                        m.d.sync += [gap.eq(Mux(spatial < distance, distance - spatial, 0)), hold.eq(0)]
                    for k, (n, s) in enumerate((("r0", "ri0"), ("r1", "ri1"), ("r2", "ri2"), ("s0", "si0"),
                                                ("s1", "si1"))):
                        m.d.sync += [last[k].eq(gemm[n] - 1), stride[k].eq(gemm[s]), count[k].eq(0),
                                     level_addr[k].eq(gemm.inp_base)]
                with m.Case(Opcode.POST):
                    m.d.sync += [
                        overwrite.eq(0), finalize.eq(1), is_post.eq(1), param_inc.eq(post.param_inc),
                        acc_base.eq(post.acc_base), out_base.eq(post.out_base),
                        acc_addr.eq(post.acc_base), out_addr.eq(post.out_base), par_addr.eq(post.param_addr),
                        first.eq(1), running.eq(1),
                    ]
                    if waits:
                        m.d.sync += [gap.eq(0), hold.eq(0)]
                    for k in range(5):
                        m.d.sync += [last[k].eq(post.n - 1 if k == 4 else 0), count[k].eq(0)]

        # ------------------------------------------------------------------ issue: one step per cycle
        at_last = [Signal(name=f"at_last{k}") for k in range(5)]
        next_addr = [Signal(inp_bits, name=f"next_addr{k}") for k in range(5)]
        m.d.comb += [at_last[k].eq(count[k] == last[k]) for k in range(5)]
        m.d.comb += [next_addr[k].eq(level_addr[k] + stride[k]) for k in range(5)]
        last_reduction = at_last[0] & at_last[1] & at_last[2]

        m.d.comb += issue.eq(running & (hold == 0) if waits else running)
        m.d.comb += [
            self.inp_rd.addr.eq(level_addr[4]), self.inp_rd.en.eq(issue & ~is_post),
            self.wgt_rd.addr.eq(wgt_addr), self.wgt_rd.en.eq(issue & ~is_post & (mode == GemmMode.MAC)),
            self.mac_active.eq(issue & ~is_post & (mode == GemmMode.MAC)),
        ]
        m.d.sync += [
            pipe[0].valid.eq(issue), pipe[0].acc_addr.eq(acc_addr), pipe[0].out_addr.eq(out_addr),
            pipe[0].par_addr.eq(par_addr), pipe[0].replace.eq(first & overwrite), pipe[0].write_acc.eq(~is_post),
            pipe[0].emit.eq(is_post | (finalize & last_reduction)),
        ]

        def advance(level: int) -> None:
            # Step loop `level`; all inner loops restart at the new address.
            m.d.sync += [count[level].eq(count[level] + 1), level_addr[level].eq(next_addr[level])]
            for k in range(level + 1, 5):
                m.d.sync += [count[k].eq(0), level_addr[k].eq(next_addr[level])]
            if level >= 3:   # next spatial position
                m.d.sync += [acc_addr.eq(acc_addr + 1), out_addr.eq(out_addr + 1)]
            else:            # next reduction step: the spatial tile starts over
                m.d.sync += [acc_addr.eq(acc_base), out_addr.eq(out_base), wgt_addr.eq(wgt_addr + 1), first.eq(0)]
                if waits:
                    m.d.sync += hold.eq(gap)

        if waits:
            with m.If(hold != 0):
                m.d.sync += hold.eq(hold - 1)
        with m.If(issue):
            with m.If(param_inc):
                m.d.sync += par_addr.eq(par_addr + 1)
            with m.If(~at_last[4]):
                advance(4)
            with m.Elif(~at_last[3]):
                advance(3)
            with m.Elif(~at_last[2]):
                advance(2)
            with m.Elif(~at_last[1]):
                advance(1)
            with m.Elif(~at_last[0]):
                advance(0)
            with m.Else():
                m.d.sync += running.eq(0)

        # ------------------------------------------------------------------ the array and the accumulator read
        m.d.comb += [
            array.inp.eq(self.inp_rd.data), array.wgt.eq(self.wgt_rd.data), array.mode.eq(mode), array.imm.eq(imm),
        ]
        for k in range(1, len(pipe)):
            m.d.sync += pipe[k].eq(pipe[k - 1])
        before_a = pipe[-2]
        m.d.comb += [self.acc_rd.addr.eq(before_a.acc_addr), self.acc_rd.en.eq(before_a.valid)]
        # Forwarding, decided one cycle ahead: the step now before W moves to W, the step now in W moves to W2.
        m.d.sync += [
            fwd_w.eq(before_w.valid & before_w.write_acc & (before_w.acc_addr == before_a.acc_addr)),
            fwd_w2.eq(stage_w.valid & stage_w.write_acc & (stage_w.acc_addr == before_a.acc_addr)),
        ]

        # ------------------------------------------------------------------ stage A: combine
        read_data = data.View(acc_entry_layout(cfg), self.acc_rd.data)
        old = Signal(acc_entry_layout(cfg))
        new = Signal(acc_entry_layout(cfg))
        with m.If(fwd_w):
            m.d.comb += old.eq(w_data)
        with m.Elif(fwd_w2):
            m.d.comb += old.eq(w2_data)
        with m.Else():
            m.d.comb += old.eq(read_data)
        update_class = accumulator_update_class(cfg)
        for c in range(co):
            update = update_class()
            m.submodules[f"update{c}"] = update
            # POST passes the old value through unchanged (replace with itself)
            m.d.comb += [update.mode.eq(mode), update.replace.eq(stage_a.replace | is_post), update.old.eq(old[c]),
                         update.val.eq(Mux(is_post, old[c], array.val[c])), new[c].eq(update.new)]
        chain = [stage_a] + updating
        for k in range(1, len(chain)):
            m.d.sync += chain[k].eq(chain[k - 1])
        m.d.comb += [self.par_rd.addr.eq(before_w.par_addr), self.par_rd.en.eq(before_w.valid & before_w.emit)]
        m.d.sync += [stage_w.eq(before_w), w_data.eq(new)]

        # ------------------------------------------------------------------ stage W: write back, post-process
        write = stage_w.valid & stage_w.write_acc
        m.d.comb += [
            self.acc_wr.addr.eq(stage_w.acc_addr), self.acc_wr.data.eq(w_data),
            self.acc_wr.en.eq(Cat(*(write for _ in range(len(self.acc_wr.en))))),
            postproc.i.valid.eq(stage_w.valid & stage_w.emit), postproc.i.payload.acc.eq(w_data),
            postproc.i.payload.params.eq(self.par_rd.data), postproc.i.payload.addr.eq(stage_w.out_addr),
        ]
        m.d.sync += w2_data.eq(w_data)

        m.d.comb += [
            self.out_wr.addr.eq(postproc.o.payload.addr), self.out_wr.data.eq(postproc.o.payload.data),
            self.out_wr.en.eq(postproc.o.valid),
        ]
        return m
