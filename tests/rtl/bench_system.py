"""cocotb bench of the complete processor (real compute engine and fc unit) against the golden device.

Random small layers: LOAD of inputs, weights and parameters, GEMM in the three modes (with or without finalize),
POST, FC, STORE, separated by SYNC where the golden model's hazard check demands it. The output written to DDR,
the status and the event log must match the golden device bit for bit.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np

from dlproc.processor.isa import STATUS_DONE, Buffer, GemmMode, Opcode
from dlproc.processor.rules import gemm_modes

from .bench_top import BEAT, CONFIG, END, ISA, SYNC, TB, load, mark, store

C = CONFIG
INPUT_AT, WEIGHT_AT, PARAM_AT, FC_AT, OUT_AT, PROGRAM_AT = 0x10000, 0x20000, 0x30000, 0x40000, 0x60000, 0x1000


def random_params(rng: np.random.Generator, entries: int) -> np.ndarray:
    """Parameter entries (entries, 4, co) uint32: bias, mult_pos, mult_neg, control."""
    co = C.conv_oc_lanes
    par = np.zeros((entries, 4, co), np.uint32)
    par[:, 0] = rng.integers(-3000, 3000, (entries, co)).astype(np.int32).view(np.uint32)
    par[:, 1] = rng.integers(-(1 << 15), 1 << 15, (entries, co)).astype(np.int64) & 0xFFFF
    par[:, 2] = rng.integers(-(1 << 15), 1 << 15, (entries, co)).astype(np.int64) & 0xFFFF
    shift = rng.integers(0, 24, (entries, co))
    lo = rng.integers(-128, 0, (entries, co))
    hi = rng.integers(0, 128, (entries, co))
    par[:, 3] = (shift | (lo & 0xFF) << 8 | (hi & 0xFF) << 16).astype(np.uint32)
    return par


def random_layer(rng: random.Random, nrng: np.random.Generator, tb: TB, layer: int) -> list[int]:
    """Data in DDR and the program of one random small layer."""
    n_inp = rng.randint(16, 96)
    n_wgt = rng.randint(1, 8)
    n_par = 2
    tb.put(INPUT_AT, nrng.integers(-128, 128, n_inp * C.input_entry_bytes, dtype=np.int8).tobytes())
    tb.put(WEIGHT_AT, nrng.integers(-128, 128, n_wgt * C.weight_entry_bytes, dtype=np.int8).tobytes())
    tb.put(PARAM_AT, random_params(nrng, n_par).tobytes())
    tb.put(FC_AT, nrng.integers(-128, 128, 8192, dtype=np.int8).tobytes())
    words = [mark(layer),
             load(Buffer.INPUT, 0, INPUT_AT, n_inp * C.input_entry_bytes),
             load(Buffer.WEIGHT, 0, WEIGHT_AT, C.weight_entry_bytes, n1=n_wgt, s1=C.weight_entry_bytes),
             load(Buffer.PARAM, 0, PARAM_AT, n_par * C.param_entry_bytes), SYNC]
    out_entries = 0
    for step in range(rng.randint(1, 3)):
        mode = rng.choice(gemm_modes(C))  # the modes this processor has
        r0, r1 = rng.randint(1, 3), rng.randint(1, 2)
        s0, s1 = rng.randint(1, 4), rng.randint(1, 3)
        if mode == GemmMode.MAC:
            while r0 * r1 > n_wgt:
                r0, r1 = max(1, r0 - 1), 1
        ri0, ri1, si0, si1 = rng.randint(0, 3), rng.randint(0, 5), rng.randint(0, 4), rng.randint(0, 6)
        span = (r0 - 1) * ri0 + (r1 - 1) * ri1 + (s0 - 1) * si0 + (s1 - 1) * si1
        inp_base = rng.randint(0, max(0, n_inp - 1 - span))
        if inp_base + span >= n_inp:
            ri0 = ri1 = si0 = si1 = 0
        finalize = rng.random() < 0.6
        acc_base = 8 * step
        out_base = out_entries
        words.append(ISA.encode(Opcode.GEMM, mode=mode, overwrite=1, finalize=int(finalize), acc_base=acc_base,
                                out_base=out_base, inp_base=inp_base, wgt_base=0, param_addr=rng.randint(0, 1),
                                r0=r0, r1=r1, r2=1, s0=s0, s1=s1, ri0=ri0, ri1=ri1, si0=si0, si1=si1,
                                imm=rng.randint(-300, 300)))
        if not finalize:
            words.append(ISA.encode(Opcode.POST, acc_base=acc_base, out_base=out_base, n=s0 * s1,
                                    param_addr=0, param_inc=rng.randint(0, 1)))
        out_entries += s0 * s1
    # fc: accumulators after the GEMM ones, post-processed into the outputs after the GEMM ones
    n_out, n_in = rng.randint(1, 2 * C.conv_oc_lanes), rng.randint(1, 6)
    fc_acc = 32
    words += [SYNC, ISA.encode(Opcode.FC, accumulate=0, ddr_addr=FC_AT, row_stride=BEAT * rng.randint(n_in, 40),
                               n_out=n_out, n_in=n_in, inp_base=rng.randint(0, n_inp - n_in), acc_base=fc_acc),
              SYNC]
    fc_entries = -(-n_out // C.conv_oc_lanes)
    words += [ISA.encode(Opcode.POST, acc_base=fc_acc, out_base=out_entries, n=fc_entries, param_addr=1), SYNC]
    out_entries += fc_entries
    words += [store(0, OUT_AT, n0=out_entries, n2=C.subblocks_per_output, s2=out_entries * C.input_entry_bytes),
              END]
    return words


@cocotb.test()
@cocotb.parametrize(backpressure=[False, True])
async def random_layers(dut, backpressure):
    """Random small layers on the real engines, compared with the golden device (hazard check on)."""
    tb = TB(dut)
    tb.golden.check_hazards = True
    tb.set_generators(backpressure, backpressure)
    await tb.reset()
    await tb.use_window()
    rng = random.Random(11 + backpressure)
    nrng = np.random.default_rng(12 + backpressure)
    for layer in range(8):
        words = random_layer(rng, nrng, tb, layer)
        got = await tb.run(words, PROGRAM_AT, what=f"layer {layer}")
        assert got["STATUS"] == STATUS_DONE, ISA.disassemble(words)
