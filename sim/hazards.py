"""Cross-engine hazards and the static check of a whole program (used by the golden model and the compiler).

The hardware overlaps its DMA and compute engines (:attr:`~dlproc.processor.isa.Opcode.engine`), which is only
equivalent to executing the program in order when the program separates dependent instructions of different
engines with SYNC. :func:`footprint` gives the buffer ranges an instruction touches from its fields alone;
:class:`HazardWindow` holds them per engine between SYNCs and rejects a race. :func:`verify_program` runs the
legality rules (:mod:`dlproc.processor.rules`) and the hazard window over an instruction list without executing it.
"""

from __future__ import annotations

from dlproc.processor.config import ProcessorConfig
from dlproc.processor.isa import LUT_ENTRIES, Buffer, Engine, GemmMode, Instruction, InstructionSet, IsaError, Opcode
from dlproc.processor.rules import violation

__all__ = ["HazardError", "IllegalProgram", "Touch", "footprint", "HazardWindow", "verify_program"]


class HazardError(RuntimeError):
    """The program lets the DMA and compute engines touch the same buffer range without a SYNC between them."""



#: A buffer range one instruction touches: (buffer name, first entry, end entry, whether it writes). "FC_PORT"
#: stands for the input-read / accumulator-write ports that the fc module shares with the compute engine.
Touch = tuple[str, int, int, bool]


def footprint(ins: Instruction, config: ProcessorConfig) -> list[Touch]:
    """The buffer ranges a (legal) LOAD, STORE, GEMM, POST or FC touches, from its fields alone."""
    c = config
    op = ins.opcode
    if op == Opcode.LOAD:
        entry_bytes = {Buffer.INPUT: c.input_entry_bytes, Buffer.WEIGHT: c.weight_entry_bytes,
                       Buffer.PARAM: c.param_entry_bytes, Buffer.LUT: 1}[Buffer(ins.buffer)]
        last = (ins.buf_addr * entry_bytes + ins.n1 * ins.n2 * ins.len0 - 1) // entry_bytes
        return [(Buffer(ins.buffer).name, ins.buf_addr, last + 1, True)]
    if op == Opcode.STORE:
        last = ins.buf_addr + (ins.n1 - 1) * ins.buf_stride1 + ins.n0 - 1
        return [("OUTPUT", min(ins.buf_addr, last), last + 1, False)]
    if op == Opcode.GEMM:
        R, S = ins.r0 * ins.r1 * ins.r2, ins.s0 * ins.s1
        inp_last = ins.inp_base + sum((n - 1) * s for n, s in ((ins.r0, ins.ri0), (ins.r1, ins.ri1),
                                                             (ins.r2, ins.ri2), (ins.s0, ins.si0), (ins.s1, ins.si1)))
        touched = [("INPUT", ins.inp_base, inp_last + 1, False), ("ACC", ins.acc_base, ins.acc_base + S, True)]
        if ins.mode == GemmMode.MAC:
            touched.append(("WEIGHT", ins.wgt_base, ins.wgt_base + R, False))
        touched.append(("FC_PORT", 0, 1, False))
        if ins.finalize:
            touched += [("OUTPUT", ins.out_base, ins.out_base + S, True),
                        ("PARAM", ins.param_addr, ins.param_addr + 1, False)]
            if ins.lut:
                touched.append(("LUT", 0, LUT_ENTRIES, False))
        return touched
    if op == Opcode.POST:
        params = ins.n if ins.param_inc else 1
        return ([("ACC", ins.acc_base, ins.acc_base + ins.n, False),
                ("OUTPUT", ins.out_base, ins.out_base + ins.n, True),
                ("PARAM", ins.param_addr, ins.param_addr + params, False), ("FC_PORT", 0, 1, False)]
                + ([("LUT", 0, LUT_ENTRIES, False)] if ins.lut else []))
    if op == Opcode.FC:
        last_entry = ins.acc_base + (ins.n_out - 1) // c.conv_oc_lanes
        return [("INPUT", ins.inp_base, ins.inp_base + ins.n_in, False), ("ACC", ins.acc_base, last_entry + 1, True),
                ("FC_PORT", 0, 1, True)]
    return []


class HazardWindow:
    """The buffer ranges each engine touched since the last SYNC; :meth:`add` rejects a cross-engine race.

    The hardware overlaps its DMA and compute engines, so a program is only equivalent to sequential execution when
    no two instructions on different engines between SYNCs touch the same buffer range with one of them writing.
    """

    def __init__(self, config: ProcessorConfig):
        self.config = config
        self.clear()

    def clear(self) -> None:
        """Forget everything (a SYNC or END: both engines are idle)."""
        self._touched: dict[Engine, list[Touch]] = {Engine.DMA: [], Engine.COMPUTE: []}

    def add(self, pc: int, ins: Instruction) -> None:
        """Record instruction ``pc``; raises :class:`HazardError` if it races with the other engine."""
        engine = ins.engine
        other = self._touched[Engine.COMPUTE if engine is Engine.DMA else Engine.DMA]
        touched = footprint(ins, self.config)
        for buf, lo, hi, writes in touched:
            for obuf, olo, ohi, owrites in other:
                if buf == obuf and lo < ohi and olo < hi and (writes or owrites):
                    raise HazardError(f"instruction {pc} ({ins.opcode.name}) and an instruction on the other engine "
                                      f"since the last SYNC both touch {buf} entries [{max(lo, olo)}, "
                                      f"{min(hi, ohi)}) and one writes")
        self._touched[engine].extend(touched)


class IllegalProgram(ValueError):
    """A program that would trap on the processor (an illegal opcode or field, or no END)."""


def verify_program(config: ProcessorConfig, words: list[int]) -> None:
    """Check a program statically, without executing it: every instruction legal, no cross-engine hazard, END last.

    This is the golden model's check (:mod:`dlproc.processor.rules` and :class:`HazardWindow`) run over the
    instruction list; DDR-window checks depend on the data and are left to execution.

    Raises
    ------
    IllegalProgram
        The first illegal instruction, or a program without END.
    HazardError
        The first cross-engine race.
    """
    isa = InstructionSet(config)
    window = HazardWindow(config)
    for pc, word in enumerate(words):
        try:
            ins = isa.decode(word)
        except IsaError as exc:
            raise IllegalProgram(f"instruction {pc}: {exc}") from None
        if ins.engine is Engine.CONTROL:
            if ins.opcode in (Opcode.SYNC, Opcode.END):
                window.clear()
            continue
        message = violation(ins, config)
        if message is not None:
            raise IllegalProgram(f"instruction {pc} ({ins}): {message}")
        window.add(pc, ins)
    if words and isa.decode(words[-1]).opcode != Opcode.END:
        raise IllegalProgram("the program does not end with END")
