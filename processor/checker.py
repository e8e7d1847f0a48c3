"""Legality check of one instruction word, as combinational logic.

The dispatcher runs every fetched word through :class:`InstructionChecker` before issuing it. An opcode of 0 or
9-15 is ``ILLEGAL_OPCODE``; a word that breaks a rule of :mod:`.rules` (the same rules the golden model and the
compiler evaluate on integers) is ``ILLEGAL_FIELD``. Whether a DDR access falls inside the window is not a property
of the word alone (it depends on ``DDR_SIZE`` and on the chunk being transferred); the DMA engine checks that
before it issues each access.
"""

from __future__ import annotations

import functools
import operator

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import ProcessorConfig
from .isa import INSTRUCTION_BITS, ErrorCode, InstructionSet, Opcode, opcode_of
from .rules import CHECKED_OPCODES, hdl_rules

__all__ = ["InstructionChecker", "ERROR_CODE_SHAPE"]

#: Shape of an :class:`~dlproc.processor.isa.ErrorCode` value inside the gateware.
ERROR_CODE_SHAPE = unsigned(4)


class InstructionChecker(wiring.Component):
    """Decides whether a 256-bit instruction word may be executed.

    Parameters
    ----------
    config : ProcessorConfig
        Supplies the buffer depths and the AXI beat size the rules refer to.

    Members
    -------
    word : In(256)
        The instruction word.
    legal : Out(1)
        High when the word is an instruction the processor executes.
    error : Out(4)
        :class:`~dlproc.processor.isa.ErrorCode` of an illegal word (``ILLEGAL_OPCODE`` or ``ILLEGAL_FIELD``);
        ``NONE`` when ``legal``.
    """

    def __init__(self, *, config: ProcessorConfig):
        if not isinstance(config, ProcessorConfig):
            raise TypeError(f"config must be a ProcessorConfig, not {config!r}")
        self._config = config
        self._isa = InstructionSet(config)
        super().__init__({"word": In(INSTRUCTION_BITS), "legal": Out(1), "error": Out(ERROR_CODE_SHAPE)})

    @property
    def config(self) -> ProcessorConfig:
        """The processor configuration."""
        return self._config

    def elaborate(self, platform):
        m = Module()
        c, isa = self._config, self._isa
        ok = {}
        for op in CHECKED_OPCODES:
            conds = [cond for _message, cond in hdl_rules(op, data.View(isa.layout(op), self.word), c)]
            ok[op] = Signal(name=f"{op.name.lower()}_ok")
            m.d.comb += ok[op].eq(functools.reduce(operator.and_, conds))

        with m.Switch(opcode_of(self.word)):
            for op in CHECKED_OPCODES:
                with m.Case(op):
                    m.d.comb += [self.legal.eq(ok[op]),
                                 self.error.eq(Mux(ok[op], ErrorCode.NONE, ErrorCode.ILLEGAL_FIELD))]
            with m.Case(*(op for op in Opcode if op not in CHECKED_OPCODES)):
                m.d.comb += [self.legal.eq(1), self.error.eq(ErrorCode.NONE)]
            with m.Default():
                m.d.comb += [self.legal.eq(0), self.error.eq(ErrorCode.ILLEGAL_OPCODE)]
        return m
