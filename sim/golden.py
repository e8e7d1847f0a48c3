"""The golden instruction-level model: executes an instruction stream on a DDR image with the hardware's semantics.

This is the executable definition of the instruction set (``docs/isa.md`` describes the same rules in prose).
The RTL must produce identical buffers, DDR contents and error codes. Execution here is sequential; the
hardware overlaps its DMA and compute engines, which is only equivalent when the program separates dependent
instructions of different engines with SYNC. :class:`GoldenModel` checks that (``check_hazards``, with
:mod:`dlproc.sim.hazards`, which the compiler also runs over every program it emits), so compiler
scheduling bugs are caught here instead of as rare mismatches on the RTL.

The fp32 processor's rules (binary32 with round-to-nearest-even, flush-to-zero, canonical NaN, fixed orders of
accumulation) are implemented with numpy float32/float64 by :func:`f32_add`, :func:`f32_mul`, :func:`f32_max`,
:func:`f32_tree_sum` and :func:`postprocess_fp32`; ``docs/numerics.md`` states them.

Integer rules (int8 processor), see ``docs/numerics.md``:

* accumulators are int32 and wrap (two's complement); products are exact;
* post-processing per lane ``c``: ``v = wrap32(acc + bias)``; ``m = mult_pos if v >= 0 else mult_neg`` (int16);
  ``t = v * m`` (exact); if ``shift > 0``: ``t = (t + 2**(shift-1)) >> shift`` (arithmetic, i.e. round half up);
  ``y = min(max(t, lo), hi)`` with int8 ``lo``/``hi``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dlproc.processor.buffers import CONTROL_WORD_LAYOUT, MULT_WORD_LAYOUT, unpack_field
from dlproc.processor.config import INSTRUCTION_BYTES, ISA_VERSION, ProcessorConfig
from dlproc.processor.fp32 import FpAdd
from dlproc.processor.isa import (
    CTRL_CLEAR,
    CTRL_IRQ_EN,
    CTRL_START,
    LUT_ENTRIES,
    MAGIC,
    STATUS_BUSY,
    STATUS_DONE,
    STATUS_ERROR,
    Buffer,
    ErrorCode,
    GemmMode,
    Instruction,
    InstructionSet,
    IsaError,
    Opcode,
    Reg,
)
from dlproc.processor.rules import violation
from dlproc.sim.hazards import HazardError, HazardWindow

__all__ = ["GoldenModel", "GoldenDevice", "RunResult", "HazardError", "Trap", "postprocess_int8", "postprocess_fp32",
           "f32_add", "f32_mul", "f32_max", "f32_sanitize", "f32_tree_sum", "f32_clamp", "f32_order_key",
           "CANONICAL_NAN", "FC_PARTIAL_SUMS"]

class Trap(Exception):
    """An instruction stopped the program with an :class:`~dlproc.processor.isa.ErrorCode` (``code``)."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code




@dataclass
class RunResult:
    """Outcome of one program run.

    Attributes
    ----------
    error : ErrorCode
        ``ErrorCode.NONE`` when the program reached END.
    error_pc : int
        Index of the failing instruction (or of END).
    message : str
        Human-readable reason of the error.
    events : list of (int, int)
        ``(layer id, instruction index)`` for every MARK, in order.
    mac_steps : int
        MAC-mode GEMM steps executed (each is ``conv_ic_lanes * conv_oc_lanes`` MACs on the array).
    instructions : int
        Instructions executed.
    """

    error: ErrorCode = ErrorCode.NONE
    error_pc: int = 0
    message: str = ""
    events: list[tuple[int, int]] = field(default_factory=list)
    mac_steps: int = 0
    instructions: int = 0
    read_bytes: int = 0
    write_bytes: int = 0


def postprocess_int8(acc: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Post-process accumulators into int8 outputs (bias, requantization, activation, clamp).

    Parameters
    ----------
    acc : ndarray of int32, shape (..., lanes)
        Accumulator values.
    params : ndarray of uint32, shape (..., 4, lanes)
        Parameter words per lane: bias, mult_pos and mult_neg (:data:`~dlproc.processor.buffers.MULT_WORD_LAYOUT`),
        control (:data:`~dlproc.processor.buffers.CONTROL_WORD_LAYOUT`: shift, lo, hi). Broadcasts against ``acc``.

    Returns
    -------
    ndarray of int8, shape of ``acc``
    """
    p = params.astype(np.uint32)
    bias = p[..., 0, :].view(np.int32).astype(np.int64)
    v = acc.astype(np.int64) + bias
    v = ((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)  # wrap to int32
    m = np.where(v >= 0, unpack_field(MULT_WORD_LAYOUT, "value", p[..., 1, :]),
                 unpack_field(MULT_WORD_LAYOUT, "value", p[..., 2, :]))
    ctl = p[..., 3, :]
    shift = unpack_field(CONTROL_WORD_LAYOUT, "shift", ctl)
    lo = unpack_field(CONTROL_WORD_LAYOUT, "lo", ctl)
    hi = unpack_field(CONTROL_WORD_LAYOUT, "hi", ctl)
    t = v * m  # |v| < 2**31, |m| < 2**15: exact in int64
    rnd = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    t = np.right_shift(t + rnd, shift)
    return np.minimum(np.maximum(t, lo), hi).astype(np.int8)


# ---------------------------------------------------------------------------------------------- binary32 arithmetic
#: The NaN every fp32 unit outputs.
CANONICAL_NAN = 0x7FC0_0000
_MIN_NORMAL = 2.0 ** -126
#: Products at least this close to 2**-126 round up to it (24-bit rounding with an unbounded exponent).
_ROUNDS_TO_MIN_NORMAL = 2.0 ** -126 - 2.0 ** -151


def f32_sanitize(x: np.ndarray) -> np.ndarray:
    """Subnormals flushed to signed zeros and NaNs made canonical (float32 in, float32 out)."""
    bits = np.asarray(x, np.float32).view(np.uint32)
    exp = (bits >> 23) & 0xFF
    out = np.where(exp == 0, bits & np.uint32(0x8000_0000), bits)
    out = np.where((exp == 0xFF) & (bits & 0x7F_FFFF != 0), np.uint32(CANONICAL_NAN), out)
    return out.astype(np.uint32).view(np.float32)


def _f32_finish(r: np.ndarray) -> np.ndarray:
    """Flush a correctly rounded float32 result whose magnitude is below 2**-126 and canonicalize NaN."""
    r = np.asarray(r, np.float32)
    r = np.where(np.abs(r) < _MIN_NORMAL, np.copysign(np.float32(0), r), r).astype(np.float32)
    return f32_sanitize(r)


def f32_add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """binary32 ``a + b`` as the fp32 processor computes it (``docs/numerics.md``; ``processor/fp32.py``).

    Round to nearest even; subnormal inputs and outputs flushed to signed zeros; canonical NaN. A sum of two
    normal numbers that lands below ``2**-126`` is exact (a multiple of ``2**-149``), so flushing numpy's IEEE result
    equals the hardware's round-then-flush.
    """
    with np.errstate(all="ignore"):
        return _f32_finish(f32_sanitize(a) + f32_sanitize(b))


def f32_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """binary32 ``a * b`` as the fp32 processor computes it.

    The product of two binary32 numbers is exact in float64, so converting it to float32 rounds once (to nearest
    even). Below ``2**-126`` the hardware rounds to 24 bits with an unbounded exponent and then flushes: the result is
    ``+-2**-126`` when the product rounds up to it, else a signed zero.
    """
    with np.errstate(all="ignore"):
        p = f32_sanitize(a).astype(np.float64) * f32_sanitize(b).astype(np.float64)
        r = p.astype(np.float32)
        mag = np.abs(p)
        tiny = np.where(mag >= _ROUNDS_TO_MIN_NORMAL, np.copysign(_MIN_NORMAL, p), np.copysign(0.0, p))
        r = np.where(mag < _MIN_NORMAL, tiny.astype(np.float32), r)
    return _f32_finish(r)


def _f32_key(x: np.ndarray) -> np.ndarray:
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return np.where(bits >> 31 != 0, ~bits & 0xFFFF_FFFF, bits | 0x8000_0000)


def f32_order_key(x: np.ndarray) -> np.ndarray:
    """Integer keys ordering binary32 values numerically with ``-0 < +0`` (NaNs excluded)."""
    return _f32_key(x)


def f32_max(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``max(a, b)`` after flushing; ``-0 < +0``; NaN if either is NaN (canonical)."""
    a, b = f32_sanitize(a), f32_sanitize(b)
    out = np.where(_f32_key(b) > _f32_key(a), b, a)
    return np.where(np.isnan(a) | np.isnan(b), np.uint32(CANONICAL_NAN).view(np.float32), out).astype(np.float32)


def f32_tree_sum(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Balanced pairwise sum along ``axis`` in lane order: ``((x0+x1)+(x2+x3))+...``, an odd last term passing up a
    level unchanged; every addition is :func:`f32_add`. This is the adder tree of the dot products."""
    terms = [np.take(x, i, axis=axis) for i in range(np.shape(x)[axis])]
    while len(terms) > 1:
        terms = [f32_add(terms[i], terms[i + 1]) if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


def _f32_sum_in_order(init: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """``((init + vals[0]) + vals[1]) + ...`` with :func:`f32_add`, for canonical operands (no subnormals, canonical
    NaN). numpy's sequential float32 accumulation rounds each step the same way; only a subnormal intermediate sum
    (which the hardware flushes) needs the step-by-step loop."""
    if len(vals) == 0:
        return init
    with np.errstate(all="ignore"):
        partial = np.add.accumulate(np.concatenate([init[None], vals]), axis=0, dtype=np.float32)[1:]
        tiny = np.any((np.abs(partial) < _MIN_NORMAL) & (partial != 0))
    if not tiny:
        return _f32_finish(partial[-1])
    cur = init
    for v in vals:
        cur = f32_add(cur, v)
    return cur


def _f32_max_all(init: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """:func:`f32_max` of ``init`` and every ``vals[k]`` (the maximum is associative: one reduction)."""
    if len(vals) == 0:
        return init
    both = np.concatenate([init[None], f32_sanitize(vals)])
    best = np.take_along_axis(both, np.argmax(_f32_key(both), axis=0)[None], axis=0)[0]
    return np.where(np.isnan(both).any(axis=0), np.uint32(CANONICAL_NAN).view(np.float32), best).astype(np.float32)


def f32_clamp(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``min(max(y, lo), hi)`` on order keys (``hi`` wins when ``lo > hi``); a NaN ``y`` stays NaN."""
    y = np.asarray(y, np.float32)
    lo, hi = np.broadcast_to(lo, y.shape).astype(np.float32), np.broadcast_to(hi, y.shape).astype(np.float32)
    t = np.where(_f32_key(y) < _f32_key(lo), lo, y)
    t = np.where(_f32_key(t) > _f32_key(hi), hi, t)
    return np.where(np.isnan(y), y, t).astype(np.float32)


def postprocess_fp32(acc: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Post-process binary32 accumulators (bias, scaling, activation, clamp), as the fp32 processor does.

    Parameters
    ----------
    acc : ndarray of float32, shape (..., lanes)
        Accumulator values.
    params : ndarray of uint32, shape (..., 4, lanes)
        binary32 words per lane: bias, mult_pos, mult_neg, clamp. The clamp words come in lane pairs: lane ``2k``
        holds ``lo`` and lane ``2k+1`` holds ``hi`` for both lanes ``2k`` and ``2k+1``.

    Returns
    -------
    ndarray of float32, shape of ``acc``
        ``y = clamp((acc + bias) * (mult_neg if acc + bias < 0 else mult_pos), lo, hi)``, each operation rounded.
    """
    p = np.asarray(params, np.uint32)
    words = [p[..., k, :].view(np.float32) for k in range(4)]
    v = f32_add(acc, words[0])
    y = f32_mul(v, np.where(v < 0, words[2], words[1]))
    clamp = words[3]
    lanes = clamp.shape[-1]
    lo = np.repeat(clamp[..., 0::2], 2, axis=-1)[..., :lanes]
    hi = np.repeat(clamp[..., 1::2], 2, axis=-1)[..., :lanes]
    return f32_clamp(y, lo, hi)


#: Partial sums of an fp32 FC row: piece ``j`` of a row is added to partial ``j % FC_PARTIAL_SUMS`` (the adder's
#: pipeline depth, so the fc unit adds one piece per cycle), and the partials are summed by a tree at the row's end.
FC_PARTIAL_SUMS = FpAdd.LATENCY


class GoldenModel:
    """The processor's buffers and an interpreter for its instruction stream.

    Parameters
    ----------
    config : ProcessorConfig
        The processor configuration (buffer sizes, lanes, dtype).
    """

    def __init__(self, config: ProcessorConfig):
        self.config = c = config
        self.fp32 = c.dtype == "fp32"
        element = np.float32 if self.fp32 else np.int8
        self.isa = InstructionSet(config)
        self.ci, self.co = c.conv_ic_lanes, c.conv_oc_lanes
        # Buffers as flat byte arrays (LOAD fills bytes) with typed views for the engines.
        self.inp_bytes = np.zeros(c.input_entries * c.input_entry_bytes, np.uint8)
        self.wgt_bytes = np.zeros(c.weight_entries * c.weight_entry_bytes, np.uint8)
        self.par_bytes = np.zeros(c.param_buffer_entries * c.param_entry_bytes, np.uint8)
        self.inp = self.inp_bytes.view(element).reshape(c.input_entries, self.ci)
        self.wgt = self.wgt_bytes.view(element).reshape(c.weight_entries, self.co, self.ci)
        self.par = self.par_bytes.view(np.uint32).reshape(c.param_buffer_entries, 4, self.co)
        self.acc = np.zeros((c.acc_buffer_entries, self.co), np.float32 if self.fp32 else np.int32)
        self.out = np.zeros((c.acc_buffer_entries, self.co), element)
        self._postprocess = postprocess_fp32 if self.fp32 else postprocess_int8
        self.lut_bytes = np.zeros(LUT_ENTRIES, np.uint8)  # the nonlinear unit's table (has_nonlinear_unit)
        self._buffer_bytes = {Buffer.INPUT: (self.inp_bytes, c.input_entry_bytes),
                              Buffer.WEIGHT: (self.wgt_bytes, c.weight_entry_bytes),
                              Buffer.PARAM: (self.par_bytes, c.param_entry_bytes),
                              Buffer.LUT: (self.lut_bytes, 1)}

    # ------------------------------------------------------------------ program execution
    def run(self, ddr: np.ndarray, instr_addr: int, instr_count: int, *, check_hazards: bool = True,
            ddr_size: int | None = None) -> RunResult:
        """Execute a program.

        Parameters
        ----------
        ddr : ndarray of uint8
            The DDR window (offset 0 = window base); modified in place by STORE.
        instr_addr : int
            Byte offset of instruction 0 in the window (the low 5 bits are ignored, as in hardware).
        instr_count : int
            Number of instructions; reaching it without END is ``PROGRAM_END``.
        check_hazards : bool
            Raise :class:`HazardError` when the program relies on sequential execution across engines.
        ddr_size : int, optional
            Window size; defaults to ``len(ddr)``.
        """
        size = len(ddr) if ddr_size is None else ddr_size
        base = instr_addr & ~(INSTRUCTION_BYTES - 1)
        result = RunResult()
        window = HazardWindow(self.config)
        pc = 0
        while True:
            try:
                if pc >= instr_count:
                    raise Trap(ErrorCode.PROGRAM_END, f"reached instruction count {instr_count} without END")
                start = base + pc * INSTRUCTION_BYTES
                if start + INSTRUCTION_BYTES > size:
                    raise Trap(ErrorCode.DDR_WINDOW, f"instruction fetch at offset {start:#x} outside the window")
                word = int.from_bytes(ddr[start:start + INSTRUCTION_BYTES].tobytes(), "little")
                try:
                    ins = self.isa.decode(word)
                except IsaError as exc:
                    raise Trap(ErrorCode.ILLEGAL_OPCODE, str(exc)) from None
                result.instructions += 1
                op = ins.opcode
                if op in (Opcode.SYNC, Opcode.END):
                    window.clear()
                    if op == Opcode.END:
                        result.error_pc = pc
                        return result
                elif op == Opcode.MARK:
                    if len(result.events) < self.config.event_log_depth:
                        result.events.append((ins.layer, pc))
                else:
                    self.execute(ins, ddr, size, result)
                    if check_hazards:
                        window.add(pc, ins)
            except Trap as trap:
                result.error, result.error_pc, result.message = trap.code, pc, str(trap)
                return result
            pc += 1

    # ------------------------------------------------------------------ instructions
    def execute(self, ins: Instruction, ddr: np.ndarray, size: int, result: RunResult) -> None:
        """Execute one LOAD, STORE, GEMM, POST or FC on the buffers and ``ddr`` (a window of ``size`` bytes).

        Raises :class:`Trap` with ``ILLEGAL_FIELD`` for a word that breaks a rule of
        :mod:`dlproc.processor.rules`, or ``DDR_WINDOW`` for an access outside the window.
        """
        message = violation(ins, self.config)
        if message is not None:
            raise Trap(ErrorCode.ILLEGAL_FIELD, message)
        op = ins.opcode
        if op == Opcode.LOAD:
            self._load(ins, ddr, size, result)
        elif op == Opcode.STORE:
            self._store(ins, ddr, size, result)
        elif op == Opcode.GEMM:
            self._gemm(ins, result)
        elif op == Opcode.POST:
            self._post(ins)
        elif op == Opcode.FC:
            self._fc(ins, ddr, size, result)
        else:
            raise ValueError(f"{op.name} is executed by the dispatcher, not an engine")

    def _window(self, lo: int, length: int, size: int, what: str) -> None:
        if lo < 0 or lo + length > size:
            raise Trap(ErrorCode.DDR_WINDOW, f"{what} [{lo:#x}, {lo + length:#x}) outside the {size:#x}-byte window")

    def _load(self, ins: Instruction, ddr: np.ndarray, size: int, result: RunResult):
        buf, entry_bytes = self._buffer_bytes[Buffer(ins.buffer)]
        start = ins.buf_addr * entry_bytes
        total = ins.n1 * ins.n2 * ins.len0
        pos = start
        for i2 in range(ins.n2):
            for i1 in range(ins.n1):
                src = ins.ddr_addr + i2 * ins.ddr_stride2 + i1 * ins.ddr_stride1
                self._window(src, ins.len0, size, "LOAD source")
                buf[pos:pos + ins.len0] = ddr[src:src + ins.len0]
                pos += ins.len0
        result.read_bytes += total

    def _store(self, ins: Instruction, ddr: np.ndarray, size: int, result: RunResult):
        c = self.config
        ci, eb = self.ci, c.element_bytes
        row_bytes = ins.n0 * ci * eb
        out_bytes = self.out.view(np.uint8).reshape(c.acc_buffer_entries, c.conv_oc_lanes * eb)
        for i2 in range(ins.n2):
            sb = ins.sb0 + i2
            for i1 in range(ins.n1):
                dst = ins.ddr_addr + i2 * ins.ddr_stride2 + i1 * ins.ddr_stride1
                self._window(dst, row_bytes, size, "STORE destination")
                e0 = ins.buf_addr + i1 * ins.buf_stride1
                rows = out_bytes[e0:e0 + ins.n0, sb * ci * eb:(sb + 1) * ci * eb]
                ddr[dst:dst + row_bytes] = rows.reshape(-1)
        result.write_bytes += row_bytes * ins.n1 * ins.n2

    def _inp_indices(self, ins: Instruction) -> np.ndarray:
        """Input-buffer entry index for every (reduction step k, spatial step j): shape (R, S)."""
        r0, r1, r2 = np.ogrid[0:ins.r0, 0:ins.r1, 0:ins.r2]
        red = (r0 * ins.ri0 + r1 * ins.ri1 + r2 * ins.ri2).reshape(-1)
        s0, s1 = np.ogrid[0:ins.s0, 0:ins.s1]
        spa = (s0 * ins.si0 + s1 * ins.si1).reshape(-1)
        return ins.inp_base + red[:, None] + spa[None, :]

    def _gemm(self, ins: Instruction, result: RunResult) -> None:
        R, S = ins.r0 * ins.r1 * ins.r2, ins.s0 * ins.s1
        mode = GemmMode(ins.mode)
        idx = self._inp_indices(ins)
        if self.fp32:
            self._gemm_fp32(ins, idx, mode, R, S)
        else:
            self._gemm_int8(ins, idx, mode, R, S)
        if mode == GemmMode.MAC:
            result.mac_steps += R * S
        if ins.finalize:
            self.out[ins.out_base:ins.out_base + S] = self._nonlinear(
                ins, self._postprocess(self.acc[ins.acc_base:ins.acc_base + S], self.par[ins.param_addr]))

    def _nonlinear(self, ins: Instruction, y: np.ndarray) -> np.ndarray:
        """The nonlinear unit: with ``lut = 1`` every int8 output ``y`` becomes ``LUT[y + 128]``."""
        if not ins.lut:
            return y
        return self.lut_bytes.view(np.int8)[y.astype(np.int16) + 128]

    def _gemm_int8(self, ins: Instruction, idx: np.ndarray, mode: GemmMode, R: int, S: int) -> None:
        """int32 GEMM: exact products, wrapping sums (the order does not matter)."""
        x = self.inp[idx].astype(np.int64)  # (R, S, ci)
        acc = self.acc[ins.acc_base:ins.acc_base + S]
        old = acc.astype(np.int64)
        if mode == GemmMode.MAC:
            w = self.wgt[ins.wgt_base:ins.wgt_base + R].astype(np.int64)  # (R, co, ci)
            val = np.einsum("rsi,rci->sc", x, w, optimize=True)
            new = val if ins.overwrite else old + val
        else:
            pad = np.zeros((S, self.co), np.int64)
            if mode == GemmMode.MAX:
                pad[:, :self.ci] = x.max(axis=0)
                new = pad if ins.overwrite else np.maximum(old, pad)
            elif mode == GemmMode.MUL:  # every reduction step multiplies (the first one replaces on overwrite)
                new = np.ones((S, self.co), np.int64) if ins.overwrite else old
                for step in x:
                    pad[:, :self.ci] = step
                    new = (((new * pad) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
            else:
                pad[:, :self.ci] = x.sum(axis=0) * ins.imm
                new = pad if ins.overwrite else old + pad
        acc[:] = (((new + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)).astype(np.int32)

    def _gemm_fp32(self, ins: Instruction, idx: np.ndarray, mode: GemmMode, R: int, S: int) -> None:
        """binary32 GEMM: per reduction step, in loop order, ``acc = acc + step value`` (rounded; MAX: maximum); a MAC
        step value is the adder tree over the input lanes of the rounded products (``docs/numerics.md``)."""
        ci, co = self.ci, self.co
        acc = self.acc[ins.acc_base:ins.acc_base + S]
        cur = None if ins.overwrite else f32_sanitize(acc)
        chunk = max(1, (1 << 20) // max(1, S * co * ci))    # reduction steps per vectorized chunk
        imm = np.float32(ins.imm)                             # int16 -> binary32 is exact
        for k0 in range(0, R, chunk):
            k1 = min(R, k0 + chunk)
            x = self.inp[idx[k0:k1]]                          # (k, S, ci)
            if mode == GemmMode.MAC:
                w = self.wgt[ins.wgt_base + k0:ins.wgt_base + k1]                      # (k, co, ci)
                vals = f32_tree_sum(f32_mul(x[:, :, None, :], w[:, None, :, :]), axis=-1)   # (k, S, co)
            else:
                vals = np.zeros((k1 - k0, S, co), np.float32)   # lanes >= ci take +0
                vals[:, :, :ci] = f32_sanitize(x) if mode == GemmMode.MAX else f32_mul(x, imm)
            if cur is None:
                cur, vals = vals[0], vals[1:]
            cur = _f32_max_all(cur, vals) if mode == GemmMode.MAX else _f32_sum_in_order(cur, vals)
        acc[:] = cur

    def _post(self, ins: Instruction) -> None:
        acc = self.acc[ins.acc_base:ins.acc_base + ins.n]
        par = self.par[ins.param_addr:ins.param_addr + ins.n] if ins.param_inc else self.par[ins.param_addr]
        self.out[ins.out_base:ins.out_base + ins.n] = self._nonlinear(ins, self._postprocess(acc, par))

    def _fc(self, ins: Instruction, ddr: np.ndarray, size: int, result: RunResult) -> None:
        ci, co = self.ci, self.co
        last_entry = ins.acc_base + (ins.n_out - 1) // co
        row = ins.n_in * ci
        if self.fp32:
            return self._fc_fp32(ins, ddr, size, result, last_entry)
        x = self.inp[ins.inp_base:ins.inp_base + ins.n_in].reshape(-1).astype(np.int64)
        w = np.empty((ins.n_out, row), np.int64)
        for o in range(ins.n_out):
            src = ins.ddr_addr + o * ins.row_stride
            self._window(src, row, size, "FC weight row")
            w[o] = ddr[src:src + row].view(np.int8)
        s = w @ x
        flat = self.acc[ins.acc_base:last_entry + 1].reshape(-1)
        old = flat[:ins.n_out].astype(np.int64)
        new = old + s if ins.accumulate else s
        flat[:ins.n_out] = (((new + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)).astype(np.int32)
        result.read_bytes += row * ins.n_out

    def _fc_fp32(self, ins: Instruction, ddr: np.ndarray, size: int, result: RunResult, last_entry: int):
        """binary32 FC: the row is cut into pieces of ``P`` elements (the fc unit's lanes); a piece's value is the
        adder tree of its rounded products; piece ``j`` goes to partial sum ``j % FC_PARTIAL_SUMS`` (each starting at
        -0, the additive identity), and the row sum is the adder tree over the partials."""
        c = self.config
        n = ins.n_in * self.ci
        P = min(c.fc_threads, c.beat_bytes // c.element_bytes)
        L = FC_PARTIAL_SUMS
        x = self.inp[ins.inp_base:ins.inp_base + ins.n_in].reshape(-1)
        w = np.empty((ins.n_out, n), np.float32)
        for o in range(ins.n_out):
            src = ins.ddr_addr + o * ins.row_stride
            self._window(src, n * 4, size, "FC weight row")
            w[o] = ddr[src:src + n * 4].view(np.float32)
        pieces = n // P
        dots = f32_tree_sum(f32_mul(w.reshape(ins.n_out, pieces, P), x.reshape(pieces, P)), axis=-1)
        groups = -(-pieces // L)
        padded = np.full((ins.n_out, groups * L), -0.0, np.float32)
        padded[:, :pieces] = dots
        partial = np.full((ins.n_out, L), -0.0, np.float32)
        for g in range(groups):
            partial = f32_add(partial, padded[:, g * L:(g + 1) * L])
        s = f32_tree_sum(partial, axis=-1)
        flat = self.acc[ins.acc_base:last_entry + 1].reshape(-1)
        flat[:ins.n_out] = f32_add(flat[:ins.n_out], s) if ins.accumulate else s
        result.read_bytes += n * 4 * ins.n_out


class GoldenDevice:
    """The golden model behind the same register interface as the RTL and the board (target ``"ref"``).

    Writing START to CTRL runs the program to completion at once; STATUS then shows DONE or ERROR. Cycle
    counters read zero: the golden model has no timing (use the performance estimate for that).

    Parameters
    ----------
    config : ProcessorConfig
        The processor configuration.
    ddr_size : int, optional
        Bytes of DDR behind the window (default: ``config.ddr_size``).
    check_hazards : bool
        Whether the golden model rejects programs with cross-engine races.
    """

    def __init__(self, config: ProcessorConfig, *, ddr_size: int | None = None, check_hazards: bool = True):
        self.config = config
        self.model = GoldenModel(config)
        self.ddr_phys_base = config.ddr_base
        self.ddr_size = ddr_size or config.ddr_size
        self.ddr = np.zeros(self.ddr_size, np.uint8)
        self.check_hazards = check_hazards
        self.last_result: RunResult | None = None
        self._regs = {r: 0 for r in Reg}
        self._regs[Reg.MAGIC] = MAGIC
        self._regs[Reg.ISA_VERSION] = ISA_VERSION
        self._regs[Reg.CONFIG_HASH] = config.hardware_hash_int
        self._regs[Reg.DDR_BASE_LO] = self.ddr_phys_base & 0xFFFFFFFF
        self._regs[Reg.DDR_BASE_HI] = self.ddr_phys_base >> 32
        self._regs[Reg.DDR_SIZE] = self.ddr_size & 0xFFFFFFFF
        self._events: list[tuple[int, int]] = []

    def read_reg(self, offset: int) -> int:
        """Read a 32-bit control/status register."""
        reg = Reg(offset)
        if reg == Reg.EVENT_ID:
            i = self._regs[Reg.EVENT_INDEX]
            return self._events[i][0] if i < len(self._events) else 0
        return self._regs[reg] & 0xFFFFFFFF

    def write_reg(self, offset: int, value: int) -> None:
        """Write a 32-bit control register."""
        reg = Reg(offset)
        if reg == Reg.CTRL:
            self._regs[Reg.CTRL] = value & CTRL_IRQ_EN
            if value & CTRL_CLEAR:
                self._regs[Reg.STATUS] &= ~(STATUS_DONE | STATUS_ERROR)
            if value & CTRL_START and not self._regs[Reg.STATUS] & STATUS_BUSY:
                self._start()
        elif reg in (Reg.INSTR_ADDR, Reg.INSTR_COUNT, Reg.DDR_BASE_LO, Reg.DDR_BASE_HI, Reg.DDR_SIZE,
                     Reg.EVENT_INDEX):
            self._regs[reg] = value & 0xFFFFFFFF

    def _start(self) -> None:
        size = min(self._regs[Reg.DDR_SIZE] or self.ddr_size, self.ddr_size)
        res = self.model.run(self.ddr, self._regs[Reg.INSTR_ADDR], self._regs[Reg.INSTR_COUNT],
                             check_hazards=self.check_hazards, ddr_size=size)
        self.last_result = res
        self._events = res.events
        self._regs[Reg.EVENT_COUNT] = len(res.events)
        self._regs[Reg.PC] = res.error_pc
        self._regs[Reg.ERROR_CODE] = int(res.error)
        self._regs[Reg.ERROR_PC] = res.error_pc if res.error else 0
        self._regs[Reg.STATUS] = STATUS_ERROR if res.error else STATUS_DONE
        self._regs[Reg.MAC_BUSY_LO] = res.mac_steps & 0xFFFFFFFF
        self._regs[Reg.MAC_BUSY_HI] = res.mac_steps >> 32

    def write_ddr(self, offset: int, data) -> None:
        """Copy bytes into DDR at a window offset."""
        arr = np.frombuffer(bytes(data), np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8)
        self.ddr[offset:offset + arr.size] = arr.reshape(-1)

    def read_ddr(self, offset: int, length: int) -> np.ndarray:
        """Copy bytes out of DDR at a window offset."""
        return self.ddr[offset:offset + length].copy()

    def wait_irq(self, timeout_s: float) -> bool:
        """The golden model finishes inside START; True when DONE or ERROR is set."""
        return bool(self._regs[Reg.STATUS] & (STATUS_DONE | STATUS_ERROR))

    def close(self) -> None:
        """Release the DDR array."""
        self.ddr = np.zeros(0, np.uint8)

    def __enter__(self) -> GoldenDevice:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
