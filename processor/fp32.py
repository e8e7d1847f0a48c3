"""IEEE-754 binary32 arithmetic for the fp32 processor: a pipelined multiplier and adder, and comparison helpers.

Every unit computes exactly what ``docs/numerics.md`` ("fp32 processor") defines and what the golden model's numpy
functions (``dlproc.sim.golden.f32_add``, ``f32_mul``, ``f32_max``) compute:

* **rounding**: round to nearest, ties to even, on the exact result (a single rounding per operation);
* **subnormals**: flushed to zero, on inputs and outputs (keeping the sign). An input with a zero exponent field
  is a signed zero; a result whose magnitude, rounded to 24 bits with an unbounded exponent, is below ``2**-126``
  becomes a signed zero ("tininess after rounding");
* **overflow**: rounds to infinity (the sign kept), as round-to-nearest does;
* **zeros**: ``x + (-x) = +0``; ``(-0) + (-0) = -0``; ``0 * y`` is a zero with the sign ``sign(0) ^ sign(y)``;
* **NaN**: any NaN input, ``inf - inf`` and ``0 * inf`` give the canonical quiet NaN ``0x7FC00000`` (so outputs
  never carry payloads or a sign).

The units are fully pipelined (one operation per cycle, :attr:`LATENCY` cycles) with registers between the
stages, so the 24 x 24 mantissa product maps to two DSP48E2 (with their input, multiplier and output registers) and
no stage holds more than one wide adder or shifter. They have no valid or enable signal: the enclosing design
carries validity; wrap a unit in :class:`~amaranth.hdl.EnableInserter` to stall it.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["FpAdd", "FpMul", "FpTreeSum", "CANONICAL_NAN", "NEG_ZERO", "f32_is_nan", "f32_flush", "f32_order_key",
           "f32_max", "f32_from_int16"]

#: The NaN every unit outputs (quiet, positive, zero payload).
CANONICAL_NAN = 0x7FC0_0000
#: ``-0.0``: the identity of binary32 addition under round-to-nearest (``x + (-0) == x`` for every ``x``).
NEG_ZERO = 0x8000_0000
_EXP_ONES = 0xFF


def f32_is_nan(v):
    """Whether the binary32 word ``v`` is a NaN (exponent all ones, fraction not zero)."""
    return (v[23:31] == _EXP_ONES) & v[:23].any()


def f32_flush(v):
    """``v`` with a subnormal flushed to a signed zero and a NaN made canonical (combinational)."""
    return Mux(f32_is_nan(v), CANONICAL_NAN, Mux(v[23:31] == 0, Cat(Const(0, 31), v[31]), v))


def f32_order_key(v):
    """An unsigned 32-bit key that orders binary32 words numerically, with ``-0 < +0`` (combinational).

    Negative words are inverted, positive ones get their sign bit set; NaNs must be handled separately.
    """
    return Mux(v[31], ~v, v | 0x8000_0000)[:32]


def f32_max(a, b):
    """``max(a, b)`` of two binary32 words after :func:`f32_flush`; NaN if either is NaN (combinational)."""
    fa, fb = f32_flush(a), f32_flush(b)
    either_nan = f32_is_nan(a) | f32_is_nan(b)
    return Mux(either_nan, CANONICAL_NAN, Mux(f32_order_key(fb) > f32_order_key(fa), fb, fa))


def f32_from_int16(value):
    """The binary32 word of a signed 16-bit integer (always exact; combinational)."""
    sign = value[15]
    mag = Mux(sign, -value, value)[:16]   # |-32768| = 32768 fits 16 unsigned bits
    zeros, count = _leading_zeros(mag, 16)
    norm = (mag << count)[:16]            # hidden bit in bit 15
    exp = 127 + 15 - count
    return Mux(zeros, 0, Cat(Const(0, 8), norm[:15], exp[:8], sign))


def _leading_zeros(value, width: int):
    """``(all_zero, count)`` of the leading zeros of ``value[:width]`` (a logarithmic tree)."""
    size = 1
    while size < width:
        size *= 2
    # pad at the bottom with ones so the count never exceeds width
    padded = Cat(Const((1 << (size - width)) - 1, size - width), value[:width]) if size > width else value[:width]

    def tree(v, n):
        if n == 1:
            return ~v[0], Const(0, 1)
        half = n // 2
        hi_zero, hi_count = tree(v[half:], half)
        lo_zero, lo_count = tree(v[:half], half)
        return hi_zero & lo_zero, Mux(hi_zero, half + lo_count, hi_count)

    _, count = tree(padded, size)
    return ~value[:width].any(), count


def _clamped_difference(x, y, limit: int):
    """``min(x - y, limit)`` of two unsigned exponent fields with ``x >= y`` when it matters (combinational)."""
    diff_value = (x - y)[:len(x)]
    return Mux(diff_value > limit, limit, diff_value)


class _Operand:
    """Fields and classes of one binary32 input, with subnormals flushed to zero."""

    def __init__(self, v):
        self.sign = v[31]
        self.exp = v[23:31]
        self.frac = v[:23]
        self.zero = self.exp == 0
        self.inf = (self.exp == _EXP_ONES) & ~self.frac.any()
        self.nan = (self.exp == _EXP_ONES) & self.frac.any()
        self.mant = Mux(self.zero, 0, Cat(self.frac, 1))[:24]     # 24 bits with the hidden bit; 0 for a zero
        self.mag = Mux(self.zero, 0, v[:31])                        # 31-bit magnitude, comparable as unsigned


def _pack(m: Module, *, sign, exp, mant, nan, inf, zero, name: str) -> Signal:
    """The result word from sign, unbounded biased exponent (signed) and 24-bit normalized mantissa."""
    word = Signal(32, name=name)
    with m.If(nan):
        m.d.comb += word.eq(CANONICAL_NAN)
    with m.Elif(inf | (exp >= _EXP_ONES)):
        m.d.comb += word.eq(Cat(Const(0, 23), Const(_EXP_ONES, 8), sign))
    with m.Elif(zero | (exp <= 0)):
        m.d.comb += word.eq(Cat(Const(0, 31), sign))
    with m.Else():
        m.d.comb += word.eq(Cat(mant[:23], exp[:8], sign))
    return word


class FpMul(wiring.Component):
    """binary32 multiplier, ``y = a * b`` rounded to nearest even, fully pipelined.

    Stages: (1) unpack, classify, exponent sum; (2) 24 x 24 mantissa product (registered in the DSP48E2);
    (3) normalize by one bit: select the 24 mantissa bits, the guard bit and the sticky bit; (4) round, pack.

    Members
    -------
    a, b : In(32)
        Operands (binary32 words).
    y : Out(32)
        The product, :attr:`LATENCY` cycles after the operands.
    """

    #: Cycles from the operands to ``y``.
    LATENCY = 4

    a: In(32)
    b: In(32)
    y: Out(32)

    def elaborate(self, platform):
        m = Module()
        a, b = _Operand(self.a), _Operand(self.b)

        # Stage 1: classify; biased exponent sum minus the bias (ranges -125 .. 381 for normal operands).
        sign1, nan1, inf1, zero1 = Signal(), Signal(), Signal(), Signal()
        ma1, mb1 = Signal(24), Signal(24)
        exp1 = Signal(signed(11))
        m.d.sync += [
            sign1.eq(a.sign ^ b.sign),
            nan1.eq(a.nan | b.nan | (a.inf & b.zero) | (a.zero & b.inf)),
            inf1.eq(a.inf | b.inf), zero1.eq(a.zero | b.zero),
            ma1.eq(a.mant), mb1.eq(b.mant), exp1.eq(a.exp + b.exp - 127),
        ]

        # Stage 2: the product (exact, 48 bits, in [2**46, 2**48) for normal operands).
        prod2 = Signal(48)
        flags = Cat(sign1, nan1, inf1, zero1)
        flags2, flags3 = Signal(4), Signal(4)
        exp2, exp3 = Signal(signed(11)), Signal(signed(11))
        m.d.sync += [prod2.eq(ma1 * mb1), flags2.eq(flags), exp2.eq(exp1)]

        # Stage 3: normalize (the product has its leading one in bit 47 or 46): mantissa, guard and sticky bits.
        # (This stage used to be a second product register with the normalization in stage 4: 6.9 ns there under
        # the timing check's model, docs/timing.md; moving it here keeps the latency and the results.)
        top3, guard3, sticky3 = Signal(), Signal(), Signal()
        mant3 = Signal(24)
        top = prod2[47]
        m.d.sync += [top3.eq(top), mant3.eq(Mux(top, prod2[24:48], prod2[23:47])),
                     guard3.eq(Mux(top, prod2[23], prod2[22])),
                     sticky3.eq(Mux(top, prod2[:23].any(), prod2[:22].any())),
                     flags3.eq(flags2), exp3.eq(exp2)]

        # Stage 4: round to nearest even, pack.
        rounded = Signal(25)
        m.d.comb += rounded.eq(mant3 + (guard3 & (sticky3 | mant3[0])))
        carry = rounded[24]
        exp = Signal(signed(12))
        m.d.comb += exp.eq(exp3 + top3 + carry)
        word = _pack(m, sign=flags3[0], exp=exp, mant=Mux(carry, rounded[1:25], rounded[:24]), nan=flags3[1],
                     inf=flags3[2], zero=flags3[3], name="word")
        m.d.sync += self.y.eq(word)
        return m


class FpAdd(wiring.Component):
    """binary32 adder, ``y = a + b`` rounded to nearest even, fully pipelined.

    The operand of larger magnitude is ``big``. Stages: (1) unpack, compare magnitudes, swap, alignment shift
    (the exponent difference, clamped); (2) align the smaller mantissa with guard, round and sticky bits; (3) add or
    subtract, and count the leading zeros of the sum; (4) normalize (shift); (5) round, pack. Three extra bits
    below the mantissa suffice for a correctly rounded result: bits are only dropped in the alignment when the
    exponents differ by 2 or more, and then the normalization shifts left by at most one bit.

    Members
    -------
    a, b : In(32)
        Operands (binary32 words).
    y : Out(32)
        The sum, :attr:`LATENCY` cycles after the operands.
    """

    #: Cycles from the operands to ``y``.
    LATENCY = 5

    a: In(32)
    b: In(32)
    y: Out(32)

    def elaborate(self, platform):
        m = Module()
        a, b = _Operand(self.a), _Operand(self.b)
        W = 27   # 24-bit mantissa, guard, round, sticky

        # Stage 1: order by magnitude; special cases.
        a_big = a.mag >= b.mag
        sign1, sub1 = Signal(), Signal()
        exp1 = Signal(8)
        big1, small1 = Signal(24), Signal(24)
        shift1 = Signal(range(W + 1))
        nan1, inf1, inf_sign1, both_zero1, zero_sign1 = Signal(), Signal(), Signal(), Signal(), Signal()
        m.d.sync += [
            sign1.eq(Mux(a_big, a.sign, b.sign)), sub1.eq(a.sign ^ b.sign),
            exp1.eq(Mux(a_big, a.exp, b.exp)),
            big1.eq(Mux(a_big, a.mant, b.mant)), small1.eq(Mux(a_big, b.mant, a.mant)),
            # a flushed zero has exponent field 0 and mantissa 0: its alignment does not matter. Both differences
            # are clamped to W in parallel with the magnitude compare, which then only selects one of them.
            shift1.eq(Mux(a_big, _clamped_difference(a.exp, b.exp, W), _clamped_difference(b.exp, a.exp, W))),
            nan1.eq(a.nan | b.nan | (a.inf & b.inf & (a.sign != b.sign))),
            inf1.eq(a.inf | b.inf), inf_sign1.eq(Mux(a.inf, a.sign, b.sign)),
            both_zero1.eq(a.zero & b.zero), zero_sign1.eq(a.sign & b.sign),
        ]
        flags1 = Cat(sign1, sub1, nan1, inf1, inf_sign1, both_zero1, zero_sign1)

        # Stage 2: align the smaller operand; bits shifted out are ORed into the lowest (sticky) bit.
        shift = shift1
        small_ext = Cat(Const(0, 3), small1)
        shifted = Signal(W)
        m.d.comb += shifted.eq(small_ext >> shift)
        lost = (small_ext & ~(Const((1 << W) - 1, W) << shift)[:W]).any()
        big2, aligned2 = Signal(W), Signal(W)
        exp2 = Signal(8)
        flags2 = Signal(len(flags1))
        m.d.sync += [big2.eq(Cat(Const(0, 3), big1)), aligned2.eq(shifted | lost), exp2.eq(exp1), flags2.eq(flags1)]

        # Stage 3: add or subtract (|big| >= |small|, so the difference is never negative); the leading zeros of
        # the sum are counted here too (they were counted in stage 4, which then held 11 LUT levels).
        sum3 = Signal(W + 1)
        exp3 = Signal(8)
        flags3 = Signal(len(flags1))
        total = Signal(W + 1)
        m.d.comb += total.eq(Mux(flags2[1], big2 - aligned2, big2 + aligned2))
        zeros_total, count_total = _leading_zeros(total, W)
        zeros, count = Signal(), Signal(len(count_total))
        m.d.sync += [sum3.eq(total), exp3.eq(exp2), flags3.eq(flags2), zeros.eq(zeros_total), count.eq(count_total)]

        # Stage 4: normalize so the leading one is in bit W-1.
        norm4 = Signal(W)
        exp4 = Signal(signed(10))
        zero4 = Signal()
        flags4 = Signal(len(flags1))
        with m.If(sum3[W]):   # carry out of an addition: one bit right, keeping the sticky bit
            m.d.sync += [norm4.eq(Cat(sum3[0] | sum3[1], sum3[2:W + 1])), exp4.eq(exp3 + 1)]
        with m.Else():
            m.d.sync += [norm4.eq((sum3[:W] << count)[:W]), exp4.eq(exp3 - count)]
        m.d.sync += [zero4.eq(zeros & ~sum3[W]), flags4.eq(flags3)]

        # Stage 5: round to nearest even on guard (bit 2) and round|sticky (bits 1, 0); pack.
        mant = norm4[3:W]
        up = norm4[2] & (norm4[1] | norm4[0] | mant[0])
        rounded = Signal(25)
        m.d.comb += rounded.eq(mant + up)
        carry = rounded[24]
        exp = Signal(signed(11))
        m.d.comb += exp.eq(exp4 + carry)
        sign, nan, inf, inf_sign, both_zero, zero_sign = (flags4[0], flags4[2], flags4[3], flags4[4], flags4[5],
                                                          flags4[6])
        # An exact zero sum is +0, unless both operands are zeros: then it is -0 only if both are -0.
        result_sign = Mux(inf, inf_sign, Mux(zero4, both_zero & zero_sign, sign))
        word = _pack(m, sign=result_sign, exp=exp, mant=Mux(carry, rounded[1:25], rounded[:24]), nan=nan,
                     inf=inf, zero=zero4, name="word")
        m.d.sync += self.y.eq(word)
        return m



class FpTreeSum(wiring.Component):
    """Sum of ``terms`` binary32 words by a balanced tree of :class:`FpAdd` in lane order, fully pipelined.

    Level by level, neighbours are added, ``((t0 + t1) + (t2 + t3)) + ...``; with an odd number of terms the last one
    passes up a level unchanged (delayed to stay aligned). One term is passed through with no delay.

    Parameters
    ----------
    terms : int
        Number of terms (a positive integer).

    Members
    -------
    t : In(data.ArrayLayout(32, terms))
        The terms.
    sum : Out(32)
        Their sum, :attr:`LATENCY` cycles after the terms.
    """

    def __init__(self, *, terms: int):
        if not isinstance(terms, int) or isinstance(terms, bool) or terms < 1:
            raise TypeError(f"Terms must be a positive integer, not {terms!r}")
        self._terms = terms
        #: Cycles from the terms to ``sum``: ``ceil(log2(terms))`` adders.
        self.LATENCY = self.latency_for(terms)
        super().__init__({"t": In(data.ArrayLayout(32, terms)), "sum": Out(32)})

    @staticmethod
    def latency_for(terms: int) -> int:
        """:attr:`LATENCY` of a tree over ``terms`` terms."""
        return max(0, (terms - 1).bit_length()) * FpAdd.LATENCY

    def elaborate(self, platform):
        m = Module()
        level_terms = [self.t[i] for i in range(self._terms)]
        level = 0
        while len(level_terms) > 1:
            nxt = []
            for i in range(0, len(level_terms), 2):
                if i + 1 < len(level_terms):
                    add = FpAdd()
                    m.submodules[f"add{level}_{i // 2}"] = add
                    m.d.comb += [add.a.eq(level_terms[i]), add.b.eq(level_terms[i + 1])]
                    nxt.append(add.y)
                else:
                    value = level_terms[i]
                    for k in range(FpAdd.LATENCY):
                        reg = Signal(32, name=f"pass{level}_{k}")
                        m.d.sync += reg.eq(value)
                        value = reg
                    nxt.append(value)
            level_terms = nxt
            level += 1
        m.d.comb += self.sum.eq(level_terms[0])
        return m
