"""The one instruction-set definition: encode/decode round trip, range errors, docs/isa.md in sync."""

from pathlib import Path

import numpy as np
import pytest

from dlproc.processor.config import PRESETS, ProcessorConfig
from dlproc.processor.isa import INSTRUCTION_BITS, InstructionSet, IsaError, Opcode

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
