"""The board target's user-space driver (``dlproc.runtime.fpga``), run without a board.

:class:`FpgaDevice` reaches the hardware only through :class:`MmioRegion` (registers, DDR buffer) and an interrupt
object. Here those are simulated: register reads and writes go to the golden device (and, when it builds, to the
Verilated processor), the DDR buffer is the golden device's DDR array. The *same* FpgaDevice and Driver code as on
the board then loads and runs a small program (LOAD/SYNC/GEMM+finalize/SYNC/STORE/END), and the DDR result must
equal the golden model's and an independent numpy computation. The device-file plumbing (UIO maps, u-dma-buf
sysfs, /dev/mem) is exercised on a fake sysfs tree with regular files standing in for the device files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from dlproc.compiler.network import CompiledNetwork, Segment
from dlproc.processor.config import ProcessorConfig
from dlproc.processor.isa import (
    CTRL_CLEAR,
    CTRL_IRQ_EN,
    CTRL_START,
    MAGIC,
    STATUS_DONE,
    Buffer,
    GemmMode,
    InstructionSet,
    Opcode,
    Reg,
)
from dlproc.runtime.driver import Driver
from dlproc.runtime.fpga import (
    DEFAULT_UIO,
    REGISTER_PAGE_BYTES,
    FpgaDevice,
    FpgaSetupError,
    MmioRegion,
    UdmabufSync,
    find_uio,
)
from dlproc.sim.golden import GoldenDevice, postprocess_int8

CONFIG = ProcessorConfig.preset("tiny_int8")

# DDR layout of the test program (offsets in the window, all multiples of the AXI beat).
INSTR, INPUT, WEIGHT, PARAM, OUTPUT = 0x0, 0x1000, 0x2000, 0x3000, 0x4000
SUBBLOCK_STRIDE = 0x100
SPATIAL, REDUCTION = 4, 2


# ---------------------------------------------------------------------------------------------------- the program
def make_program(cfg: ProcessorConfig, seed: int = 1) -> tuple[bytes, int, dict[str, np.ndarray]]:
    """A GEMM of 4 pixels over 2 reduction steps with post-processing, as a DDR image.

    Returns the image (instructions at INSTR, data at INPUT/WEIGHT/PARAM), the instruction count and the operands.
    """
    rng = np.random.default_rng(seed)
    ci, co = cfg.conv_ic_lanes, cfg.conv_oc_lanes
    x = rng.integers(-128, 128, (REDUCTION * SPATIAL, ci), dtype=np.int8)        # input entries
    w = rng.integers(-128, 128, (REDUCTION, co, ci), dtype=np.int8)               # weight entries [co][ci]
    params = np.zeros((4, co), np.uint32)                                         # bias, mult+, mult-, ctl
    params[0] = rng.integers(-2000, 2000, co).astype(np.int32).view(np.uint32)
    params[1] = rng.integers(1, 1 << 14, co).astype(np.uint32)
    params[2] = rng.integers(1, 1 << 12, co).astype(np.uint32)
    params[3] = (12 + np.arange(co) % 4).astype(np.uint32) | (np.uint32(0x80) << 8) | (np.uint32(0x7F) << 16)

    isa = InstructionSet(cfg)
    words = [
        isa.encode(Opcode.LOAD, buffer=Buffer.INPUT, buf_addr=0, ddr_addr=INPUT, len0=x.nbytes, n1=1, n2=1),
        isa.encode(Opcode.LOAD, buffer=Buffer.WEIGHT, buf_addr=0, ddr_addr=WEIGHT, len0=w.nbytes, n1=1, n2=1),
        isa.encode(Opcode.LOAD, buffer=Buffer.PARAM, buf_addr=0, ddr_addr=PARAM, len0=params.nbytes, n1=1, n2=1),
        isa.encode(Opcode.SYNC),
        isa.encode(Opcode.GEMM, mode=GemmMode.MAC, overwrite=1, finalize=1, acc_base=0, out_base=0, inp_base=0,
                   wgt_base=0, param_addr=0, r0=REDUCTION, r1=1, r2=1, s0=1, s1=SPATIAL, ri0=SPATIAL, si1=1),
        isa.encode(Opcode.SYNC),
        isa.encode(Opcode.STORE, buf_addr=0, ddr_addr=OUTPUT, n0=SPATIAL, n1=1, n2=cfg.subblocks_per_output,
                   ddr_stride2=SUBBLOCK_STRIDE, sb0=0),
        isa.encode(Opcode.END),
    ]
    image = bytearray(OUTPUT)
    image[INSTR:INSTR + 32 * len(words)] = InstructionSet.to_bytes(words)
    image[INPUT:INPUT + x.nbytes] = x.tobytes()
    image[WEIGHT:WEIGHT + w.nbytes] = w.tobytes()
    image[PARAM:PARAM + params.nbytes] = params.tobytes()
    return bytes(image), len(words), {"x": x, "w": w, "params": params}


def expected_output(cfg: ProcessorConfig, ops: dict[str, np.ndarray]) -> np.ndarray:
    """The STORE region computed with numpy: int8 [sub-block][pixel][ci]."""
    x, w = ops["x"].astype(np.int64), ops["w"].astype(np.int64)
    acc = np.zeros((SPATIAL, cfg.conv_oc_lanes), np.int64)
    for r in range(REDUCTION):
        acc += x[r * SPATIAL:(r + 1) * SPATIAL] @ w[r].T
    out = postprocess_int8(acc.astype(np.int32), ops["params"])
    ci = cfg.conv_ic_lanes
    return np.stack([out[:, sb * ci:(sb + 1) * ci] for sb in range(cfg.subblocks_per_output)])


def read_output(device, cfg: ProcessorConfig) -> np.ndarray:
    ci = cfg.conv_ic_lanes
    rows = [device.read_ddr(OUTPUT + sb * SUBBLOCK_STRIDE, SPATIAL * ci).view(np.int8).reshape(SPATIAL, ci)
            for sb in range(cfg.subblocks_per_output)]
    return np.stack(rows)


def as_network(cfg: ProcessorConfig, image: bytes, count: int) -> CompiledNetwork:
    """The raw program as a one-segment bundle, so the Driver's load/run path is the one under test."""
    return CompiledNetwork(config=cfg, name="tiny-gemm", inputs=[], outputs=[], tensors={}, views={}, regions=[],
                           layers=[], segments=[Segment("hw", 0, count)], image_offset=0, image=image,
                           instr_offset=INSTR, instr_count=count)


def golden_reference(cfg: ProcessorConfig, image: bytes, count: int) -> np.ndarray:
    """Run the program on a GoldenDevice directly (registers by hand, no FpgaDevice, no Driver)."""
    gold = GoldenDevice(cfg)
    gold.write_ddr(0, image)
    gold.write_reg(Reg.INSTR_ADDR, INSTR)
    gold.write_reg(Reg.INSTR_COUNT, count)
    gold.write_reg(Reg.CTRL, CTRL_START)
    assert gold.read_reg(Reg.STATUS) & STATUS_DONE, gold.last_result
    return read_output(gold, cfg)


# ---------------------------------------------------------------------------------------------------- simulated regions
class ForwardedRegisters(MmioRegion):
    """A register page whose 32-bit accesses go to a simulated device's read_reg / write_reg."""

    def __init__(self, device, log: list | None = None):
        super().__init__(bytearray(REGISTER_PAGE_BYTES), name=f"simulated registers of {type(device).__name__}")
        self.device = device
        self.log: list[tuple[str, int, int]] = [] if log is None else log

    def read32(self, offset: int) -> int:
        value = self.device.read_reg(offset)
        self.log.append(("r", offset, value))
        return value

    def write32(self, offset: int, value: int) -> None:
        self.log.append(("w", offset, value))
        self.device.write_reg(offset, value)


class StrictMemory(MmioRegion):
    """A DDR buffer that behaves like Device memory: it refuses any access that is not an aligned 8-byte word.

    Every load and store of :class:`MmioRegion` must go through ``_load_words`` / ``_store_words``; the byte view
    the base class would otherwise copy into directly is made read-only, so a copy that bypasses them fails too.
    Accesses are recorded in ``log`` (shared with the registers and the sync recorder, so the order is visible).
    """

    def __init__(self, backing: np.ndarray, log: list):
        super().__init__(backing, name="strict DDR")
        self._backing = self._bytes
        self._bytes = self._bytes.view()
        self._bytes.flags.writeable = False
        self.log = log

    def _load_words(self, byte_offset: int, count: int) -> np.ndarray:
        if byte_offset % 8:
            raise AssertionError(f"unaligned load at {byte_offset:#x}")
        self.log.append(("load", byte_offset, 8 * count))
        return self._backing[byte_offset:byte_offset + 8 * count].view(np.uint64).copy()

    def _store_words(self, byte_offset: int, values: np.ndarray) -> None:
        if byte_offset % 8 or values.dtype != np.uint64:
            raise AssertionError(f"unaligned store at {byte_offset:#x} ({values.dtype})")
        self.log.append(("store", byte_offset, 8 * values.size))
        self._backing[byte_offset:byte_offset + 8 * values.size] = values.view(np.uint8)


class RecordingSync:
    """A DmaSync that records the ranges handed to the device and back to the CPU."""

    def __init__(self, log: list):
        self.log = log

    def for_device(self, offset: int, size: int) -> None:
        self.log.append(("sync_for_device", offset, size))

    def for_cpu(self, offset: int, size: int) -> None:
        self.log.append(("sync_for_cpu", offset, size))


class ForwardedMemory(MmioRegion):
    """A DDR buffer living inside a simulator (the Verilator DDR model): byte copies go through its API."""

    def __init__(self, device):
        super().__init__(bytearray(0), name="simulated DDR")
        self.device = device

    @property
    def size(self) -> int:
        return self.device.ddr_size

    def read(self, offset: int, length: int) -> np.ndarray:
        return self.device.read_ddr(offset, length)

    def write(self, offset: int, data) -> None:
        self.device.write_ddr(offset, np.frombuffer(bytes(data), np.uint8) if not isinstance(data, np.ndarray)
                              else data)


class SimulatedInterrupt:
    """The interrupt line of a simulated device: waiting lets its wait_irq run (and clock) the simulation."""

    def __init__(self, device):
        self.device = device
        self.enables = 0
        self.waits = 0

    def enable(self) -> None:
        self.enables += 1

    def wait(self, timeout_s: float) -> bool:
        self.waits += 1
        return self.device.wait_irq(timeout_s)

    def close(self) -> None:
        pass


def golden_fpga_device(cfg: ProcessorConfig, *, interrupt: bool) -> tuple[FpgaDevice, GoldenDevice]:
    gold = GoldenDevice(cfg)
    dev = FpgaDevice(cfg, regs=ForwardedRegisters(gold), ddr=MmioRegion(gold.ddr, name="golden DDR"),
                     ddr_phys_base=gold.ddr_phys_base, interrupt=SimulatedInterrupt(gold) if interrupt else False)
    return dev, gold


# ---------------------------------------------------------------------------------------------------- tests
def test_numpy_expectation_matches_golden() -> None:
    image, count, ops = make_program(CONFIG)
    np.testing.assert_array_equal(golden_reference(CONFIG, image, count), expected_output(CONFIG, ops))


@pytest.mark.parametrize("interrupt", [True, False], ids=["irq", "polling"])
def test_driver_through_fpga_device_on_golden(interrupt: bool) -> None:
    image, count, ops = make_program(CONFIG, seed=7)
    dev, gold = golden_fpga_device(CONFIG, interrupt=interrupt)
    with dev:
        driver = Driver(dev, timeout_s=10)
        net = as_network(CONFIG, image, count)
        driver.load(net)
        run = driver.run_segment(net.segments[0])
        got = read_output(dev, CONFIG)
    np.testing.assert_array_equal(got, golden_reference(CONFIG, image, count))
    np.testing.assert_array_equal(got, expected_output(CONFIG, ops))
    assert run.mac_busy == REDUCTION * SPATIAL
    # The driver really went through the register page: window base, program, start with IRQ_EN.
    writes = [(off, val) for kind, off, val in dev.regs.log if kind == "w"]
    assert (Reg.DDR_BASE_LO, gold.ddr_phys_base & 0xFFFFFFFF) in writes
    assert (Reg.INSTR_COUNT, count) in writes
    assert (Reg.CTRL, CTRL_START | CTRL_IRQ_EN) in writes


def test_memory_ordering_around_start_and_done() -> None:
    """sync_for_device covers every byte stored and comes after the last store and before START; nothing of the
    buffer is loaded after START that a sync_for_cpu after DONE did not cover first; only aligned words."""
    image, count, ops = make_program(CONFIG, seed=5)
    gold = GoldenDevice(CONFIG)
    log: list[tuple[str, int, int]] = []
    regs = ForwardedRegisters(gold, log)
    with FpgaDevice(CONFIG, regs=regs, ddr=StrictMemory(gold.ddr, log), ddr_phys_base=gold.ddr_phys_base,
                    dma_sync=RecordingSync(log), interrupt=SimulatedInterrupt(gold)) as dev:
        driver = Driver(dev, timeout_s=10)
        net = as_network(CONFIG, image, count)
        driver.load(net)
        driver.run_segment(net.segments[0])
        got = read_output(dev, CONFIG)
    np.testing.assert_array_equal(got, expected_output(CONFIG, ops))

    start = next(i for i, (kind, off, val) in enumerate(log) if kind == "w" and off == Reg.CTRL and val & CTRL_START)
    syncs = [i for i, e in enumerate(log[:start]) if e[0] == "sync_for_device"]
    assert syncs and not [e for e in log[syncs[-1]:start] if e[0] == "store"]        # no store after the sync
    stored = [e for e in log[:syncs[-1]] if e[0] == "store"]
    _, lo, size = log[syncs[-1]]
    assert stored and all(lo <= off and off + n <= lo + size for _, off, n in stored)  # it covers every store
    done = next(i for i, (kind, off, val) in enumerate(log) if i > start and kind == "r" and off == Reg.STATUS
                and val & STATUS_DONE)
    loads = [i for i, e in enumerate(log) if i > start and e[0] == "load"]
    assert loads and min(loads) > done
    for i in loads:                                        # each load is covered by the sync just before it
        kind, lo, size = log[i - 1]
        load_lo, load_hi = log[i][1], log[i][1] + log[i][2]      # whole words around the bytes synced
        assert kind == "sync_for_cpu" and load_lo == lo & ~7 and load_hi == (lo + size + 7) & ~7, log[i - 1:i + 1]


def test_unaligned_copies_become_aligned_words() -> None:
    log: list = []
    backing = np.zeros(512, np.uint8)
    ddr = StrictMemory(backing, log)
    shadow = backing.copy()
    rng = np.random.default_rng(9)
    for offset, length in [(3, 1), (5, 13), (7, 64), (8, 8), (200, 56), (255, 2), (1, 0), (0, 512)]:
        data = rng.integers(0, 256, length, dtype=np.uint8)
        ddr.write(offset, data)
        shadow[offset:offset + length] = data
        np.testing.assert_array_equal(backing, shadow)
        np.testing.assert_array_equal(ddr.read(offset, length), data)
    assert all(off % 8 == 0 and n % 8 == 0 for kind, off, n in log if kind in ("load", "store"))
    # The fake really refuses what it must refuse: an unaligned word, and a copy past the word primitives.
    with pytest.raises(AssertionError, match="unaligned"):
        ddr._store_words(3, np.zeros(1, np.uint64))
    with pytest.raises(ValueError, match="read-only"):
        ddr._bytes[3:5] = 1


def test_udmabuf_sync_commands(tmp_path: Path) -> None:
    info = tmp_path / "udmabuf0"
    info.mkdir()
    sync = UdmabufSync(info, 1 << 20)
    sync.for_device(0x1000, 0x2345)
    # offset 0x1000, size rounded to whole 64-byte lines (0x2380), DMA_TO_DEVICE (1 << 2), the sync bit: written
    # out by hand from u-dma-buf's encoding (offset << 32 | size | direction << 2 | 1).
    assert (info / "sync_for_device").read_text() == "0x0000100000002385"
    sync.for_cpu(0x13, 4)                                  # one line around the bytes, DMA_FROM_DEVICE (2 << 2)
    assert (info / "sync_for_cpu").read_text() == "0x0000000000000049"


def test_udmabuf_sync_falls_back_to_the_attribute_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from dlproc.runtime import fpga

    real = fpga._write_sysfs

    def old_driver(path: Path, text: str) -> None:       # a u-dma-buf that only takes 0 or 1
        if path.name.startswith("sync_for_") and int(text, 0) > 1:
            raise OSError(errno.EINVAL, "Invalid argument")
        real(path, text)

    monkeypatch.setattr(fpga, "_write_sysfs", old_driver)
    UdmabufSync(tmp_path, 1 << 20).for_cpu(0x40, 0x40)
    assert [(tmp_path / n).read_text() for n in ("sync_offset", "sync_size", "sync_direction", "sync_for_cpu")] == \
        ["64", "64", "2", "1"]


def test_wait_irq_times_out_while_busy() -> None:
    class Busy:
        def read_reg(self, offset: int) -> int:
            return MAGIC if offset == Reg.MAGIC else 1  # STATUS: BUSY forever

        def write_reg(self, offset: int, value: int) -> None:
            pass

    dev = FpgaDevice(CONFIG, regs=ForwardedRegisters(Busy()), ddr=MmioRegion(bytearray(1 << 16)),
                     ddr_phys_base=0x4000_0000, interrupt=False, poll_interval_s=1e-3)
    assert dev.wait_irq(0.02) is False


def test_magic_mismatch_names_the_register_page() -> None:
    regs = MmioRegion(bytearray(REGISTER_PAGE_BYTES), name="/dev/uio7 map0")
    with pytest.raises(FpgaSetupError, match=r"/dev/uio7 map0.*bitstream"):
        FpgaDevice(CONFIG, regs=regs, ddr=MmioRegion(bytearray(1 << 16)), ddr_phys_base=0x4000_0000,
                   interrupt=False)


def test_ddr_window_must_be_reachable() -> None:
    regs = MmioRegion(bytearray(REGISTER_PAGE_BYTES))
    regs.write32(Reg.MAGIC, MAGIC)
    cfg = CONFIG.replace(axi_addr_width=32)
    with pytest.raises(FpgaSetupError, match="32-bit AXI"):
        FpgaDevice(cfg, regs=regs, ddr=MmioRegion(bytearray(1 << 16)), ddr_phys_base=0x1_0000_0000,
                   interrupt=False)


# ---------------------------------------------------------------------------------------------------- MmioRegion
@pytest.mark.parametrize("device_memory", [False, True])
def test_mmio_region_byte_copies(device_memory: bool) -> None:
    rng = np.random.default_rng(3)
    backing = np.zeros(256, np.uint8)
    region = MmioRegion(backing, device_memory=device_memory)
    shadow = backing.copy()
    for offset, length in [(0, 8), (3, 1), (5, 13), (7, 64), (200, 56), (1, 0)]:
        data = rng.integers(0, 256, length, dtype=np.uint8)
        region.write(offset, data)
        shadow[offset:offset + length] = data
        np.testing.assert_array_equal(backing, shadow)
        np.testing.assert_array_equal(region.read(offset, length), data)
    with pytest.raises(IndexError, match="outside"):
        region.read(250, 8)
    region.write32(8, 0xDEADBEEF)
    assert region.read32(8) == 0xDEADBEEF
    with pytest.raises(ValueError, match="aligned"):
        region.read32(2)


# ---------------------------------------------------------------------------------------------------- device files
def _fake_board(tmp_path: Path, *, udmabuf_class: str = "u-dma-buf", phys: int = 0x6000_0000,
                size: int = 1 << 20, other_uio_first: bool = False) -> dict[str, Path]:
    """A sysfs tree and regular files standing in for /dev/uioN, /dev/udmabuf0 and /dev/mem.

    ``other_uio_first``: uio0 is another device (as on PetaLinux, e.g. the AXI performance monitor) and the
    processor is uio1.
    """
    sysfs = tmp_path / "sys"
    dev = tmp_path / "dev"
    dev.mkdir()
    uio = "uio0"
    if other_uio_first:
        (sysfs / "class" / "uio" / "uio0").mkdir(parents=True)
        (sysfs / "class" / "uio" / "uio0" / "name").write_text("axi-pmon\n")
        (dev / "uio0").write_bytes(bytes(REGISTER_PAGE_BYTES))
        uio = "uio1"
    map0 = sysfs / "class" / "uio" / uio / "maps" / "map0"
    map0.mkdir(parents=True)
    (sysfs / "class" / "uio" / uio / "name").write_text("dlproc\n")
    (map0 / "addr").write_text("0x00000000a0000000\n")
    (map0 / "size").write_text("0x0000000000001000\n")
    regs = bytearray(REGISTER_PAGE_BYTES)
    regs[Reg.MAGIC:Reg.MAGIC + 4] = MAGIC.to_bytes(4, "little")
    regs[Reg.STATUS:Reg.STATUS + 4] = STATUS_DONE.to_bytes(4, "little")
    (dev / uio).write_bytes(bytes(regs))
    info = sysfs / "class" / udmabuf_class / "udmabuf0"
    info.mkdir(parents=True)
    (info / "phys_addr").write_text(f"{phys:#x}\n")
    (info / "size").write_text(f"{size}\n")
    (info / "sync_mode").write_text("1\n")
    (dev / "udmabuf0").write_bytes(bytes(size))
    mem = bytearray(0x3000)
    mem[0x2000 + Reg.MAGIC:0x2000 + Reg.MAGIC + 4] = MAGIC.to_bytes(4, "little")
    (dev / "mem").write_bytes(bytes(mem))
    return {"sysfs": sysfs, "dev": dev, "udmabuf_info": info}


@pytest.mark.parametrize("udmabuf_class", ["u-dma-buf", "udmabuf"])
def test_opens_uio_and_udmabuf(tmp_path: Path, udmabuf_class: str) -> None:
    fake = _fake_board(tmp_path, udmabuf_class=udmabuf_class)
    with FpgaDevice(CONFIG, uio=fake["dev"] / "uio0", dma_buffer=fake["dev"] / "udmabuf0", sysfs=fake["sysfs"],
                    interrupt=False) as dev:
        assert dev.ddr_phys_base == 0x6000_0000 and dev.ddr_size == 1 << 20
        assert dev.read_reg(Reg.MAGIC) == MAGIC
        dev.write_ddr(0x100, b"\x01\x02\x03")
        assert dev.read_ddr(0x100, 3).tolist() == [1, 2, 3]
        assert dev.wait_irq(0.01) is True      # STATUS of the fake page shows DONE
        dev.write_reg(Reg.CTRL, CTRL_CLEAR)
        assert not (fake["udmabuf_info"] / "sync_for_device").exists()
        dev.write_reg(Reg.CTRL, CTRL_START)    # the bytes written at 0x100 are cleaned (the line 0x100..0x140)
        assert (fake["udmabuf_info"] / "sync_for_device").read_text() == "0x0000010000000045"
        assert dev.read_ddr(0x100, 3).tolist() == [1, 2, 3]
        assert (fake["udmabuf_info"] / "sync_for_cpu").read_text() == "0x0000010000000049"
        assert "polling" in repr(dev) and not dev.ddr.device_memory
    assert (fake["dev"] / "udmabuf0").read_bytes()[0x100:0x103] == b"\x01\x02\x03"  # it was a shared mapping
    assert (fake["udmabuf_info"] / "sync_mode").read_text().strip() == "2"


def test_uio_by_name(tmp_path: Path) -> None:
    fake = _fake_board(tmp_path)
    assert DEFAULT_UIO == "dlproc"                       # the overlay's node name (boards.zynqmp.UIO_NAME)
    assert find_uio("dlproc", sysfs=fake["sysfs"]) == Path("/dev/uio0")
    with pytest.raises(FpgaSetupError, match=r"no UIO device named 'other'.*uio0 \(dlproc\)"):
        find_uio("other", sysfs=fake["sysfs"])


def test_default_uio_is_found_by_name_not_uio0(tmp_path: Path) -> None:
    fake = _fake_board(tmp_path, other_uio_first=True)  # uio0 is another device, the processor is uio1
    dev_uio1 = fake["dev"] / "uio1"
    found = find_uio(DEFAULT_UIO, sysfs=fake["sysfs"])
    assert found == Path("/dev/uio1")
    # FpgaDevice resolves the default name the same way (dev paths of the fake tree stand in for /dev).
    with FpgaDevice(CONFIG, uio=dev_uio1, dma_buffer=fake["dev"] / "udmabuf0", sysfs=fake["sysfs"],
                    interrupt=False) as dev:
        assert dev.uio_path == dev_uio1 and dev.read_reg(Reg.MAGIC) == MAGIC


def test_sync_mode_that_cannot_be_set_maps_device_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dlproc.runtime import fpga

    def no_permission(path: Path, text: str) -> None:
        raise PermissionError(13, "Permission denied")

    fake = _fake_board(tmp_path)
    monkeypatch.setattr(fpga, "_write_sysfs", no_permission)
    with FpgaDevice(CONFIG, uio=fake["dev"] / "uio0", dma_buffer=fake["dev"] / "udmabuf0", sysfs=fake["sysfs"],
                    interrupt=False, dma_sync=False) as dev:
        assert dev.ddr.device_memory                    # sync_mode stayed 1: Device memory, aligned words only
        dev.write_ddr(3, b"abc")
        assert bytes(dev.read_ddr(3, 3)) == b"abc"


def test_registers_through_dev_mem(tmp_path: Path) -> None:
    fake = _fake_board(tmp_path)
    with FpgaDevice(CONFIG, uio=None, regs_phys=0x2000, dev_mem=fake["dev"] / "mem",
                    dma_buffer=fake["dev"] / "udmabuf0", sysfs=fake["sysfs"]) as dev:
        assert dev.read_reg(Reg.MAGIC) == MAGIC
        assert dev.regs.device_memory


def test_reserved_memory_through_dev_mem(tmp_path: Path) -> None:
    fake = _fake_board(tmp_path)
    with FpgaDevice(CONFIG, uio=fake["dev"] / "uio0", dma_phys=0x1000, dma_size=0x1000,
                    dev_mem=fake["dev"] / "mem", sysfs=fake["sysfs"], interrupt=False) as dev:
        assert (dev.ddr_phys_base, dev.ddr_size) == (0x1000, 0x1000)
        dev.write_ddr(5, b"xyz")
        assert bytes(dev.read_ddr(5, 3)) == b"xyz"


def test_missing_files_say_what_to_set_up(tmp_path: Path) -> None:
    fake = _fake_board(tmp_path)
    with pytest.raises(FpgaSetupError, match=r"uio9 does not exist.*generic-uio"):
        FpgaDevice(CONFIG, uio=fake["dev"] / "uio9", sysfs=fake["sysfs"])
    with pytest.raises(FpgaSetupError, match=r"udmabuf3 does not exist.*u-dma-buf"):
        FpgaDevice(CONFIG, uio=fake["dev"] / "uio0", dma_buffer=fake["dev"] / "udmabuf3", sysfs=fake["sysfs"],
                   interrupt=False)
    os.remove(fake["udmabuf_info"] / "phys_addr")
    with pytest.raises(FpgaSetupError, match=r"phys_addr does not exist"):
        FpgaDevice(CONFIG, uio=fake["dev"] / "uio0", dma_buffer=fake["dev"] / "udmabuf0", sysfs=fake["sysfs"],
                   interrupt=False)
    with pytest.raises(FpgaSetupError, match="regs_phys"):
        FpgaDevice(CONFIG, uio=None, dma_buffer=fake["dev"] / "udmabuf0", sysfs=fake["sysfs"])


def test_open_device_fpga_target_reports_missing_files(tmp_path: Path) -> None:
    from dlproc.runtime.workflow import open_device

    with pytest.raises(FpgaSetupError, match="does not exist"):
        open_device(CONFIG, "fpga", uio=tmp_path / "uio0", sysfs=tmp_path)


# ---------------------------------------------------------------------------------------------------- Verilator
@pytest.mark.slow
def test_driver_through_fpga_device_on_verilator() -> None:
    try:
        from dlproc.sim.verilator import VerilatorDevice
        from dlproc.sim.verilator.build import BuildError
        from dlproc.sim.verilator.toolchain import ToolchainError
    except ImportError as exc:  # pragma: no cover - the sim package is part of the tree
        pytest.skip(f"Verilator target not importable: {exc}")
    try:
        vdev = VerilatorDevice(CONFIG)
    except (BuildError, ToolchainError, ImportError) as exc:
        pytest.skip(f"the Verilator model of the processor does not build yet: {str(exc).splitlines()[0]}")
    image, count, ops = make_program(CONFIG, seed=11)
    with vdev:
        irq = SimulatedInterrupt(vdev)
        dev = FpgaDevice(CONFIG, regs=ForwardedRegisters(vdev), ddr=ForwardedMemory(vdev),
                         ddr_phys_base=vdev.ddr_phys_base, interrupt=irq)
        driver = Driver(dev, timeout_s=60)
        net = as_network(CONFIG, image, count)
        driver.load(net)
        run = driver.run_segment(net.segments[0])
        got = read_output(dev, CONFIG)
    np.testing.assert_array_equal(got, golden_reference(CONFIG, image, count))
    np.testing.assert_array_equal(got, expected_output(CONFIG, ops))
    assert run.cycles > 0 and irq.waits >= 1
