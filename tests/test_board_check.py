"""``dlproc board check`` on a fake board: a sysfs/procfs/debugfs tree under tmp_path and a simulated processor.

The register page forwards to the golden model, the DDR buffer only takes aligned words (the strict fake of
test_fpga_driver), and the sync calls are recorded, so the check runs the same FpgaDevice and Driver code as on the
board. Each step is also shown to fail, with a message that says what to do, when its part of the board is wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from nets import ALL_NETS
from test_fpga_driver import ForwardedRegisters, RecordingSync, SimulatedInterrupt, StrictMemory

from dlproc.boards.zynqmp import PsAttachment
from dlproc.processor.config import ISA_VERSION, ProcessorConfig
from dlproc.processor.isa import MAGIC, STATUS_DONE, Reg
from dlproc.runtime import board_check as bc
from dlproc.runtime.cli import main
from dlproc.runtime.fpga import FpgaDevice
from dlproc.sim.golden import GoldenDevice

CONFIG = ProcessorConfig.preset("tiny_int8")
STEPS = ["kernel command line", "FPGA manager", "UIO device 'dlproc'", "interrupt", "u-dma-buf 'udmabuf0'",
         "PL clock", "processor registers", "one-instruction program", "tiny network vs golden model"]


def fake_board(root: Path, config: ProcessorConfig = CONFIG) -> bc.BoardPaths:
    """The kernel interfaces of a correctly set-up ZCU102 (values as the real files print them)."""
    ps = PsAttachment.from_config(config)
    paths = bc.BoardPaths.under(root)
    files = {
        paths.proc / "cmdline": "earlycon console=ttyPS0,115200 root=/dev/mmcblk0p2 rw rootwait clk_ignore_unused "
                                f"uio_pdrv_genirq.of_id=generic-uio cma={ps.cma_mib}M\n",
        paths.proc / "meminfo": f"MemTotal:        4038324 kB\nCmaTotal:        {ps.cma_mib * 1024} kB\n"
                                "CmaFree:          12288 kB\n",
        paths.proc / "interrupts": "           CPU0       CPU1       CPU2       CPU3\n"
                                   " 11:      51722      41302      53316      41231     GICv2  30 Level  arch_timer\n"
                                   " 47:          0          0          0          0     GICv2 156 Level     axi-pmon\n"
                                   " 48:          3          0          0          0     GICv2 121 Level     dlproc\n",
        paths.sysfs / "class" / "fpga_manager" / "fpga0" / "state": "operating\n",
        paths.sysfs / "class" / "uio" / "uio0" / "name": "axi-pmon\n",
        paths.sysfs / "class" / "uio" / "uio1" / "name": "dlproc\n",
        paths.sysfs / "class" / "uio" / "uio1" / "maps" / "map0" / "addr": "0x00000000a0000000\n",
        paths.sysfs / "class" / "uio" / "uio1" / "maps" / "map0" / "size": "0x0000000000001000\n",
        paths.sysfs / "class" / "u-dma-buf" / "udmabuf0" / "phys_addr": "0x0000000060000000\n",
        paths.sysfs / "class" / "u-dma-buf" / "udmabuf0" / "size": f"{ps.ddr_size}\n",
        paths.sysfs / "class" / "u-dma-buf" / "udmabuf0" / "sync_mode": "2\n",
        paths.debugfs / "clk" / "pl0_ref" / "clk_rate": f"{ps.pl_clk0_hz - 999}\n",  # a little under, as Vivado reports
        paths.debugfs / "clk" / "pl0_ref" / "clk_enable_count": "1\n",
        paths.dev / "udmabuf0": "",
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return paths


class CountingGolden(GoldenDevice):
    """The golden model (which has no timing) with a cycle counter that a finished program leaves non-zero."""

    def read_reg(self, offset: int) -> int:
        if offset == Reg.CYCLES_LO and self.last_result is not None:
            return 1 + int(self.read_reg(Reg.INSTR_COUNT))
        return super().read_reg(offset)


def simulated_device(config: ProcessorConfig = CONFIG, memory=StrictMemory):
    """A factory for board_check(open_device=...): FpgaDevice on the golden model, strict DDR, recorded syncs."""
    log: list = []

    def open_device(uio_path: Path) -> FpgaDevice:
        assert uio_path.name == "uio1"                   # found by name, not uio0
        gold = CountingGolden(config)
        return FpgaDevice(config, regs=ForwardedRegisters(gold, log), ddr=memory(gold.ddr, log),
                          ddr_phys_base=gold.ddr_phys_base, dma_sync=RecordingSync(log),
                          interrupt=SimulatedInterrupt(gold))
    return open_device, log


def test_every_step_passes_in_order(tmp_path: Path) -> None:
    lines: list[str] = []
    open_device, log = simulated_device()
    checks = bc.board_check(CONFIG, paths=fake_board(tmp_path), open_device=open_device, out=lines.append)
    assert [c.name for c in checks] == STEPS
    assert all(c.ok for c in checks), "\n".join(lines)
    assert [line.split(":")[0] for line in lines] == [f"PASS  {name}" for name in STEPS]
    rate = (PsAttachment.from_config(CONFIG).pl_clk0_hz - 999) / 1e6
    assert "121" in lines[3] and f"{tmp_path}/dev/uio1" in lines[2] and f"{rate:.4f} MHz" in lines[5]
    assert any(e[0] == "sync_for_device" for e in log) and any(e[0] == "sync_for_cpu" for e in log)


class CorruptingMemory(StrictMemory):
    """DDR whose reads by the CPU see a stale low bit in every word (what a missing cache invalidate looks like)."""

    def _load_words(self, byte_offset: int, count: int) -> np.ndarray:
        return super()._load_words(byte_offset, count) ^ np.uint64(1)


def test_tiny_network_step_catches_wrong_data(tmp_path: Path) -> None:
    open_device, _ = simulated_device(memory=CorruptingMemory)
    checks = bc.board_check(CONFIG, paths=fake_board(tmp_path), open_device=open_device, out=None)
    assert [c.ok for c in checks] == [True] * 8 + [False]
    assert "tensors differ" in checks[-1].detail


@pytest.mark.parametrize("edit,step,message", [
    (lambda p: (p.proc / "cmdline").write_text("root=/dev/mmcblk0p2 cma=512M uio_pdrv_genirq.of_id=generic-uio"),
     "kernel command line", "clk_ignore_unused missing"),
    (lambda p: (p.proc / "meminfo").write_text("CmaTotal:         262144 kB\n"), "kernel command line",
     "cma=320M"),
    (lambda p: (p.sysfs / "class/fpga_manager/fpga0/state").write_text("write error\n"), "FPGA manager",
     "fpgautil -b"),
    (lambda p: (p.sysfs / "class/uio/uio1/name").write_text("other\n"), "UIO device 'dlproc'",
     "no UIO device named 'dlproc'"),
    (lambda p: (p.proc / "interrupts").write_text("           CPU0\n"), "interrupt", "uio_pdrv_genirq"),
    (lambda p: (p.sysfs / "class/u-dma-buf/udmabuf0/sync_mode").write_text("1\n"), "u-dma-buf 'udmabuf0'",
     "sync_mode must be 2"),
    (lambda p: (p.sysfs / "class/u-dma-buf/udmabuf0/size").write_text("65536\n"), "u-dma-buf 'udmabuf0'",
     "bytes needed"),
    (lambda p: (p.debugfs / "clk/pl0_ref/clk_rate").write_text("250000000\n"), "PL clock", "clocking0"),
    (lambda p: (p.debugfs / "clk/pl0_ref/clk_enable_count").write_text("0\n"), "PL clock", "gated"),
])
def test_each_sysfs_step_fails_with_a_fix(tmp_path: Path, edit, step: str, message: str) -> None:
    paths = fake_board(tmp_path)
    edit(paths)
    open_device, _ = simulated_device()
    checks = {c.name: c for c in bc.board_check(CONFIG, paths=paths, open_device=open_device, out=None)}
    assert checks[step].ok is False and message in checks[step].detail, checks[step].detail
    assert sum(c.ok is False for c in checks.values()) == 1 or step.startswith("UIO")


class Registers:
    """A register page with fixed contents (what a wrong bitstream or PS setting shows)."""

    def __init__(self, values: dict):
        self.values = values

    def read_reg(self, offset: int) -> int:
        return self.values.get(offset, 0)


@pytest.mark.parametrize("values,message", [
    ({Reg.MAGIC: 0}, "no processor at the register page"),
    ({Reg.MAGIC: MAGIC}, "M_AXI_HPM0_FPD width"),                       # offsets 4 and 8 read 0
    ({Reg.MAGIC: MAGIC, Reg.ISA_VERSION: ISA_VERSION, Reg.CONFIG_HASH: 0x1234}, "compile for this one"),
])
def test_register_step_names_the_cause(values: dict, message: str) -> None:
    check = bc.check_registers(Registers(values), CONFIG)
    assert check.ok is False and message in check.detail
    ok = bc.check_registers(Registers({Reg.MAGIC: MAGIC, Reg.ISA_VERSION: ISA_VERSION,
                                       Reg.CONFIG_HASH: CONFIG.hardware_hash_int}), CONFIG)
    assert ok.ok


def test_cli_board_check_on_a_fake_tree(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The command end to end on regular files: the register page answers MAGIC/ISA/hash and shows DONE, but no
    processor computes, so the one-instruction program fails on its cycle counter and the network is not run."""
    paths = fake_board(tmp_path)
    regs = bytearray(4096)
    for reg, value in [(Reg.MAGIC, MAGIC), (Reg.ISA_VERSION, ISA_VERSION), (Reg.CONFIG_HASH, CONFIG.hardware_hash_int),
                       (Reg.STATUS, STATUS_DONE)]:
        regs[reg:reg + 4] = value.to_bytes(4, "little")
    (paths.dev / "uio1").write_bytes(bytes(regs))
    (paths.dev / "udmabuf0").write_bytes(bytes(PsAttachment.from_config(CONFIG).ddr_size))
    code = main(["board", "check", "--processor", "tiny_int8", "--root", str(tmp_path), "--poll"])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert [line[:4] for line in out[:9]] == ["PASS"] * 7 + ["FAIL", "SKIP"]
    assert "CYCLES reads 0" in out[7] and "7 of 9 steps passed" in out[9]


def test_workflow_uio_option() -> None:
    from dlproc.runtime.workflow import Workflow

    model, _ = ALL_NETS["classifier"]()
    assert Workflow(model, processor="tiny_int8", target="fpga", uio="dlproc1").device_options == {"uio": "dlproc1"}
    with pytest.raises(ValueError, match="target 'fpga'"):
        Workflow(model, processor="tiny_int8", target="ref", uio="dlproc1")


def test_uio_option_of_the_fpga_commands() -> None:
    from dlproc.runtime.cli import _fpga_options, build_parser

    args = build_parser().parse_args(["run", "b", "--input", "x.npy", "--target", "fpga", "--uio", "dlproc1"])
    assert _fpga_options(args) == {"uio": "dlproc1"}
    args = build_parser().parse_args(["run", "b", "--input", "x.npy", "--uio", "dlproc1"])
    with pytest.raises(ValueError, match="--target fpga"):
        _fpga_options(args)
    args = build_parser().parse_args(["quantize", "n.onnx", "--target", "fpga", "--uio", "/dev/uio3"])
    assert _fpga_options(args) == {"uio": "/dev/uio3"}
