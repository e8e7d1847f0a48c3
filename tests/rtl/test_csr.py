"""The register file alone in Amaranth's simulator: AW/W in any order, strobes, B back-pressure, pulses, event log.

(The same registers are exercised through cocotbext-axi's AxiLiteMaster in ``bench_top.register_map``.)
"""

from __future__ import annotations

from amaranth.sim import Simulator

from dlproc.processor.config import ISA_VERSION, ProcessorConfig
from dlproc.processor.csr import ControlRegisters
from dlproc.processor.isa import CTRL_CLEAR, CTRL_IRQ_EN, CTRL_START, MAGIC, Reg

CONFIG = ProcessorConfig.preset("tiny_int8").replace(event_log_depth=16)


async def write(ctx, bus, addr, data, *, strb=0xF, w_delay=0, aw_delay=0, b_delay=0):
    """One AXI4-Lite write; AW and W raised after their own delays (in cycles), B taken after ``b_delay``."""
    pending = {"aw": aw_delay, "w": w_delay}
    while pending:
        for ch in list(pending):
            if pending[ch] == 0:
                ctx.set(getattr(bus, f"{ch}valid"), 1)
        if ctx.get(bus.awvalid):
            ctx.set(bus.awaddr, addr)
        if ctx.get(bus.wvalid):
            ctx.set(bus.wdata, data)
            ctx.set(bus.wstrb, strb)
        ready = {ch: ctx.get(getattr(bus, f"{ch}ready")) and ctx.get(getattr(bus, f"{ch}valid")) for ch in pending}
        await ctx.tick()
        for ch in list(pending):
            if ready[ch]:
                ctx.set(getattr(bus, f"{ch}valid"), 0)
                del pending[ch]
            elif pending[ch] > 0:
                pending[ch] -= 1
    for _ in range(b_delay):
        await ctx.tick()
    ctx.set(bus.bready, 1)
    for _ in range(20):
        if ctx.get(bus.bvalid):
            break
        await ctx.tick()
    assert ctx.get(bus.bvalid) and ctx.get(bus.bresp) == 0
    await ctx.tick()
    ctx.set(bus.bready, 0)


async def read(ctx, bus, addr):
    ctx.set(bus.araddr, addr)
    ctx.set(bus.arvalid, 1)
    while not ctx.get(bus.arready):
        await ctx.tick()
    await ctx.tick()
    ctx.set(bus.arvalid, 0)
    ctx.set(bus.rready, 1)
    while not ctx.get(bus.rvalid):
        await ctx.tick()
    value, resp = ctx.get(bus.rdata), ctx.get(bus.rresp)
    await ctx.tick()
    ctx.set(bus.rready, 0)
    assert resp == 0
    return value


def run(bench):
    dut = ControlRegisters(config=CONFIG)
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def testbench(ctx):
        await bench(ctx, dut)

    sim.add_testbench(testbench)
    sim.run()


def test_identification_and_reset_values():
    async def bench(ctx, dut):
        bus = dut.s_axil
        assert await read(ctx, bus, Reg.MAGIC) == MAGIC
        assert await read(ctx, bus, Reg.ISA_VERSION) == ISA_VERSION
        assert await read(ctx, bus, Reg.CONFIG_HASH) == CONFIG.hardware_hash_int
        assert await read(ctx, bus, Reg.DDR_BASE_LO) == CONFIG.ddr_base
        assert await read(ctx, bus, Reg.DDR_BASE_HI) == 0
        assert await read(ctx, bus, Reg.DDR_SIZE) == CONFIG.ddr_size
        for addr in (0x34, 0x64, 0x200, 0xFFC):
            assert await read(ctx, bus, addr) == 0
    run(bench)


def test_write_channel_orders_and_strobes():
    async def bench(ctx, dut):
        bus = dut.s_axil
        await write(ctx, bus, Reg.INSTR_ADDR, 0x1111_1111)                      # together
        assert await read(ctx, bus, Reg.INSTR_ADDR) == 0x1111_1111
        await write(ctx, bus, Reg.INSTR_ADDR, 0x2222_2222, w_delay=3)           # AW first
        assert await read(ctx, bus, Reg.INSTR_ADDR) == 0x2222_2222
        await write(ctx, bus, Reg.INSTR_COUNT, 0x3333_3333, aw_delay=4)         # W first
        assert await read(ctx, bus, Reg.INSTR_COUNT) == 0x3333_3333
        await write(ctx, bus, Reg.INSTR_COUNT, 0x0000_5500, strb=0b0010)        # one byte lane
        assert await read(ctx, bus, Reg.INSTR_COUNT) == 0x3333_5533
        await write(ctx, bus, Reg.DDR_BASE_HI, 0x12, b_delay=5)                 # B held back
        assert await read(ctx, bus, Reg.DDR_BASE_HI) == 0x12
        assert ctx.get(dut.ddr_base) == (0x12 << 32) | CONFIG.ddr_base
        await write(ctx, bus, Reg.MAGIC, 0)                                      # read-only: ignored
        assert await read(ctx, bus, Reg.MAGIC) == MAGIC
    run(bench)


def test_ctrl_pulses_and_status():
    async def bench(ctx, dut):
        bus = dut.s_axil
        ctx.set(dut.busy, 0)
        await write(ctx, bus, Reg.CTRL, CTRL_START | CTRL_IRQ_EN)
        await write(ctx, bus, Reg.CTRL, CTRL_CLEAR | CTRL_IRQ_EN)
        assert await read(ctx, bus, Reg.CTRL) == CTRL_IRQ_EN
        ctx.set(dut.busy, 1)
        await write(ctx, bus, Reg.CTRL, CTRL_START)                             # ignored while busy
        ctx.set(dut.done, 1)
        ctx.set(dut.error_code, 5)
        ctx.set(dut.error_pc, 1234)
        assert await read(ctx, bus, Reg.STATUS) == 0b011
        assert await read(ctx, bus, Reg.ERROR_CODE) == 5
        assert await read(ctx, bus, Reg.ERROR_PC) == 1234
        assert not ctx.get(dut.irq_en)

    # Count the pulses with a process watching every cycle.
    dut = ControlRegisters(config=CONFIG)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    pulses = {"start": 0, "clear": 0}

    async def watch(ctx):
        async for _clk, _rst, start, clear in ctx.tick().sample(dut.start, dut.clear):
            pulses["start"] += start
            pulses["clear"] += clear

    async def testbench(ctx):
        await bench(ctx, dut)

    sim.add_process(watch)
    sim.add_testbench(testbench)
    sim.run()
    assert pulses == {"start": 1, "clear": 1}


def test_counters_and_event_log():
    async def bench(ctx, dut):
        bus = dut.s_axil
        ctx.set(dut.busy, 1)
        ctx.set(dut.mac_active, 1)
        await ctx.tick().repeat(10)
        ctx.set(dut.mac_active, 0)
        for layer in range(20):                                                  # 4 more than the depth
            ctx.set(dut.event_layer, 100 + layer)
            ctx.set(dut.event_valid, 1)
            await ctx.tick()
            ctx.set(dut.event_valid, 0)
            for _ in range(layer % 3):
                await ctx.tick()
        ctx.set(dut.busy, 0)
        cycles = await read(ctx, bus, Reg.CYCLES_LO)
        assert cycles > 30 and await read(ctx, bus, Reg.CYCLES_HI) == 0
        assert await read(ctx, bus, Reg.MAC_BUSY_LO) == 10
        assert await read(ctx, bus, Reg.EVENT_COUNT) == 16
        previous = 0
        for i in range(16):
            await write(ctx, bus, Reg.EVENT_INDEX, i)
            assert await read(ctx, bus, Reg.EVENT_ID) == 100 + i
            cycle = await read(ctx, bus, Reg.EVENT_CYCLE_LO)
            assert previous < cycle <= cycles
            previous = cycle
        await write(ctx, bus, Reg.EVENT_INDEX, 16)
        assert await read(ctx, bus, Reg.EVENT_ID) == 0
        ctx.set(dut.event_keep, 3)                                               # a failed DMA instruction
        ctx.set(dut.event_truncate, 1)
        await ctx.tick()
        ctx.set(dut.event_truncate, 0)
        assert await read(ctx, bus, Reg.EVENT_COUNT) == 3
        ctx.set(dut.busy, 1)
        await write(ctx, bus, Reg.CTRL, CTRL_START)                             # START while busy: no reset
        assert await read(ctx, bus, Reg.EVENT_COUNT) == 3
        ctx.set(dut.busy, 0)
        await write(ctx, bus, Reg.CTRL, CTRL_START)                             # START clears the counters
        assert await read(ctx, bus, Reg.EVENT_COUNT) == 0
        assert await read(ctx, bus, Reg.MAC_BUSY_LO) == 0
    run(bench)
