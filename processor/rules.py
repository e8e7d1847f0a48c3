"""The legality rules of the instruction set, written once for Python integers and for Amaranth values.

A word is executed only if every rule of its opcode holds (otherwise ``ILLEGAL_FIELD``): no zero loop extent, no
buffer range past the end of its buffer, DDR addresses, strides and lengths on AXI-beat boundaries, sub-blocks
inside the output entry, and buffer/mode values that exist. Whether a DDR access falls inside the window is not a
property of the word (it depends on ``DDR_SIZE``); the DMA engine and the golden model check that per chunk.

The rules are expressions over the fields of an instruction and the configuration, written only with operators
that Python integers and Amaranth values share (``+ - * << >> & | == != < <=``). Choosing between two values
is the one operation that differs; :func:`rules` takes it as ``select``. The same function therefore gives

* the golden model and the compiler a verdict on a typed :class:`~.isa.Instruction` (:func:`violation`), and
* the gateware checker (:class:`~.checker.InstructionChecker`) one signal per rule, evaluated on staged
  Amaranth values of the word's fields: the checker's scheduler puts registers between the operations (products
  registered on both sides, at most one carry chain and a few LUT levels per stage), so the rules are pipelined
  without being restated. Sums of several terms are written as balanced trees (:func:`_sum`) so the pipeline is
  shallow; for integers that is the same sum.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .config import ProcessorConfig
from .isa import LUT_ENTRIES, Buffer, GemmMode, Instruction, Opcode

__all__ = ["rules", "violation", "CHECKED_OPCODES", "gemm_modes", "load_buffers"]

#: Opcodes with field rules; SYNC, MARK and END are always legal.
CHECKED_OPCODES = (Opcode.LOAD, Opcode.STORE, Opcode.GEMM, Opcode.POST, Opcode.FC)

#: A rule: the message of its violation (formatted with the instruction's fields) and the condition that must hold.
Rule = tuple[str, Any]


@functools.cache
def _log2(value: int) -> int:
    if value <= 0 or value & (value - 1):
        raise ValueError(f"{value} is not a power of two")
    return value.bit_length() - 1


def _sum(terms: list[Any]) -> Any:
    """The sum of ``terms`` as a balanced tree (the hardware adds them in log2(n) levels, not in a chain)."""
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


def _int_select(cond: Any, a: Any, b: Any) -> Any:
    return a if cond else b


def rules(op: Opcode, ins: Any, config: ProcessorConfig, select: Callable[[Any, Any, Any], Any]) -> list[Rule]:
    """The rules of one opcode.

    Parameters
    ----------
    op : Opcode
        The opcode whose rules are wanted.
    ins : Instruction or amaranth.lib.data.View
        Anything with the opcode's fields as attributes (integers or Amaranth values).
    config : ProcessorConfig
        Buffer depths, lanes and the AXI beat the rules refer to.
    select : callable
        ``select(cond, a, b)``: ``a`` where ``cond`` holds, else ``b`` (Python ``if``/``else`` or ``Mux``).

    Returns
    -------
    list of (str, condition)
        Each rule's violation message (a template over the field names) and its condition.
    """
    c = config
    beat_mask = c.beat_bytes - 1

    def aligned(value):
        return (value & beat_mask) == 0

    last_buffer = load_buffers(c)[-1]
    last_mode = gemm_modes(c)[-1]

    def no_lut():
        return 1 if c.has_nonlinear_unit else ins.lut == 0

    if op == Opcode.LOAD:
        total = ins.n1 * ins.n2 * ins.len0
        fits = {buf: (ins.buf_addr << _log2(entry_bytes)) + total <= entries * entry_bytes
                for buf, entry_bytes, entries in ((Buffer.INPUT, c.input_entry_bytes, c.input_entries),
                                                  (Buffer.WEIGHT, c.weight_entry_bytes, c.weight_entries),
                                                  (Buffer.PARAM, c.param_entry_bytes, c.param_buffer_entries),
                                                  (Buffer.LUT, 1, LUT_ENTRIES))}
        # without the unit the checker stays what it was (buffer <= PARAM is a rule of its own)
        last_fits = select(ins.buffer == Buffer.PARAM, fits[Buffer.PARAM], fits[Buffer.LUT]) \
            if c.has_nonlinear_unit else fits[Buffer.PARAM]
        return [
            ("LOAD buffer {buffer} does not exist", ins.buffer <= last_buffer),
            ("LOAD with a zero extent", (ins.n1 != 0) & (ins.n2 != 0) & (ins.len0 != 0)),
            (f"LOAD address, stride or length not a multiple of {c.beat_bytes} bytes",
             aligned(ins.len0) & aligned(ins.ddr_addr) & aligned(ins.ddr_stride1) & aligned(ins.ddr_stride2)),
            ("LOAD of {n1} x {n2} x {len0} bytes at entry {buf_addr} overflows buffer {buffer}",
             select(ins.buffer == Buffer.INPUT, fits[Buffer.INPUT],
                    select(ins.buffer == Buffer.WEIGHT, fits[Buffer.WEIGHT], last_fits))),
        ]
    if op == Opcode.STORE:
        last = ins.buf_addr + (ins.n1 - 1) * ins.buf_stride1 + ins.n0 - 1
        return [
            ("STORE with a zero extent", (ins.n0 != 0) & (ins.n1 != 0) & (ins.n2 != 0)),
            (f"STORE sub-blocks {{sb0}} + {{n2}} beyond the {c.subblocks_per_output} per entry",
             ins.sb0 + ins.n2 <= c.subblocks_per_output),
            (f"STORE address or stride not a multiple of {c.beat_bytes} bytes",
             aligned(ins.ddr_addr) & aligned(ins.ddr_stride1) & aligned(ins.ddr_stride2)),
            ("STORE reads output entries past the buffer", last < c.acc_buffer_entries),
        ]
    if op == Opcode.GEMM:
        inp_last = _sum([ins.inp_base] + [(n - 1) * stride for n, stride in (
            (ins.r0, ins.ri0), (ins.r1, ins.ri1), (ins.r2, ins.ri2), (ins.s0, ins.si0), (ins.s1, ins.si1))])
        reduction = ins.r0 * ins.r1 * ins.r2
        spatial = ins.s0 * ins.s1
        return [
            ("GEMM mode {mode} does not exist", ins.mode <= last_mode),
            ("GEMM with a zero extent",
             (ins.r0 != 0) & (ins.r1 != 0) & (ins.r2 != 0) & (ins.s0 != 0) & (ins.s1 != 0)),
            ("GEMM reads input entries past the buffer", inp_last < c.input_entries),
            ("GEMM accumulator range past the buffer", ins.acc_base + spatial <= c.acc_buffer_entries),
            ("GEMM output range past the buffer",
             select(ins.finalize, ins.out_base + spatial <= c.acc_buffer_entries, 1)),
            ("GEMM weight range past the buffer",
             select(ins.mode == GemmMode.MAC, ins.wgt_base + reduction <= c.weight_entries, 1)),
            ("GEMM lut flag without a nonlinear unit", no_lut()),
        ]
    if op == Opcode.POST:
        return [
            ("POST with a zero extent", ins.n != 0),
            ("POST range past the accumulator/output buffer",
             (ins.acc_base + ins.n <= c.acc_buffer_entries) & (ins.out_base + ins.n <= c.acc_buffer_entries)),
            ("POST parameter range past the buffer",
             ins.param_addr + select(ins.param_inc, ins.n, 1) <= c.param_buffer_entries),
            ("POST lut flag without a nonlinear unit", no_lut()),
        ]
    if op == Opcode.FC:
        return [
            ("FC with a zero extent", (ins.n_out != 0) & (ins.n_in != 0)),
            ("FC input range past the buffer", ins.inp_base + ins.n_in <= c.input_entries),
            ("FC accumulator range past the buffer",
             ins.acc_base + ((ins.n_out - 1) >> _log2(c.conv_oc_lanes)) < c.acc_buffer_entries),
            (f"FC weight address or row stride not a multiple of {c.beat_bytes} bytes",
             aligned(ins.ddr_addr) & aligned(ins.row_stride)),
        ]
    return []


def violation(ins: Instruction, config: ProcessorConfig) -> str | None:
    """The first rule a typed instruction breaks (its message), or None when it is legal."""
    for message, ok in rules(ins.opcode, ins, config, _int_select):
        if not ok:
            return message.format(**ins.fields)
    return None



def gemm_modes(config: ProcessorConfig) -> list[GemmMode]:
    """The GEMM modes that exist on ``config``'s processor (MUL only with the nonlinear unit), in encoding order."""
    return [m for m in GemmMode if m is not GemmMode.MUL or config.has_nonlinear_unit]


def load_buffers(config: ProcessorConfig) -> list[Buffer]:
    """The buffers a LOAD may fill on ``config``'s processor (the LUT only with the nonlinear unit), in order."""
    return [b for b in (Buffer.INPUT, Buffer.WEIGHT, Buffer.PARAM, Buffer.LUT)
            if b is not Buffer.LUT or config.has_nonlinear_unit]
