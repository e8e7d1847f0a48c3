"""The instruction set of the processor: defined once, used by the gateware, the compiler and the golden model.

Every instruction is one 256-bit word (:data:`INSTRUCTION_BYTES` bytes, little-endian in DDR). Its low four bits
are the :class:`Opcode`; the remaining fields are an Amaranth :class:`~amaranth.lib.data.StructLayout` per
opcode whose buffer-address widths are derived from the :class:`~dlproc.processor.config.ProcessorConfig`.

* The gateware decoder views the fetched word as ``data.View(isa.layout(op), word)`` and switches on
  :func:`opcode_of`; registers that hold a field take its shape from :meth:`InstructionSet.shape`.
* The compiler builds typed instructions, one frozen class per opcode generated from the same layouts
  (``isa.Gemm(mode=GemmMode.MAC, r0=..., ...)``, fields range-checked at construction), and packs them with
  :meth:`Instruction.encode`.
* The golden model and the estimate unpack words with :meth:`InstructionSet.decode` into the same classes.
* Which engine runs an opcode is :attr:`Opcode.engine`; the legality rules are in :mod:`.rules`.

The semantics of each instruction are given in ``docs/isa.md`` and executed by ``dlproc.sim.golden``.
This module also holds the control/status register map and the error codes shared by gateware, driver and
golden model.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from .config import INSTRUCTION_BYTES, ISA_VERSION, ProcessorConfig

__all__ = [
    "INSTRUCTION_BITS", "INSTRUCTION_BYTES", "ISA_VERSION", "Opcode", "Buffer", "GemmMode", "ErrorCode",
    "Reg", "CTRL_START", "CTRL_CLEAR", "CTRL_IRQ_EN", "STATUS_BUSY", "STATUS_DONE", "STATUS_ERROR",
    "MAGIC", "InstructionSet", "Instruction", "IsaError", "EXTENT_BITS", "OPCODE_BITS", "Engine",
    "opcodes_of", "opcode_of", "INSTRUCTION_CLASSES", "Load", "Store", "Gemm", "Post", "Fc", "Sync", "Mark", "End",
    "END_MARK", "MARK_LAYER_BITS", "LUT_ENTRIES",
]

INSTRUCTION_BITS = INSTRUCTION_BYTES * 8
OPCODE_BITS = 4
#: Width of every loop extent field (GEMM, LOAD, STORE); extents range from 1 to 2**EXTENT_BITS - 1.
EXTENT_BITS = 12
#: Width of DDR byte offsets and strides (offsets are relative to the DDR window base).
DDR_BITS = 32
#: Width of the LOAD chunk length in bytes.
LEN_BITS = 24


class IsaError(ValueError):
    """An instruction that cannot be encoded (a field out of its range)."""


class Opcode(enum.IntEnum):
    """Instruction opcodes (bits 3:0 of every instruction). 0 and 9-15 are illegal, so zeroed memory traps."""

    LOAD = 1   #: DDR -> input, weight or parameter buffer (DMA engine)
    STORE = 2  #: output buffer -> DDR (DMA engine)
    GEMM = 3   #: loop nest over the conv array: MAC, MAX or SUM mode (compute engine)
    POST = 4   #: accumulators -> post-processing -> output buffer (compute engine)
    FC = 5     #: fc module: weights streamed from DDR x input buffer vector -> accumulators (DMA engine)
    SYNC = 6   #: wait until both engines are idle
    MARK = 7   #: record (layer id, cycle counter) in the event log
    END = 8    #: wait until both engines are idle, then stop with DONE

    @property
    def engine(self) -> Engine:
        """The :class:`Engine` that executes this opcode (the one table: dispatcher, golden model, estimate)."""
        return _ENGINE_OF[self]


class Buffer(enum.IntEnum):
    """Target buffer of a LOAD."""

    INPUT = 0
    WEIGHT = 1
    PARAM = 2
    LUT = 3  #: the nonlinear unit's table (:data:`LUT_ENTRIES` int8 bytes); only with ``has_nonlinear_unit``


#: Entries of the nonlinear unit's lookup table: one int8 output per int8 input, indexed by ``input + 128``.
LUT_ENTRIES = 256


class GemmMode(enum.IntEnum):
    """Operation of a GEMM instruction on each (accumulator, input[, weight]) triple."""

    MAC = 0  #: acc[c] += sum_i inp[i] * wgt[c][i]  (c < oc lanes)
    MAX = 1  #: acc[c] = max(acc[c], inp[c])       (c < ic lanes; other lanes take 0)
    SUM = 2  #: acc[c] += inp[c] * imm             (c < ic lanes; other lanes take 0)
    MUL = 3  #: acc[c] *= inp[c] (overwrite: = inp[c]) (c < ic lanes; other lanes take 0); only with
    #:         ``has_nonlinear_unit`` (elementwise multiply, squeeze-excitation gates)


class ErrorCode(enum.IntEnum):
    """Values of the ERROR_CODE register. The processor stops at the first error with ERROR set in STATUS."""

    NONE = 0
    ILLEGAL_OPCODE = 1     #: opcode 0 or 9-15
    ILLEGAL_FIELD = 2      #: zero extent, buffer address range past the buffer, bad buffer/mode/sub-block
    DDR_WINDOW = 3         #: a DDR access (data or instruction fetch) outside [0, DDR_SIZE) of the window
    AXI_READ_ERROR = 4     #: SLVERR or DECERR on a read response
    AXI_WRITE_ERROR = 5    #: SLVERR or DECERR on a write response
    PROGRAM_END = 6        #: the program counter reached INSTR_COUNT without an END instruction


class Reg(enum.IntEnum):
    """Byte offsets of the 32-bit control and status registers on the AXI4-Lite slave."""

    MAGIC = 0x00            #: RO  0x444C5043 ("DLPC")
    ISA_VERSION = 0x04      #: RO  :data:`ISA_VERSION`
    CONFIG_HASH = 0x08      #: RO  ProcessorConfig.hardware_hash_int
    CTRL = 0x0C             #: W   bit0 START (self clearing), bit1 CLEAR (done/error); RW bit2 IRQ_EN
    STATUS = 0x10           #: RO  bit0 BUSY, bit1 DONE, bit2 ERROR
    ERROR_CODE = 0x14       #: RO  :class:`ErrorCode`
    ERROR_PC = 0x18         #: RO  index of the instruction that failed
    PC = 0x1C               #: RO  index of the instruction being dispatched
    INSTR_ADDR = 0x20       #: RW  byte offset of instruction 0 in the DDR window (32-byte aligned)
    INSTR_COUNT = 0x24      #: RW  number of instructions in the program
    DDR_BASE_LO = 0x28      #: RW  physical base address of the DDR window, bits 31:0
    DDR_BASE_HI = 0x2C      #: RW  bits 63:32
    DDR_SIZE = 0x30         #: RW  size of the DDR window in bytes
    CYCLES_LO = 0x38        #: RO  cycles since START (64 bit)
    CYCLES_HI = 0x3C
    MAC_BUSY_LO = 0x40      #: RO  cycles in which the conv array performed a MAC-mode step (64 bit)
    MAC_BUSY_HI = 0x44
    DMA_RD_BEATS = 0x48     #: RO  AXI read data beats accepted since START
    DMA_WR_BEATS = 0x4C     #: RO  AXI write data beats sent since START
    EVENT_COUNT = 0x50      #: RO  events recorded (saturates at the log depth)
    EVENT_INDEX = 0x54      #: RW  selects the event read through EVENT_ID / EVENT_CYCLE_*
    EVENT_ID = 0x58         #: RO  layer id of the selected event
    EVENT_CYCLE_LO = 0x5C   #: RO  cycle counter value when the selected MARK was dispatched (64 bit)
    EVENT_CYCLE_HI = 0x60


MAGIC = 0x444C5043
CTRL_START, CTRL_CLEAR, CTRL_IRQ_EN = 1 << 0, 1 << 1, 1 << 2
STATUS_BUSY, STATUS_DONE, STATUS_ERROR = 1 << 0, 1 << 1, 1 << 2


class Engine(enum.Enum):
    """The unit that executes an instruction; the dispatcher issues in order, each engine one instruction at a time."""

    DMA = "dma"          #: LOAD, STORE, FC (the fc module streams its weights through the DMA engine)
    COMPUTE = "compute"  #: GEMM, POST on the conv array and the post-processor
    CONTROL = "control"  #: SYNC, MARK, END: executed by the dispatcher itself


_ENGINE_OF = {Opcode.LOAD: Engine.DMA, Opcode.STORE: Engine.DMA, Opcode.FC: Engine.DMA,
              Opcode.GEMM: Engine.COMPUTE, Opcode.POST: Engine.COMPUTE,
              Opcode.SYNC: Engine.CONTROL, Opcode.MARK: Engine.CONTROL, Opcode.END: Engine.CONTROL}


def opcodes_of(engine: Engine) -> tuple[Opcode, ...]:
    """The opcodes an :class:`Engine` executes, in opcode order."""
    return tuple(op for op in Opcode if _ENGINE_OF[op] is engine)


def opcode_of(word):
    """The opcode bits of an instruction word: an ``int`` for an ``int``, a slice for an Amaranth value."""
    if isinstance(word, int):
        return word & ((1 << OPCODE_BITS) - 1)
    return word[:OPCODE_BITS]


def _field_shapes(config: ProcessorConfig) -> dict[Opcode, dict[str, Any]]:
    """The operand fields of every opcode, in layout order (low bits first, after the opcode)."""
    c = config
    inp, wgt, acc, par = c.input_addr_bits, c.weight_addr_bits, c.acc_addr_bits, c.param_addr_bits
    buf_any = max(inp, wgt, par)
    ext = unsigned(EXTENT_BITS)
    ddr = unsigned(DDR_BITS)
    return {
        Opcode.LOAD: {
            "buffer": unsigned(2),           # Buffer
            "buf_addr": unsigned(buf_any),   # first entry written
            "ddr_addr": ddr,                 # byte offset of chunk (0, 0)
            "len0": unsigned(LEN_BITS),      # bytes per chunk, multiple of the AXI beat
            "n1": unsigned(16), "ddr_stride1": ddr,
            "n2": unsigned(16), "ddr_stride2": ddr,
        },
        Opcode.STORE: {
            "buf_addr": unsigned(acc),       # first output entry read
            "ddr_addr": ddr,
            "n0": unsigned(16),              # output entries (pixels) per row, contiguous in DDR
            "n1": unsigned(16), "ddr_stride1": ddr, "buf_stride1": unsigned(acc + 1),
            "n2": unsigned(8), "ddr_stride2": ddr,
            "sb0": unsigned(8),              # first channel sub-block of the output entry
        },
        Opcode.GEMM: {
            "mode": unsigned(2),             # GemmMode
            "overwrite": unsigned(1),        # first reduction step writes instead of accumulating
            "finalize": unsigned(1),         # last reduction step also post-processes into the output buffer
            "acc_base": unsigned(acc), "out_base": unsigned(acc),
            "inp_base": unsigned(inp), "wgt_base": unsigned(wgt), "param_addr": unsigned(par),
            "r0": ext, "r1": ext, "r2": ext, "s0": ext, "s1": ext,
            "ri0": unsigned(inp), "ri1": unsigned(inp), "ri2": unsigned(inp),
            "si0": unsigned(inp), "si1": unsigned(inp),
            "imm": signed(16),
            "lut": unsigned(1),              # finalize: the nonlinear unit maps each int8 output y to LUT[y + 128]
        },
        Opcode.POST: {
            "acc_base": unsigned(acc), "out_base": unsigned(acc), "n": unsigned(acc + 1),
            "param_addr": unsigned(par), "param_inc": unsigned(1),
            "lut": unsigned(1),              # the nonlinear unit maps each int8 output y to LUT[y + 128]
        },
        Opcode.FC: {
            "accumulate": unsigned(1),
            "ddr_addr": ddr, "row_stride": ddr,
            "n_out": unsigned(16), "n_in": unsigned(inp + 1),
            "inp_base": unsigned(inp), "acc_base": unsigned(acc),
        },
        Opcode.SYNC: {},
        Opcode.MARK: {"layer": unsigned(16)},
        Opcode.END: {},
    }


class Instruction:
    """A typed instruction: one frozen dataclass per opcode (:class:`Load`, :class:`Gemm`, ...).

    The classes are generated from the layouts of :func:`_field_shapes`: one ``int`` field per operand (default 0).
    An instruction belongs to an :class:`InstructionSet` (its ``isa``), which checks every field against its
    width at construction and packs it with :meth:`encode`. Make them with the set's factories,
    ``isa.Gemm(mode=GemmMode.MAC, r0=2, ...)``, or get them from :meth:`InstructionSet.decode`.
    """

    opcode: ClassVar[Opcode]
    isa: InstructionSet

    @property
    def engine(self) -> Engine:
        """The engine that executes this instruction."""
        return self.opcode.engine

    @property
    def fields(self) -> dict[str, int]:
        """The operand values by name, in layout order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "isa"}  # type: ignore

    def encode(self) -> int:
        """This instruction as an integer of :data:`INSTRUCTION_BITS` bits."""
        word = int(self.opcode)
        for name, offset, width, _signed in self.isa._offsets[self.opcode]:
            word |= (getattr(self, name) & ((1 << width) - 1)) << offset
        return word

    def _check(self) -> None:
        # called by __post_init__ of the generated classes: fields become plain ints in their ranges
        for name, _offset, width, is_signed in self.isa._offsets[self.opcode]:
            raw = getattr(self, name)
            value = int(raw)
            if value != raw:
                raise IsaError(f"{self.opcode.name}.{name} = {raw!r} is not an integer")
            lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if is_signed else (0, (1 << width) - 1)
            if not lo <= value <= hi:
                raise IsaError(f"{self.opcode.name}.{name} = {value} does not fit in {width} "
                               f"{'signed' if is_signed else 'unsigned'} bits ({lo}..{hi})")
            object.__setattr__(self, name, value)

    def __str__(self) -> str:
        args = " ".join(f"{k}={v}" for k, v in self.fields.items())
        return f"{self.opcode.name} {args}".rstrip()


def _instruction_class(opcode: Opcode, names: list[str]) -> type[Instruction]:
    cls = dataclasses.make_dataclass(
        opcode.name.capitalize(),
        [(name, int, dataclasses.field(default=0)) for name in names]
        + [("isa", "InstructionSet", dataclasses.field(kw_only=True, repr=False, compare=False))],
        bases=(Instruction,), frozen=True, namespace={"opcode": opcode, "__post_init__": Instruction._check,
                                                      "__module__": __name__})
    cls.__doc__ = f"The {opcode.name} instruction (fields: {', '.join(names) or 'none'})."
    return cls


#: The instruction class of every opcode; its field names are config-independent (only widths vary).
INSTRUCTION_CLASSES: dict[Opcode, type[Instruction]] = {
    op: _instruction_class(op, list(fields)) for op, fields in _field_shapes(ProcessorConfig()).items()}
Load, Store, Gemm, Post, Fc, Sync, Mark, End = (INSTRUCTION_CLASSES[op] for op in Opcode)

#: Width of a MARK's layer id (the event log stores it).
MARK_LAYER_BITS = _field_shapes(ProcessorConfig())[Opcode.MARK]["layer"].width
#: Layer id of the MARK recorded just before END (closes the last layer's interval): the largest ``layer`` value.
END_MARK = (1 << MARK_LAYER_BITS) - 1


class InstructionSet:
    """The instruction layouts of one processor configuration.

    Parameters
    ----------
    config : ProcessorConfig
        The configuration whose buffer depths set the address-field widths.
    """

    def __init__(self, config: ProcessorConfig):
        if not isinstance(config, ProcessorConfig):
            raise TypeError(f"config must be a ProcessorConfig, not {config!r}")
        self.config = config
        for op, cls in INSTRUCTION_CLASSES.items():   # isa.Load(...), isa.Gemm(...), ...: typed constructors
            setattr(self, cls.__name__, functools.partial(self.make, op))

    Load: Callable[..., Instruction]
    Store: Callable[..., Instruction]
    Gemm: Callable[..., Instruction]
    Post: Callable[..., Instruction]
    Fc: Callable[..., Instruction]
    Sync: Callable[..., Instruction]
    Mark: Callable[..., Instruction]
    End: Callable[..., Instruction]

    # ------------------------------------------------------------------ the definition
    @cached_property
    def _fields(self) -> dict[Opcode, dict[str, Any]]:
        return _field_shapes(self.config)

    @cached_property
    def _layouts(self) -> dict[Opcode, data.StructLayout]:
        result = {}
        for op, fields in self._fields.items():
            members: dict[str, Any] = {"opcode": unsigned(OPCODE_BITS), **fields}
            used = sum(unsigned(s).width if isinstance(s, int) else s.width for s in members.values())
            if used > INSTRUCTION_BITS:
                raise IsaError(f"{op.name} needs {used} bits, more than the {INSTRUCTION_BITS}-bit instruction")
            members["_reserved"] = unsigned(INSTRUCTION_BITS - used)
            result[op] = data.StructLayout(members)
        return result

    def layout(self, opcode: Opcode) -> data.StructLayout:
        """The 256-bit :class:`~amaranth.lib.data.StructLayout` of one opcode (``opcode`` field at bit 0)."""
        return self._layouts[Opcode(opcode)]

    def shape(self, opcode: Opcode, name: str) -> Any:
        """The Amaranth shape of one operand field (for gateware registers that hold it)."""
        return self._fields[Opcode(opcode)][name]

    def field_names(self, opcode: Opcode) -> list[str]:
        """The operand field names of an opcode, in layout order (without ``opcode`` and ``_reserved``)."""
        return list(self._fields[Opcode(opcode)])

    @cached_property
    def _offsets(self) -> dict[Opcode, list[tuple[str, int, int, bool]]]:
        out = {}
        for op, layout in self._layouts.items():
            out[op] = [(name, f.offset, f.shape.width, f.shape.signed)
                       for name, f in layout if name not in ("opcode", "_reserved")]
        return out

    # ------------------------------------------------------------------ packing
    def make(self, opcode: Opcode, **fields: int) -> Instruction:
        """A typed instruction of this set; missing fields are zero.

        Raises :class:`IsaError` naming the opcode and field for an unknown field or a value out of its range.
        """
        opcode = Opcode(opcode)
        cls = INSTRUCTION_CLASSES[opcode]
        unknown = set(fields) - set(self._fields[opcode])
        if unknown:
            known = sorted(self._fields[opcode])
            raise IsaError(f"{opcode.name} has no field(s) {sorted(unknown)}; fields are {known}")
        return cls(**fields, isa=self)

    def encode(self, opcode: Opcode, **fields: int) -> int:
        """Pack one instruction into an integer of :data:`INSTRUCTION_BITS` bits (``make(...).encode()``)."""
        return self.make(opcode, **fields).encode()

    def decode(self, word: int) -> Instruction:
        """Unpack one instruction word into its typed instruction. Raises :class:`IsaError` for an illegal opcode."""
        code = opcode_of(word)
        try:
            opcode = Opcode(code)
        except ValueError:
            raise IsaError(f"illegal opcode {code}") from None
        # every decoded value fits its field by construction: skip the constructor's range check
        ins = object.__new__(INSTRUCTION_CLASSES[opcode])
        fields: dict[str, Any] = {"isa": self}
        for name, offset, width, is_signed in self._offsets[opcode]:
            value = (word >> offset) & ((1 << width) - 1)
            if is_signed and value >> (width - 1):
                value -= 1 << width
            fields[name] = value
        ins.__dict__.update(fields)
        return ins

    # ------------------------------------------------------------------ streams
    @staticmethod
    def to_bytes(words: list[int]) -> bytes:
        """Serialize instruction words for DDR (little-endian, :data:`INSTRUCTION_BYTES` each)."""
        return b"".join(w.to_bytes(INSTRUCTION_BYTES, "little") for w in words)

    @staticmethod
    def from_bytes(blob: bytes | np.ndarray) -> list[int]:
        """Split a DDR byte image of instructions back into integer words."""
        raw = bytes(blob)
        if len(raw) % INSTRUCTION_BYTES:
            raise IsaError(f"instruction stream length {len(raw)} is not a multiple of {INSTRUCTION_BYTES}")
        return [int.from_bytes(raw[i:i + INSTRUCTION_BYTES], "little") for i in range(0, len(raw), INSTRUCTION_BYTES)]

    def disassemble(self, words: list[int]) -> str:
        """Text listing of an instruction stream, one instruction per line."""
        lines = []
        for pc, word in enumerate(words):
            try:
                text = str(self.decode(word))
            except IsaError as exc:
                text = f"<{exc}>"
            lines.append(f"{pc:6d}: {text}")
        return "\n".join(lines)

    def describe(self) -> str:
        """Markdown tables of every layout (used to check ``docs/isa.md``)."""
        out = []
        for op in Opcode:
            out.append(f"### {op.name} (opcode {int(op)})\n")
            out.append("| field | bits | width | signed |")
            out.append("| --- | --- | --- | --- |")
            for name, f in self.layout(op):
                if name == "_reserved":
                    continue
                w = f.shape.width
                out.append(f"| {name} | {f.offset + w - 1}:{f.offset} | {w} | {'yes' if f.shape.signed else 'no'} |")
            out.append("")
        return "\n".join(out)

