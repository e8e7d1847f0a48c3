"""Post-processing of accumulators into outputs: bias, scaling, activation and clamp, in int8 or binary32.

int8, bit-exact with ``dlproc.sim.golden.postprocess_int8``, per lane ``c``::

    v = wrap32(acc + bias)
    m = mult_pos if v >= 0 else mult_neg          # int16
    t = v * m                                      # exact, 48 bits signed
    if shift > 0: t = (t + 2**(shift-1)) >> shift  # arithmetic: round half up
    y = min(max(t, lo), hi)                        # int8 lo / hi

The rounding shift uses ``(t + 2**(s-1)) >> s == ((t >> (s-1)) + 1) >> 1`` (both are floor divisions), so it
needs one 48-bit adder instead of a 64-bit one.

fp32, bit-exact with ``dlproc.sim.golden.postprocess_fp32`` (binary32 operations of ``processor/fp32.py``)::

    v = acc + bias                                 # rounded
    m = mult_neg if v < 0 else mult_pos            # -0 and NaN take mult_pos
    y = v * m                                      # rounded
    y = min(max(y, lo), hi)                        # on the numeric order with -0 < +0; a NaN y stays NaN

The two lane components, :class:`PostLaneInt8` and :class:`PostLaneFp32`, have the same role and a ``LATENCY``
attribute; :class:`PostProcessor` instantiates the one of the configuration's dtype.
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .buffers import CONTROL_WORD_LAYOUT, acc_entry_layout, output_entry_layout, param_entry_layout
from .config import ProcessorConfig
from .fp32 import FpAdd, FpMul, f32_is_nan, f32_order_key

__all__ = ["PostLaneInt8", "PostLaneFp32", "PostProcessor"]


class PostLaneInt8(wiring.Component):
    """One lane of int8 post-processing, fully pipelined (one value per cycle, :attr:`LATENCY` cycles).

    The lane has no valid signal: the enclosing :class:`PostProcessor` carries validity and addresses.
    :class:`PostLaneFp32` is its binary32 counterpart.

    Members
    -------
    acc : In(signed(32))
        Accumulator value.
    bias : In(signed(32))
        Bias word.
    mult_pos, mult_neg : In(signed(16))
        Multipliers for ``v >= 0`` and ``v < 0``.
    control : In(CONTROL_WORD_LAYOUT)
        Shift (0..63), lo and hi (int8).
    y : Out(signed(8))
        Result, :attr:`LATENCY` cycles after the inputs.
    """

    #: Cycles from the inputs to ``y``.
    LATENCY = 4

    acc: In(signed(32))
    bias: In(signed(32))
    mult_pos: In(signed(16))
    mult_neg: In(signed(16))
    control: In(CONTROL_WORD_LAYOUT)
    y: Out(signed(8))

    def elaborate(self, platform):
        m = Module()

        # Stage 1: bias add with int32 wrap.
        v = Signal(signed(32))
        mp1, mn1 = Signal(signed(16)), Signal(signed(16))
        ctl1 = Signal(CONTROL_WORD_LAYOUT)
        m.d.sync += [v.eq(self.acc + self.bias), mp1.eq(self.mult_pos), mn1.eq(self.mult_neg),
                     ctl1.eq(self.control)]

        # Stage 2: select the multiplier by the sign of v; 32 x 16 signed product (exact in 48 bits).
        t = Signal(signed(48))
        ctl2 = Signal(CONTROL_WORD_LAYOUT)
        m.d.sync += [t.eq(v * Mux(v[31], mn1, mp1)), ctl2.eq(ctl1)]

        # Stage 3: round half up and shift: ((t >> (s-1)) + 1) >> 1 for s > 0, t for s == 0.
        u = Signal(signed(48))
        rounded = Signal(signed(49))
        r = Signal(signed(48))
        lo3, hi3 = Signal(signed(8)), Signal(signed(8))
        m.d.comb += [u.eq(t >> (ctl2.shift - 1)[:6]), rounded.eq(u + 1)]
        m.d.sync += [r.eq(Mux(ctl2.shift == 0, t, rounded >> 1)), lo3.eq(ctl2.lo), hi3.eq(ctl2.hi)]

        # Stage 4: clamp, lo first then hi (as min(max(t, lo), hi), so hi wins when lo > hi).
        low_clamped = Signal(signed(48))
        m.d.comb += low_clamped.eq(Mux(r < lo3, lo3, r))
        m.d.sync += self.y.eq(Mux(low_clamped > hi3, hi3, low_clamped))
        return m


class PostLaneFp32(wiring.Component):
    """One lane of binary32 post-processing, fully pipelined (one value per cycle, :attr:`LATENCY` cycles).

    Stages: the bias addition (:class:`~.fp32.FpAdd`), the multiplication by ``mult_pos`` or ``mult_neg``
    (:class:`~.fp32.FpMul`, the choice made on the sign of the sum as it enters), then one cycle for the clamp.

    Members
    -------
    acc, bias, mult_pos, mult_neg, lo, hi : In(32)
        binary32 words: accumulator, bias, multipliers for ``v >= 0`` (and NaN) and ``v < 0``, clamp bounds.
    y : Out(32)
        Result, :attr:`LATENCY` cycles after the inputs.
    """

    #: Cycles from the inputs to ``y``.
    LATENCY = FpAdd.LATENCY + FpMul.LATENCY + 1

    acc: In(32)
    bias: In(32)
    mult_pos: In(32)
    mult_neg: In(32)
    lo: In(32)
    hi: In(32)
    y: Out(32)

    def elaborate(self, platform):
        m = Module()

        def delay(value, cycles: int, name: str):
            for k in range(cycles):
                reg = Signal(32, name=f"{name}{k}")
                m.d.sync += reg.eq(value)
                value = reg
            return value

        m.submodules.add = add = FpAdd()
        m.d.comb += [add.a.eq(self.acc), add.b.eq(self.bias)]
        mult_pos = delay(self.mult_pos, FpAdd.LATENCY, "mult_pos")
        mult_neg = delay(self.mult_neg, FpAdd.LATENCY, "mult_neg")
        v = add.y   # canonical: a NaN is positive, a zero has a zero exponent field
        negative = v[31] & (v[23:31] != 0)
        m.submodules.mul = mul = FpMul()
        m.d.comb += [mul.a.eq(v), mul.b.eq(Mux(negative, mult_neg, mult_pos))]
        lo = delay(self.lo, FpAdd.LATENCY + FpMul.LATENCY, "lo")
        hi = delay(self.hi, FpAdd.LATENCY + FpMul.LATENCY, "hi")

        # Clamp, lo first then hi (so hi wins when lo > hi), as in the int8 lane.
        y = mul.y
        low_clamped = Signal(32)
        m.d.comb += low_clamped.eq(Mux(f32_order_key(y) < f32_order_key(lo), lo, y))
        clamped = Mux(f32_order_key(low_clamped) > f32_order_key(hi), hi, low_clamped)
        m.d.sync += self.y.eq(Mux(f32_is_nan(y), y, clamped))
        return m


class PostProcessor(wiring.Component):
    """Post-processing of one accumulator entry per cycle, ``conv_oc_lanes`` lanes wide, fully pipelined.

    A valid-tagged pipeline without back-pressure: an entry presented on ``i`` (with ``i.valid``) appears on
    ``o`` exactly :attr:`LATENCY` cycles later, with the address it came with.

    Parameters
    ----------
    config : ProcessorConfig
        The processor configuration (lanes, accumulator address width, dtype: :class:`PostLaneInt8` or
        :class:`PostLaneFp32` lanes).

    Members
    -------
    i : In(stream.Signature(input_layout, always_ready=True))
        ``payload.acc`` (acc entry layout), ``payload.params`` (param entry layout) and ``payload.addr``
        (output buffer address, ``acc_addr_bits`` wide).
    o : Out(stream.Signature(output_layout, always_ready=True))
        ``payload.data`` (output entry layout) and ``payload.addr``; drive the output buffer's write port with
        ``addr``, ``data`` and ``en = o.valid``.
    busy : Out(1)
        An entry is in the pipeline.
    """

    def __init__(self, *, config: ProcessorConfig):
        if not isinstance(config, ProcessorConfig):
            raise TypeError(f"config must be a ProcessorConfig, not {config!r}")
        self._config = config
        self._lane = self.lane_class(config)
        #: Cycles from ``i`` to ``o`` (the lane's latency: 4 for int8, 10 for fp32).
        self.LATENCY = self._lane.LATENCY
        addr = unsigned(config.acc_addr_bits)
        self._input_layout = data.StructLayout({
            "acc": acc_entry_layout(config), "params": param_entry_layout(config), "addr": addr})
        self._output_layout = data.StructLayout({"data": output_entry_layout(config), "addr": addr})
        super().__init__({
            "i": In(stream.Signature(self._input_layout, always_ready=True)),
            "o": Out(stream.Signature(self._output_layout, always_ready=True)),
            "busy": Out(1),
        })

    @staticmethod
    def lane_class(config: ProcessorConfig) -> type:
        """The lane component of the configuration's dtype."""
        return PostLaneInt8 if config.dtype == "int8" else PostLaneFp32

    @property
    def config(self) -> ProcessorConfig:
        """The processor configuration."""
        return self._config

    @property
    def input_layout(self) -> data.StructLayout:
        """Payload layout of ``i``."""
        return self._input_layout

    @property
    def output_layout(self) -> data.StructLayout:
        """Payload layout of ``o``."""
        return self._output_layout

    def elaborate(self, platform):
        m = Module()
        params = self.i.payload.params
        for c in range(self._config.conv_oc_lanes):
            lane = self._lane()
            m.submodules[f"lane{c}"] = lane
            m.d.comb += [lane.acc.eq(self.i.payload.acc[c]), lane.bias.eq(params.bias[c]),
                         self.o.payload.data[c].eq(lane.y)]
            if self._config.dtype == "int8":
                m.d.comb += [lane.mult_pos.eq(params.mult_pos[c].value), lane.mult_neg.eq(params.mult_neg[c].value),
                             lane.control.eq(params.control[c])]
            else:
                # clamp words in lane pairs: the even lane of the pair holds lo, the odd lane hi
                m.d.comb += [lane.mult_pos.eq(params.mult_pos[c]), lane.mult_neg.eq(params.mult_neg[c]),
                             lane.lo.eq(params.clamp[c & ~1]), lane.hi.eq(params.clamp[c | 1])]

        # The tag pipeline: validity and output address travel beside the lanes.
        valid = [Signal(name=f"valid{k}") for k in range(self.LATENCY)]
        addr = [Signal(unsigned(self._config.acc_addr_bits), name=f"addr{k}") for k in range(self.LATENCY)]
        m.d.sync += [valid[0].eq(self.i.valid), addr[0].eq(self.i.payload.addr)]
        for k in range(1, self.LATENCY):
            m.d.sync += [valid[k].eq(valid[k - 1]), addr[k].eq(addr[k - 1])]
        busy = valid[0]
        for k in range(1, self.LATENCY):
            busy = busy | valid[k]
        m.d.comb += [self.o.valid.eq(valid[-1]), self.o.payload.addr.eq(addr[-1]), self.busy.eq(busy)]
        return m
