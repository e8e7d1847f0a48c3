"""Golden model: error paths, the hazard check, and the register interface of GoldenDevice."""

import numpy as np
import pytest

from dlproc.processor.config import ProcessorConfig
from dlproc.processor.isa import (
    CTRL_CLEAR,
    CTRL_START,
    MAGIC,
    STATUS_DONE,
    STATUS_ERROR,
    Buffer,
    ErrorCode,
    InstructionSet,
    Opcode,
    Reg,
)
from dlproc.sim.golden import GoldenDevice, GoldenModel, HazardError
from dlproc.sim.hazards import IllegalProgram, verify_program

CFG = ProcessorConfig.preset("tiny_int8")
ISA = InstructionSet(CFG)


def run(words, *, count=None, ddr_size=1 << 16, check_hazards=True):
    ddr = np.zeros(ddr_size, np.uint8)
    blob = ISA.to_bytes(words)
    ddr[:len(blob)] = np.frombuffer(blob, np.uint8)
    return GoldenModel(CFG).run(ddr, 0, len(words) if count is None else count, check_hazards=check_hazards), ddr


def test_end_stops_cleanly():
    res, _ = run([ISA.encode(Opcode.SYNC), ISA.encode(Opcode.MARK, layer=3), ISA.encode(Opcode.END)])
    assert res.error == ErrorCode.NONE and res.error_pc == 2 and res.events == [(3, 1)]


ERROR_CASES = [
    ([0], ErrorCode.ILLEGAL_OPCODE, 0),
    ([ISA.encode(Opcode.SYNC), 9], ErrorCode.ILLEGAL_OPCODE, 1),
    ([ISA.encode(Opcode.SYNC)], ErrorCode.PROGRAM_END, 1),
    ([ISA.encode(Opcode.LOAD, buffer=3, len0=4, n1=1, n2=1)], ErrorCode.ILLEGAL_FIELD, 0),
    ([ISA.encode(Opcode.LOAD, buffer=0, len0=4, n1=0, n2=1)], ErrorCode.ILLEGAL_FIELD, 0),
    ([ISA.encode(Opcode.LOAD, buffer=0, len0=6, n1=1, n2=1)], ErrorCode.ILLEGAL_FIELD, 0),  # not beat multiple
    ([ISA.encode(Opcode.LOAD, buffer=0, buf_addr=1023, len0=8, n1=1, n2=1)], ErrorCode.ILLEGAL_FIELD, 0),
    ([ISA.encode(Opcode.LOAD, buffer=0, ddr_addr=0xFFFC, len0=8, n1=1, n2=1)], ErrorCode.DDR_WINDOW, 0),
    ([ISA.encode(Opcode.STORE, ddr_addr=0x10000, n0=1, n1=1, n2=1)], ErrorCode.DDR_WINDOW, 0),
    ([ISA.encode(Opcode.STORE, n0=1, n1=1, n2=1, sb0=2)], ErrorCode.ILLEGAL_FIELD, 0),
    ([ISA.encode(Opcode.GEMM, mode=3, r0=1, r1=1, r2=1, s0=1, s1=1)], ErrorCode.ILLEGAL_FIELD, 0),
    ([ISA.encode(Opcode.GEMM, r0=1, r1=1, r2=1, s0=16, s1=17)], ErrorCode.ILLEGAL_FIELD, 0),  # acc range
    ([ISA.encode(Opcode.GEMM, r0=3, r1=1, r2=1, s0=1, s1=1, ri0=1023)], ErrorCode.ILLEGAL_FIELD, 0),  # inp range
    ([ISA.encode(Opcode.FC, n_out=1, n_in=2, ddr_addr=0xFFFC)], ErrorCode.DDR_WINDOW, 0),
]


@pytest.mark.parametrize("words,code,pc", ERROR_CASES)
def test_errors_stop_with_code_and_pc(words, code, pc):
    res, _ = run(words)
    assert (res.error, res.error_pc) == (code, pc), res.message


def test_fetch_outside_window_is_reported_at_that_instruction():
    words = [ISA.encode(Opcode.SYNC)] * 4
    ddr = np.zeros(128, np.uint8)
    ddr[:] = np.frombuffer(ISA.to_bytes(words), np.uint8)
    res = GoldenModel(CFG).run(ddr, 0, 10)
    assert (res.error, res.error_pc) == (ErrorCode.DDR_WINDOW, 4)


def test_hazard_between_engines_is_detected():
    load = ISA.encode(Opcode.LOAD, buffer=int(Buffer.INPUT), buf_addr=0, len0=64, n1=1, n2=1)
    gemm = ISA.encode(Opcode.GEMM, r0=1, r1=1, r2=1, s0=1, s1=4, si1=1)
    with pytest.raises(HazardError, match="INPUT"):
        run([load, gemm, ISA.encode(Opcode.END)])
    res, _ = run([load, ISA.encode(Opcode.SYNC), gemm, ISA.encode(Opcode.END)])
    assert res.error == ErrorCode.NONE
    # an FC never shares a SYNC interval with the compute engine (shared buffer ports)
    fc = ISA.encode(Opcode.FC, n_out=1, n_in=1, inp_base=100, acc_base=100, ddr_addr=0x100)
    with pytest.raises(HazardError):
        run([gemm, fc, ISA.encode(Opcode.END)])


def test_static_verification_finds_what_execution_finds():
    """verify_program checks a program without running it: the hazard and illegal words of the tests above."""
    load = ISA.encode(Opcode.LOAD, buffer=int(Buffer.INPUT), buf_addr=0, len0=64, n1=1, n2=1)
    gemm = ISA.encode(Opcode.GEMM, r0=1, r1=1, r2=1, s0=1, s1=4, si1=1)
    end, sync = ISA.encode(Opcode.END), ISA.encode(Opcode.SYNC)
    verify_program(CFG, [load, sync, gemm, end])
    verify_program(CFG, [])
    with pytest.raises(HazardError, match="instruction 1 .GEMM. .* INPUT"):
        verify_program(CFG, [load, gemm, end])
    with pytest.raises(IllegalProgram, match="instruction 1 .*zero extent"):
        verify_program(CFG, [sync, ISA.encode(Opcode.LOAD, buffer=0, len0=4, n1=0, n2=1), end])
    with pytest.raises(IllegalProgram, match="illegal opcode 9"):
        verify_program(CFG, [sync, 9, end])
    with pytest.raises(IllegalProgram, match="does not end with END"):
        verify_program(CFG, [load, sync])
    for words, _code, _pc in ERROR_CASES:   # every word the model traps as ILLEGAL_FIELD is refused statically
        if _code in (ErrorCode.ILLEGAL_FIELD, ErrorCode.ILLEGAL_OPCODE):
            with pytest.raises(IllegalProgram):
                verify_program(CFG, [*words, end])


def test_device_registers_and_start():
    dev = GoldenDevice(CFG)
    assert dev.read_reg(Reg.MAGIC) == MAGIC
    assert dev.read_reg(Reg.CONFIG_HASH) == CFG.hardware_hash_int
    words = [ISA.encode(Opcode.MARK, layer=7), ISA.encode(Opcode.END)]
    dev.write_ddr(0x100, ISA.to_bytes(words))
    dev.write_reg(Reg.INSTR_ADDR, 0x100)
    dev.write_reg(Reg.INSTR_COUNT, 2)
    dev.write_reg(Reg.CTRL, CTRL_START)
    assert dev.read_reg(Reg.STATUS) == STATUS_DONE and dev.wait_irq(1.0)
    assert dev.read_reg(Reg.EVENT_COUNT) == 1
    dev.write_reg(Reg.EVENT_INDEX, 0)
    assert dev.read_reg(Reg.EVENT_ID) == 7
    dev.write_reg(Reg.INSTR_COUNT, 1)
    dev.write_reg(Reg.CTRL, CTRL_CLEAR | CTRL_START)
    assert dev.read_reg(Reg.STATUS) == STATUS_ERROR
    assert dev.read_reg(Reg.ERROR_CODE) == ErrorCode.PROGRAM_END and dev.read_reg(Reg.ERROR_PC) == 1
