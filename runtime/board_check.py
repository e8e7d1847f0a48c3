"""``dlproc board check``: every step between a loaded bitstream and a bit-exact network, checked in order on the board.

Each step is a function that reads files under :class:`BoardPaths` (sysfs, procfs, debugfs, ``/etc/modprobe.d``) or
talks to a :class:`~dlproc.runtime.driver.Device`, and returns a :class:`Check` (pass or fail, with what it saw and,
on failure, what to do). :func:`board_check` runs them in the order a bring-up goes wrong:

1. kernel command line: ``clk_ignore_unused``, the UIO ``of_id`` and a CMA pool large enough for the DDR window
   (``/proc/cmdline``, ``/etc/modprobe.d``, ``CmaTotal`` in ``/proc/meminfo``);
2. FPGA manager state (``/sys/class/fpga_manager/fpga0/state`` is ``operating``);
3. the UIO device by name (``/sys/class/uio/uio*/name``), its map 0 at the register page;
4. its interrupt (the ``/proc/interrupts`` line of that name: GIC SPI 89 = hwirq 121, level);
5. the u-dma-buf: size, physical address (reachable by the processor), ``sync_mode``;
6. the PL clock: pl0_ref's rate and enable count in the clock debugfs against the configuration's clock;
7. the processor's MAGIC, ISA_VERSION and CONFIG_HASH registers against the configuration or bundle;
8. a one-instruction program (END): START, interrupt or DONE, cycle counter;
9. a tiny network on the board against the golden model, every tensor bit-exact.

Tests point :class:`BoardPaths` at a fake tree under ``tmp_path`` and pass a simulated device, so the same functions
run here as on the board.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlproc.boards.zynqmp import (
    BOOT_ARGS,
    IRQ_SPI,
    REGS_BASE,
    REGS_SIZE,
    UDMABUF_NAME,
    UIO_MODULE_COMMAND,
    UIO_NAME,
    PsAttachment,
)
from dlproc.processor.config import ProcessorConfig

__all__ = ["BoardPaths", "Check", "board_check", "check_boot_args", "check_fpga_manager", "check_uio",
           "check_interrupt", "check_udmabuf", "check_pl_clock", "check_registers", "check_one_instruction",
           "check_tiny_network", "tiny_network"]


@dataclass(frozen=True)
class BoardPaths:
    """Where the board's kernel interfaces are (tests use a fake tree)."""

    sysfs: Path = Path("/sys")
    proc: Path = Path("/proc")
    dev: Path = Path("/dev")
    debugfs: Path = Path("/sys/kernel/debug")
    modprobe_d: Path = Path("/etc/modprobe.d")

    @classmethod
    def under(cls, root: str | Path) -> BoardPaths:
        """The same layout below ``root`` (``root/sys``, ``root/proc``, ...)."""
        root = Path(root)
        return cls(root / "sys", root / "proc", root / "dev", root / "sys" / "kernel" / "debug",
                   root / "etc" / "modprobe.d")


@dataclass
class Check:
    """The outcome of one step.

    Attributes
    ----------
    name : str
        What was checked.
    ok : bool or None
        Passed, failed, or ``None`` when it could not run (an earlier step failed).
    detail : str
        What was seen; on failure also what to do.
    data : dict
        Values later steps use (the UIO device path, the buffer's address).
    """

    name: str
    ok: bool | None
    detail: str
    data: dict = field(default_factory=dict)

    def line(self) -> str:
        """``PASS  name: detail`` (or ``FAIL``, ``SKIP``)."""
        tag = {True: "PASS", False: "FAIL", None: "SKIP"}[self.ok]
        return f"{tag}  {self.name}: {self.detail}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------------- the steps
def check_boot_args(paths: BoardPaths, ps: PsAttachment) -> Check:
    """The kernel command line and module options the board needs (:meth:`PsAttachment.boot_args`)."""
    name = "kernel command line"
    cmdline = (_read(paths.proc / "cmdline") or "").split()
    problems = []
    if "clk_ignore_unused" not in cmdline:
        problems.append("clk_ignore_unused missing (Linux may gate pl0_ref before the overlay claims it)")
    of_id = BOOT_ARGS[1]
    options = " ".join(_read(p) or "" for p in sorted(paths.modprobe_d.glob("*.conf"))) if paths.modprobe_d.is_dir() \
        else ""
    if of_id not in cmdline and not re.search(r"options\s+uio_pdrv_genirq\s+.*of_id=generic-uio", options):
        problems.append(f"neither {of_id} nor 'options uio_pdrv_genirq of_id=generic-uio' in /etc/modprobe.d "
                        f"(or load it with `{UIO_MODULE_COMMAND}`)")
    meminfo = _read(paths.proc / "meminfo") or ""
    match = re.search(r"^CmaTotal:\s+(\d+) kB", meminfo, re.M)
    cma_mib = int(match.group(1)) // 1024 if match else 0
    if cma_mib < ps.cma_mib:
        problems.append(f"CMA pool {cma_mib} MiB, the {ps.ddr_size >> 20} MiB window needs cma={ps.cma_mib}M")
    if problems:
        return Check(name, False, "; ".join(problems) + f". Required: {' '.join(ps.boot_args())}")
    return Check(name, True, f"clk_ignore_unused, uio of_id=generic-uio, CMA {cma_mib} MiB >= {ps.cma_mib} MiB")


def check_fpga_manager(paths: BoardPaths) -> Check:
    """``/sys/class/fpga_manager/fpga0/state`` is ``operating`` (the PL is programmed)."""
    name = "FPGA manager"
    state_file = paths.sysfs / "class" / "fpga_manager" / "fpga0" / "state"
    state = _read(state_file)
    if state is None:
        return Check(name, False, f"{state_file} does not exist: the kernel has no FPGA manager (PetaLinux: enable "
                                  "FPGA Manager; the ZynqMP driver is CONFIG_FPGA_MGR_ZYNQMP_FPGA)")
    state = state.strip()
    if state != "operating":
        return Check(name, False, f"state {state!r}, not 'operating': load the bitstream with "
                                  "`fpgautil -b <name>.bit.bin -o dlproc.dtbo` (dmesg says why it failed)")
    return Check(name, True, "fpga0 state operating")


def check_uio(paths: BoardPaths, uio: str = UIO_NAME) -> Check:
    """The UIO device named ``uio`` exists, and its map 0 is the 4 KiB register page at :data:`REGS_BASE`."""
    from dlproc.runtime.fpga import FpgaSetupError, find_uio

    name = f"UIO device {uio!r}"
    try:
        dev = find_uio(uio, sysfs=paths.sysfs, dev=paths.dev) if "/" not in uio else Path(uio)
    except FpgaSetupError as exc:
        return Check(name, False, str(exc))
    map0 = paths.sysfs / "class" / "uio" / dev.name / "maps" / "map0"
    try:
        addr, size = int(_read(map0 / "addr") or "", 0), int(_read(map0 / "size") or "", 0)
    except ValueError:
        return Check(name, False, f"{dev}: {map0} has no addr/size: the overlay node needs 'reg'")
    if addr != REGS_BASE or size < REGS_SIZE:
        return Check(name, False, f"{dev} map0 is {size:#x} bytes at {addr:#x}, expected {REGS_SIZE:#x} at "
                                  f"{REGS_BASE:#x} (the overlay of this build)")
    return Check(name, True, f"{dev} ({uio}), registers at {addr:#x}", {"uio": dev})


def check_interrupt(paths: BoardPaths, uio: str = UIO_NAME) -> Check:
    """``/proc/interrupts`` has the UIO device's line: hwirq 121 (GIC SPI :data:`IRQ_SPI`), level triggered."""
    name = "interrupt"
    text = _read(paths.proc / "interrupts")
    if text is None:
        return Check(name, False, f"{paths.proc / 'interrupts'} is not readable")
    uio_name = uio
    if "/" in uio:   # a device path: the interrupt carries the UIO name (uio_pdrv_genirq requests it by that name)
        uio_name = (_read(paths.sysfs / "class" / "uio" / Path(uio).name / "name") or Path(uio).name).strip()
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[-1] == uio_name:
            counts = [int(f) for f in fields[1:] if f.isdigit()]
            hwirq = 32 + IRQ_SPI
            if str(hwirq) not in fields or "Level" not in fields:
                return Check(name, False, f"the {uio_name!r} interrupt is not hwirq {hwirq} level ({line.strip()}): "
                                          f"the overlay needs interrupts = <0 {IRQ_SPI} 4>")
            return Check(name, True, f"GIC hwirq {hwirq} (SPI {IRQ_SPI}), level, {sum(counts[:-1])} so far",
                         {"irq_line": line.strip()})
    return Check(name, False, f"no line for {uio_name!r} in /proc/interrupts: the UIO node has no 'interrupts', or "
                              f"uio_pdrv_genirq did not bind it ({UIO_MODULE_COMMAND})")


def check_udmabuf(paths: BoardPaths, ps: PsAttachment, config: ProcessorConfig, needed: int | None = None,
                  udmabuf: str = UDMABUF_NAME) -> Check:
    """The u-dma-buf device: its size (at least ``needed`` bytes), a physical address the processor reaches, and
    ``sync_mode`` 2 (write-combined ``O_SYNC`` mapping)."""
    from dlproc.runtime.fpga import FpgaSetupError, _udmabuf_sysfs

    name = f"u-dma-buf {udmabuf!r}"
    if not (paths.dev / udmabuf).exists():
        return Check(name, False, f"{paths.dev / udmabuf} does not exist: `modprobe u-dma-buf` before loading the "
                                  "overlay; `dmesg | grep u-dma-buf` shows an allocation failure (raise cma=)")
    try:
        info = _udmabuf_sysfs(udmabuf, paths.sysfs)
    except FpgaSetupError as exc:
        return Check(name, False, str(exc))
    try:
        phys, size = int(_read(info / "phys_addr") or "", 0), int(_read(info / "size") or "", 0)
    except ValueError:
        return Check(name, False, f"{info} has no phys_addr/size: is u-dma-buf loaded?")
    sync_mode = (_read(info / "sync_mode") or "?").strip()
    needed = int(needed if needed is not None else ps.ddr_size)
    seen = f"{size >> 20} MiB at {phys:#x}, sync_mode {sync_mode}"
    if size < needed:
        return Check(name, False, f"{seen}: {needed:,} bytes needed (size in the overlay, cma= on the command line)")
    if phys % 4096 or phys + size > 1 << min(32, config.axi_addr_width):
        return Check(name, False, f"{seen}: not a 4 KiB aligned buffer below 4 GiB (the overlay's dma-mask = <32>)")
    if sync_mode != "2":
        return Check(name, False, f"{seen}: sync_mode must be 2 (the overlay's sync-mode = <2>, or write 2 to "
                                  f"{info / 'sync_mode'} as root)")
    return Check(name, True, seen, {"phys": phys, "size": size})


def check_pl_clock(paths: BoardPaths, ps: PsAttachment) -> Check:
    """pl0_ref (pl_clk0) runs at the configuration's clock and is enabled (clock debugfs)."""
    name = "PL clock"
    clk = paths.debugfs / "clk" / "pl0_ref"
    rate_text = _read(clk / "clk_rate")
    if rate_text is None:
        return Check(name, False, f"{clk / 'clk_rate'} is not readable: mount debugfs "
                                  "(`mount -t debugfs none /sys/kernel/debug`) and run as root")
    rate = int(rate_text.strip())
    enabled = int((_read(clk / "clk_enable_count") or "0").strip() or 0)
    want, tol = ps.pl_clk0_hz, ps.clock_tolerance_hz()
    seen = f"pl0_ref {rate / 1e6:.4f} MHz, enable count {enabled}"
    if abs(rate - want) > tol:
        return Check(name, False, f"{seen}; the design needs {want / 1e6:g} MHz: the overlay's clocking0 node "
                                  "(xlnx,fclk) did not apply, or the boot image's psu_init set another rate")
    if enabled < 1:
        return Check(name, False, f"{seen}: pl0_ref is gated; boot with clk_ignore_unused and check the overlay's "
                                  "clocking0 node")
    return Check(name, True, f"{seen} (requested {want / 1e6:g} MHz)", {"rate_hz": rate})


def check_registers(device: Any, config: ProcessorConfig) -> Check:
    """MAGIC, ISA_VERSION and CONFIG_HASH read back what this runtime and the configuration expect.

    Reads at offsets 4 and 8 returning 0 while MAGIC (0) is right is the signature of a 32-bit M_AXI_HPM0_FPD
    in the boot image against the 128-bit one of the design (the overlay's afi0 node did not apply).
    """
    from dlproc.processor.config import ISA_VERSION
    from dlproc.processor.isa import MAGIC, Reg

    name = "processor registers"
    magic, isa, hashv = (device.read_reg(r) for r in (Reg.MAGIC, Reg.ISA_VERSION, Reg.CONFIG_HASH))
    seen = f"MAGIC {magic:#010x}, ISA {isa}, CONFIG_HASH {hashv:08x}"
    if magic != MAGIC:
        return Check(name, False, f"{seen}: expected MAGIC {MAGIC:#010x}: no processor at the register page")
    if isa == 0 and hashv == 0:
        return Check(name, False, f"{seen}: only offset 0 answers: the PS's M_AXI_HPM0_FPD width differs from the "
                                  "design's (the overlay's afi0 node, config-afi 14, did not apply)")
    if isa != ISA_VERSION:
        return Check(name, False, f"{seen}: this runtime speaks ISA {ISA_VERSION}")
    if hashv != config.hardware_hash_int:
        return Check(name, False, f"{seen}: the bundle/configuration is [{config.hardware_hash}]; load its bitstream "
                                  "or compile for this one")
    return Check(name, True, seen)


def check_one_instruction(device: Any, config: ProcessorConfig, timeout_s: float = 5.0) -> Check:
    """A program of one END instruction runs to DONE through the driver (interrupt or polling) and counts cycles."""
    from dlproc.compiler.network import CompiledNetwork, Segment
    from dlproc.processor.isa import InstructionSet, Opcode
    from dlproc.runtime.driver import Driver, ProcessorError, ProcessorTimeout

    name = "one-instruction program"
    image = InstructionSet.to_bytes([InstructionSet(config).encode(Opcode.END)])
    net = CompiledNetwork(config=config, name="board-check-end", inputs=[], outputs=[], tensors={}, views={},
                          regions=[], layers=[], segments=[Segment("hw", 0, 1)], image_offset=0, image=image,
                          instr_offset=0, instr_count=1)
    driver = Driver(device, timeout_s=timeout_s)
    try:
        driver.load(net)
        run = driver.run_segment(net.segments[0])
    except (ProcessorError, ProcessorTimeout) as exc:
        return Check(name, False, f"{exc} (no DONE: is pl_clk0 running and the reset released?)")
    if run.cycles <= 0:
        return Check(name, False, "DONE but CYCLES reads 0: the counter, or the register reads at 0x38, are wrong")
    return Check(name, True, f"END ran to DONE in {run.cycles} cycles")


def tiny_network(config: ProcessorConfig, seed: int = 0):
    """A two-layer network (3x3 conv + ReLU, 1x1 conv) compiled for ``config``, and one input frame.

    Returns
    -------
    compiled : CompiledNetwork
    frame : ndarray
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from dlproc.runtime.workflow import Workflow

    rng = np.random.default_rng(seed)
    c, h = config.conv_ic_lanes, 8
    w1 = (rng.standard_normal((c, c, 3, 3)) * (2 / (9 * c)) ** 0.5).astype(np.float32)
    w2 = (rng.standard_normal((c, c, 1, 1)) * (2 / c) ** 0.5).astype(np.float32)
    b = (rng.standard_normal(c) * 0.1).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Conv", ["r", "w2", "b2"], ["y"])],
        "board_check", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, h])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, h, h])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b, "b1"), numpy_helper.from_array(w2, "w2"),
         numpy_helper.from_array(b, "b2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    wf = Workflow(model, processor=config)
    if config.dtype == "int8":
        wf.calibrate(rng.standard_normal((4, c, h, h)).astype(np.float32), progress=False)
    return wf.compile(), rng.standard_normal((c, h, h)).astype(np.float32)


def check_tiny_network(device: Any, config: ProcessorConfig, network=None, frame: np.ndarray | None = None,
                       timeout_s: float = 30.0) -> Check:
    """A tiny network (or ``network``) on the board: every tensor the hardware wrote equals the golden model's."""
    from dlproc.runtime.driver import Driver
    from dlproc.sim.golden import GoldenDevice

    name = "tiny network vs golden model"
    if network is None:
        network, frame = tiny_network(config)
    if frame is None:
        shape = tuple(network.tensors[network.inputs[0]]["onnx_shape"][1:])
        frame = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    board = Driver(device, timeout_s=timeout_s)
    board.load(network)
    _, runs, got = board.infer(frame, keep_int=True)
    gold_dev = GoldenDevice(network.config, ddr_size=max(1 << 16, (network.ddr_bytes + 4095) & ~4095))
    gold = Driver(gold_dev)
    gold.load(network)
    _, _, want = gold.infer(frame, keep_int=True)
    bad = [n for n in want if not np.array_equal(got.get(n), want[n])]
    cycles = sum(r.cycles for r in runs)
    if bad:
        first = bad[0]
        diff = int(np.count_nonzero(np.asarray(got[first]) != want[first]))
        return Check(name, False, f"{len(bad)} of {len(want)} tensors differ (first {first!r}: {diff} elements): "
                                  "suspect DDR coherency or the HP port (sync_mode, afi0 widths)")
    return Check(name, True, f"{network.name!r}: {len(want)} tensors bit-exact, {cycles} cycles")


# ---------------------------------------------------------------------------------------------------- all of it
def board_check(config: ProcessorConfig, *, paths: BoardPaths | None = None, uio: str = UIO_NAME,
                udmabuf: str = UDMABUF_NAME, network=None, interrupt: bool = True,
                open_device: Callable[[Path], Any] | None = None,
                out: Callable[[str], None] | None = print) -> list[Check]:
    """Run every step in order, printing one line per step.

    Parameters
    ----------
    config : ProcessorConfig
        The configuration of the bitstream (or of ``network``).
    paths : BoardPaths, optional
        Where sysfs, procfs, debugfs and ``/etc/modprobe.d`` are (default: the real ones).
    uio, udmabuf : str
        The processor's UIO name (or ``/dev/uioN``) and the u-dma-buf device name.
    network : CompiledNetwork, optional
        Run this bundle in the last step instead of the built-in tiny network.
    interrupt : bool
        Wait for the UIO interrupt (default) or poll STATUS (tells interrupt wiring from a hung processor).
    open_device : callable, optional
        ``open_device(uio_path)`` returns the device for the register steps (default: an
        :class:`~dlproc.runtime.fpga.FpgaDevice` on the UIO device and the u-dma-buf; tests pass a simulated one).
    out : callable or None
        Where the lines go (``None``: nowhere).

    Returns
    -------
    list of Check
        In order; the board is ready when all passed.
    """
    paths = paths or BoardPaths()
    ps = PsAttachment.from_config(config)
    needed = network.ddr_bytes if network is not None else None
    checks: list[Check] = []

    def emit(check: Check) -> Check:
        checks.append(check)
        if out is not None:
            out(check.line())
        return check

    emit(check_boot_args(paths, ps))
    emit(check_fpga_manager(paths))
    uio_check = emit(check_uio(paths, uio))
    emit(check_interrupt(paths, uio))
    emit(check_udmabuf(paths, ps, config, needed, udmabuf))
    emit(check_pl_clock(paths, ps))
    device_steps = ["processor registers", "one-instruction program", "tiny network vs golden model"]
    if not uio_check.ok:
        for step in device_steps:
            emit(Check(step, None, "not run: no UIO device for the registers"))
        return checks
    try:
        if open_device is None:
            from dlproc.runtime.fpga import FpgaDevice

            device = FpgaDevice(config, uio=uio_check.data["uio"], dma_buffer=paths.dev / udmabuf,
                                sysfs=paths.sysfs, interrupt=interrupt, check_magic=False)
        else:
            device = open_device(uio_check.data["uio"])
    except Exception as exc:  # noqa: BLE001 - any failure to open is a failed step with its message
        emit(Check("open the device", False, str(exc)))
        for step in device_steps:
            emit(Check(step, None, "not run: the device did not open"))
        return checks
    try:
        registers = emit(check_registers(device, config))
        if not registers.ok:
            for step in device_steps[1:]:
                emit(Check(step, None, "not run: the registers are wrong"))
            return checks
        program = emit(check_one_instruction(device, config))
        if not program.ok:
            emit(Check(device_steps[2], None, "not run: the one-instruction program failed"))
            return checks
        emit(check_tiny_network(device, config, network))
    finally:
        device.close()
    return checks
