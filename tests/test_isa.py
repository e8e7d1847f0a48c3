"""The one instruction-set definition: encode/decode round trip, range errors, docs/isa.md in sync."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from dlproc.processor.buffers import CONTROL_WORD_LAYOUT, MULT_WORD_LAYOUT, pack_fields, unpack_field
from dlproc.processor.config import PRESETS, ProcessorConfig
from dlproc.processor.isa import INSTRUCTION_BITS, Gemm, GemmMode, InstructionSet, IsaError, Opcode

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_layout_fits_and_round_trips(name):
    isa = InstructionSet(ProcessorConfig.preset(name))
    rng = np.random.default_rng(0)
    for op in Opcode:
        assert isa.layout(op).size == INSTRUCTION_BITS
        for _ in range(20):
            fields = {}
            for fname, f in isa.layout(op):
                if fname in ("opcode", "_reserved"):
                    continue
                w = f.shape.width
                lo, hi = (-(1 << (w - 1)), (1 << (w - 1)) - 1) if f.shape.signed else (0, (1 << w) - 1)
                fields[fname] = int(rng.integers(lo, hi, endpoint=True))
            word = isa.encode(op, **fields)
            assert word < 1 << INSTRUCTION_BITS
            ins = isa.decode(word)
            assert ins.opcode == op and ins.fields == fields
            # the Amaranth layout's own constant packing agrees with the encoder
            assert isa.layout(op).const({"opcode": int(op), **fields}).as_value().value == word


def test_field_out_of_range_is_named():
    isa = InstructionSet(ProcessorConfig.preset("tiny_int8"))
    with pytest.raises(IsaError, match=r"GEMM.r0 = 4096 does not fit in 12 unsigned bits"):
        isa.encode(Opcode.GEMM, r0=4096)
    with pytest.raises(IsaError, match="has no field"):
        isa.encode(Opcode.LOAD, r0=1)
    with pytest.raises(IsaError, match="illegal opcode 0"):
        isa.decode(0)


def test_docs_isa_md_is_in_sync_with_the_definition():
    text = (ROOT / "docs" / "isa.md").read_text()
    begin, end = "<!-- BEGIN GENERATED LAYOUTS -->", "<!-- END GENERATED LAYOUTS -->"
    generated = text[text.index(begin) + len(begin):text.index(end)].strip()
    expected = InstructionSet(ProcessorConfig.preset("zcu102_int8")).describe().strip()
    assert generated == expected, "docs/isa.md is stale: regenerate its layout section from InstructionSet.describe()"
    for op in Opcode:
        assert f"**{op.name}**" in text, f"docs/isa.md does not describe {op.name}"


def test_typed_instructions_check_fields_at_construction():
    isa = InstructionSet(ProcessorConfig.preset("tiny_int8"))
    g = isa.Gemm(mode=GemmMode.MAC, overwrite=True, r0=2, imm=-5)
    assert isinstance(g, Gemm) and g.opcode == Opcode.GEMM and g.overwrite == 1 and g.r1 == 0
    back = isa.decode(g.encode())
    assert type(back) is Gemm and back == g and back.fields == g.fields
    # the typed word equals the Amaranth layout's own packing
    assert isa.layout(Opcode.GEMM).const({"opcode": int(Opcode.GEMM), **g.fields}).as_value().value == g.encode()
    with pytest.raises(IsaError, match=r"GEMM.r0 = 4096 does not fit in 12 unsigned bits \(0..4095\)"):
        isa.Gemm(r0=4096)
    with pytest.raises(IsaError, match=r"GEMM.imm = -32769 does not fit in 16 signed bits"):
        isa.Gemm(imm=-32769)
    with pytest.raises(IsaError, match=r"LOAD has no field\(s\) \['r0'\]"):
        isa.Load(r0=1)
    with pytest.raises(IsaError, match="not an integer"):
        isa.Mark(layer=1.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.r0 = 3


def test_parameter_words_pack_as_the_gateware_layouts():
    """pack_fields/unpack_field against Amaranth's own Layout.const on random values of every field."""
    rng = np.random.default_rng(3)
    for layout in (CONTROL_WORD_LAYOUT, MULT_WORD_LAYOUT):
        names = [n for n, _ in layout if not n.startswith("_")]
        for _ in range(50):
            values = {}
            for n in names:
                shape = layout[n].shape
                lo, hi = (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed \
                    else (0, (1 << shape.width) - 1)
                values[n] = int(rng.integers(lo, hi, endpoint=True))
            word = int(pack_fields(layout, **values))
            assert word == layout.const(values).as_value().value
            assert {n: int(unpack_field(layout, n, np.array([word]))[0]) for n in names} == values
    with pytest.raises(ValueError, match="shift = 64 does not fit in 6 bits"):
        pack_fields(CONTROL_WORD_LAYOUT, shift=np.array([3, 64]))
