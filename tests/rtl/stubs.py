"""Stand-ins for the compute engine and the fc unit with their exact members, for benches of the control path.

They touch no buffer: :class:`StubComputeEngine` is busy for a few cycles per instruction, :class:`StubFcUnit`
takes exactly the weight beats its FC instruction implies (``n_out`` rows of ``n_in`` input entries) and is
busy until the last one.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from dlproc.processor.buffers import buffer_geometry
from dlproc.processor.config import ProcessorConfig
from dlproc.processor.isa import INSTRUCTION_BITS, InstructionSet, Opcode

__all__ = ["StubComputeEngine", "StubFcUnit"]


class StubComputeEngine(wiring.Component):
    """Accepts GEMM/POST words and stays busy for :attr:`BUSY_CYCLES` cycles; never touches a buffer."""

    BUSY_CYCLES = 5

    def __init__(self, config: ProcessorConfig):
        geo = {name: buffer_geometry(config, name) for name in ("input", "weight", "param", "acc", "output")}
        super().__init__({
            "cmd": In(stream.Signature(INSTRUCTION_BITS)), "busy": Out(1), "mac_active": Out(1),
            "inp_rd": In(geo["input"].read_port_signature()), "wgt_rd": In(geo["weight"].read_port_signature()),
            "acc_rd": In(geo["acc"].read_port_signature()), "acc_wr": In(geo["acc"].write_port_signature()),
            "par_rd": In(geo["param"].read_port_signature()), "out_wr": In(geo["output"].write_port_signature()),
        })

    def elaborate(self, platform):
        m = Module()
        left = Signal(range(self.BUSY_CYCLES + 1))
        m.d.comb += [self.cmd.ready.eq(left == 0), self.busy.eq(left != 0), self.acc_wr.en.eq(0),
                     self.out_wr.en.eq(0)]
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += left.eq(self.BUSY_CYCLES)
        with m.Elif(left != 0):
            m.d.sync += left.eq(left - 1)
        return m


class StubFcUnit(wiring.Component):
    """Accepts an FC word and consumes its weight beats; busy until the last beat."""

    def __init__(self, config: ProcessorConfig):
        self._config = config
        self._isa = InstructionSet(config)
        geo = {name: buffer_geometry(config, name) for name in ("input", "acc")}
        super().__init__({
            "cmd": In(stream.Signature(INSTRUCTION_BITS)), "weights": In(stream.Signature(config.axi_data_width)),
            "busy": Out(1),
            "inp_rd": In(geo["input"].read_port_signature()), "acc_rd": In(geo["acc"].read_port_signature()),
            "acc_wr": In(geo["acc"].write_port_signature()),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        fc = data.View(self._isa.layout(Opcode.FC), self.cmd.payload)
        row_beats = cfg.input_entry_bytes // cfg.beat_bytes
        left = Signal(16 + 16 + 8)
        m.d.comb += [self.cmd.ready.eq(left == 0), self.busy.eq(left != 0), self.acc_wr.en.eq(0),
                     self.weights.ready.eq(left != 0)]
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += left.eq(fc.n_out * fc.n_in * row_beats)
        with m.Elif(self.weights.valid & self.weights.ready):
            m.d.sync += left.eq(left - 1)
        return m
