"""Legality check of instruction words, as a pipeline of registered stages.

The fetch unit runs every fetched word through :class:`InstructionChecker` on its way into the prefetch FIFO and
stores the verdict in the entry's fault code, so the dispatcher only reads a registered code. An opcode of 0 or
9-15 is ``ILLEGAL_OPCODE``; a word that breaks a rule of :mod:`.rules` (the same rules the golden model and the
compiler evaluate on integers) is ``ILLEGAL_FIELD``. Whether a DDR access falls inside the window is not a property
of the word alone (it depends on ``DDR_SIZE`` and on the chunk being transferred); the DMA engine checks that
before it issues each access.

The rules are not restated here. :func:`.rules.rules` is evaluated on :class:`_Staged` values: each operation
of a rule builds its Amaranth expression and the scheduler of :class:`_Pipeline` inserts registers where the logic
of one stage would exceed :data:`STAGE_BUDGET` (a carry chain costs :data:`CHAIN_COST`, a LUT level 1), every
product gets registered operands and a registered result (a DSP48E2 with input and output registers), and operands
of different stages are aligned by delay registers. The verdict therefore leaves the pipeline a fixed
:data:`CHECK_LATENCY` cycles after the word entered it, at one word per cycle; the word and its upstream fault
travel alongside.
"""

from __future__ import annotations

import functools
import operator
from typing import Any

from amaranth.hdl import Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import ProcessorConfig
from .isa import INSTRUCTION_BITS, ErrorCode, InstructionSet, Opcode, opcode_of
from .rules import CHECKED_OPCODES, rules

__all__ = ["InstructionChecker", "ERROR_CODE_SHAPE", "CHECK_LATENCY", "STAGE_BUDGET", "CHAIN_COST"]

#: Shape of an :class:`~dlproc.processor.isa.ErrorCode` value inside the gateware.
ERROR_CODE_SHAPE = unsigned(4)

#: Cycles from a word entering the checker to its verdict leaving it (the same for every configuration: the
#: schedule depends on the structure of the rules, not on field widths). The fetch unit adds it to the time an
#: instruction takes from its last R beat to the FIFO; ``runtime/estimate.py`` imports it.
CHECK_LATENCY = 8
#: Logic allowed between two registers of the checker, in LUT levels (a carry chain counts :data:`CHAIN_COST`).
STAGE_BUDGET = 4
#: Cost of an add, subtract or compare wider than :data:`_NARROW_BITS` (one carry chain, ~1.2-1.6 ns at 40-60 bits).
CHAIN_COST = 3
_NARROW_BITS = 6   # an add/compare this narrow is one LUT level


class _Pipeline:
    """Builds the registered stages of the rule expressions in ``m`` (sync domain)."""

    def __init__(self, m: Module):
        self.m = m
        self.registers = 0

    def reg(self, value: Value, name: str = "chk") -> Value:
        sig = Signal(value.shape(), name=name)
        self.m.d.sync += sig.eq(value)
        self.registers += len(sig)
        return sig

    def lift(self, x: Any) -> _Staged:
        if isinstance(x, _Staged):
            return x
        if isinstance(x, bool | int):
            return _Staged(self, int(x), 0, 0, const=True)
        raise TypeError(f"cannot stage {x!r}")

    def op(self, fn, operands: list[Any], cost: int, register: bool = False) -> _Staged:
        ops = [self.lift(x) for x in operands]
        live = [x for x in ops if not x.const]
        if not live:
            return _Staged(self, fn(*(x.value for x in ops)), 0, 0, const=True)
        stage = max(x.stage for x in live)
        if register:           # a product: registered operands (DSP A/B registers) ...
            stage = max(x.stage + (x.cost > 0) for x in live)
            ops = [x if x.const else x.at(stage, 0) for x in ops]
            # ... and a registered product (M/P register)
            return _Staged(self, self.reg(fn(*(x.value for x in ops)), "chk_mul"), stage + 1, 0)
        if max(x.cost for x in live if x.stage == stage) + cost > STAGE_BUDGET:
            stage += 1
        ops = [x if x.const else x.at(stage, STAGE_BUDGET - cost) for x in ops]
        return _Staged(self, fn(*(x.value for x in ops)), stage,
                       max(x.cost for x in ops if not x.const) + cost)


class _Staged:
    """A value of a rule expression: available ``stage`` registers after the input, ``cost`` levels after them."""

    def __init__(self, pipe: _Pipeline, value: Any, stage: int, cost: int, const: bool = False):
        self.pipe, self.value, self.stage, self.cost, self.const = pipe, value, stage, cost, const
        self._delayed: dict[int, _Staged] = {}

    def at(self, stage: int, max_cost: int) -> _Staged:
        """This value at ``stage`` with at most ``max_cost`` levels of logic before it (delay registers)."""
        if self.stage == stage and self.cost <= max_cost:
            return self
        if self.stage >= stage:
            raise AssertionError("a value cannot move to an earlier stage")
        if stage not in self._delayed:
            prev = self if self.stage == stage - 1 else self.at(stage - 1, STAGE_BUDGET)
            self._delayed[stage] = _Staged(self.pipe, self.pipe.reg(prev.value), stage, 0)
        return self._delayed[stage]

    def _width(self, other: Any) -> int:
        widths = [len(self.value)]
        if isinstance(other, _Staged) and not other.const:
            widths.append(len(other.value))
        return max(widths)

    def _arith(self, fn, other: Any, swap: bool = False) -> _Staged:
        cost = 1 if self._width(other) <= _NARROW_BITS else CHAIN_COST
        return self.pipe.op(fn, [other, self] if swap else [self, other], cost)

    def _logic(self, fn, other: Any, swap: bool = False) -> _Staged:
        other_const = not isinstance(other, _Staged) or other.const
        cost = 0 if other_const and fn in (operator.and_, operator.lshift, operator.rshift) else 1
        return self.pipe.op(fn, [other, self] if swap else [self, other], cost)

    def __add__(self, o): return self._arith(operator.add, o)
    def __radd__(self, o): return self._arith(operator.add, o, True)
    def __sub__(self, o): return self._arith(operator.sub, o)
    def __rsub__(self, o): return self._arith(operator.sub, o, True)
    def __lt__(self, o): return self._arith(operator.lt, o)
    def __le__(self, o): return self._arith(operator.le, o)
    def __gt__(self, o): return self._arith(operator.gt, o)
    def __ge__(self, o): return self._arith(operator.ge, o)
    def __eq__(self, o): return self._logic(operator.eq, o)  # type: ignore[override]
    def __ne__(self, o): return self._logic(operator.ne, o)  # type: ignore[override]
    def __and__(self, o): return self._logic(operator.and_, o)
    def __rand__(self, o): return self._logic(operator.and_, o, True)
    def __or__(self, o): return self._logic(operator.or_, o)
    def __ror__(self, o): return self._logic(operator.or_, o, True)
    def __lshift__(self, o): return self._logic(operator.lshift, o)
    def __rshift__(self, o): return self._logic(operator.rshift, o)
    def __mul__(self, o): return self.pipe.op(operator.mul, [self, o], 0, register=True)
    def __rmul__(self, o): return self.pipe.op(operator.mul, [o, self], 0, register=True)

    __hash__ = None  # type: ignore[assignment]

    def __bool__(self):
        raise TypeError("a staged hardware value has no truth value")


class _StagedView:
    """The fields of a ``data.View`` as :class:`_Staged` values of stage 0 (the checker's input register)."""

    def __init__(self, pipe: _Pipeline, view: data.View):
        self._pipe, self._view = pipe, view

    def __getattr__(self, name: str) -> _Staged:
        return _Staged(self._pipe, Value.cast(getattr(self._view, name)), 0, 0)


def _staged_select(cond: Any, a: Any, b: Any) -> _Staged:
    pipe = next(x.pipe for x in (cond, a, b) if isinstance(x, _Staged))
    return pipe.op(Mux, [cond, a, b], 1)


def _tree(fn, items: list[Any]) -> Any:
    """``fn`` over ``items`` as a balanced tree."""
    while len(items) > 1:
        items = [fn(items[i], items[i + 1]) if i + 1 < len(items) else items[i] for i in range(0, len(items), 2)]
    return items[0]


class InstructionChecker(wiring.Component):
    """Decides, in :data:`CHECK_LATENCY` registered stages, whether 256-bit instruction words may be executed.

    Parameters
    ----------
    config : ProcessorConfig
        Supplies the buffer depths and the AXI beat size the rules refer to.

    Members
    -------
    valid, word, fault : In(1), In(256), In(4)
        A word entering the pipeline (one per cycle at most) and its upstream fault (``ErrorCode``, e.g.
        ``AXI_READ_ERROR``; ``NONE`` when it was fetched fine).
    out_valid, out_word : Out(1), Out(256)
        The same word, :data:`CHECK_LATENCY` cycles later.
    out_fault : Out(4)
        Its upstream fault if it had one, else the checker's verdict: ``ILLEGAL_OPCODE``, ``ILLEGAL_FIELD`` or
        ``NONE`` (legal).
    """

    def __init__(self, *, config: ProcessorConfig):
        if not isinstance(config, ProcessorConfig):
            raise TypeError(f"config must be a ProcessorConfig, not {config!r}")
        self._config = config
        self._isa = InstructionSet(config)
        super().__init__({"valid": In(1), "word": In(INSTRUCTION_BITS), "fault": In(ERROR_CODE_SHAPE),
                          "out_valid": Out(1), "out_word": Out(INSTRUCTION_BITS), "out_fault": Out(ERROR_CODE_SHAPE)})

    @property
    def config(self) -> ProcessorConfig:
        """The processor configuration."""
        return self._config

    def elaborate(self, platform):
        m = Module()
        c, isa = self._config, self._isa
        pipe = _Pipeline(m)
        # stage 0: the input register
        word0, fault0, valid0 = pipe.reg(self.word, "chk_word"), pipe.reg(self.fault, "chk_fault"), Signal()
        m.d.sync += valid0.eq(self.valid)

        ok = {}
        for op in CHECKED_OPCODES:
            view = _StagedView(pipe, data.View(isa.layout(op), word0))
            conds = [cond for _message, cond in rules(op, view, c, _staged_select)]
            ok[op] = _tree(operator.and_, conds)
        #: opcode name -> (stage, levels) of its verdict, for inspection
        self.schedule = {op.name: (x.stage, x.cost) for op, x in ok.items()}
        opcode = _Staged(pipe, opcode_of(word0), 0, 0)
        # Decode the opcode (one LUT level) at stage 0 and align everything to the last stage.
        is_checked = {op: opcode == op for op in CHECKED_OPCODES}
        unchecked = _tree(operator.or_, [opcode == op for op in Opcode if op not in CHECKED_OPCODES])
        last = max([x.stage + (x.cost > 2) for x in ok.values()]
                   + [x.stage + (x.cost > 0) for x in [unchecked, *is_checked.values()]])
        if last + 1 > CHECK_LATENCY:
            raise AssertionError(f"the checker needs {last + 1} stages, CHECK_LATENCY is {CHECK_LATENCY}")
        # stage ``last``: one OR of (opcode is op) & ok[op] terms and the code, registered at ``last + 1``
        legal = functools.reduce(operator.or_, [is_checked[op].at(last, 0).value & ok[op].at(last, 2).value
                                                for op in CHECKED_OPCODES]) | unchecked.at(last, 0).value
        known = functools.reduce(operator.or_, [x.at(last, 0).value for x in is_checked.values()]) | \
            unchecked.at(last, 0).value
        code = Mux(legal, ErrorCode.NONE, Mux(known, ErrorCode.ILLEGAL_FIELD, ErrorCode.ILLEGAL_OPCODE))

        word = _Staged(pipe, word0, 0, 0).at(last, 0).value
        fault = _Staged(pipe, fault0, 0, 0).at(last, 0).value
        valid = _Staged(pipe, valid0, 0, 0).at(last, 0).value
        verdict = Mux(fault != ErrorCode.NONE, fault, code)
        # stage last + 1 .. CHECK_LATENCY - 1 (padding, so the latency does not depend on the configuration)
        stages = [(word, verdict, valid)]
        for _ in range(CHECK_LATENCY - 1 - last):
            w, f, v = stages[-1]
            stages.append((pipe.reg(w, "chk_word"), pipe.reg(f, "chk_fault"), pipe.reg(v, "chk_valid")))
        w, f, v = stages[-1]
        m.d.comb += [self.out_word.eq(w), self.out_fault.eq(f), self.out_valid.eq(v)]
        return m
