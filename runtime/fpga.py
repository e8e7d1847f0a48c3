"""The processor on a board, from Linux user space: the ``"fpga"`` target of the runtime.

:class:`FpgaDevice` offers the register-level device interface of :class:`~dlproc.runtime.driver.Device` for a
processor in the programmable logic of a Zynq UltraScale+ (ZCU102) running Linux:

* the processor's 4 KiB register page (AXI4-Lite slave on M_AXI_HPM0_FPD at
  :data:`~dlproc.boards.zynqmp.REGS_BASE`) is
  mapped through **UIO** (``/dev/uioN``, a ``generic-uio`` device-tree node, which also delivers the interrupt)
  or, without UIO, through ``/dev/mem`` at a physical address;
* the processor's DDR window is a **physically contiguous buffer**: a ``u-dma-buf`` device (``/dev/udmabufN``,
  physical address and size read from sysfs, memory from CMA) or a ``reserved-memory`` carve-out mapped through
  ``/dev/mem``;
* ``wait_irq`` blocks on the UIO interrupt (re-enabled by writing 1 to the UIO file, then ``poll`` with a timeout)
  and falls back to polling the STATUS register when there is no interrupt.

``docs/board.md`` shows the device-tree overlay that creates the UIO and u-dma-buf devices.

All memory-mapped access goes through :class:`MmioRegion` and the interrupt through :class:`UioInterrupt`, so
tests can hand :class:`FpgaDevice` simulated regions (``regs=``, ``ddr=``, ``interrupt=``) and run exactly the code
that runs on the board against the golden model or the Verilator simulation.

Coherency and ordering: the processor reaches DDR through S_AXI_HP1_FPD, which does not snoop the CPU caches. The
DDR buffer is mapped uncached: u-dma-buf opened with ``O_SYNC`` and ``sync_mode`` 2 (write-combined, i.e. Normal
non-cacheable on arm64; ikwzm/udmabuf ``Readme.md``, "Coherency of data on DMA buffer and CPU cache"). Because
write-combined stores are not ordered against the Device-memory store of START, :class:`FpgaDevice` writes
u-dma-buf's ``sync_for_device`` before START and ``sync_for_cpu`` before reading what the processor wrote
(:class:`UdmabufSync`), and accesses the buffer only in aligned 8-byte words (Device memory, which a
``sync_mode`` 1 buffer or a ``/dev/mem`` carve-out is, faults on unaligned accesses).
"""

from __future__ import annotations

import mmap
import os
import select
import struct
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dlproc.boards.zynqmp import REGS_BASE, REGS_SIZE, UDMABUF_NAME, UIO_MODULE_COMMAND, UIO_NAME
from dlproc.processor.config import ProcessorConfig
from dlproc.processor.isa import CTRL_START, MAGIC, STATUS_DONE, STATUS_ERROR, Reg

__all__ = ["FpgaDevice", "FpgaSetupError", "MmioRegion", "UioInterrupt", "Interrupt", "DmaSync",
           "UdmabufSync", "find_uio", "REGISTER_PAGE_BYTES", "DEFAULT_REGS_PHYS", "DEFAULT_UIO", "DEFAULT_DMA_BUFFER"]

#: Bytes of the processor's register page (12-bit AXI4-Lite address).
REGISTER_PAGE_BYTES = REGS_SIZE
#: Physical address of the register page in the block design (owned by :mod:`dlproc.boards.zynqmp`).
DEFAULT_REGS_PHYS = REGS_BASE
#: The UIO name the overlay gives the processor's node (``/sys/class/uio/uioN/name``).
DEFAULT_UIO = UIO_NAME
#: The u-dma-buf device the overlay creates.
DEFAULT_DMA_BUFFER = f"/dev/{UDMABUF_NAME}"


class FpgaSetupError(RuntimeError):
    """A device file, sysfs entry or mapping the board target needs is missing or wrong.

    The message names the file and what to set up (see ``docs/board.md``).
    """


# ---------------------------------------------------------------------------------------------------- memory maps
class MmioRegion:
    """A window of physical memory mapped into this process.

    Parameters
    ----------
    buffer : object with the writable buffer protocol
        The mapping (an :class:`mmap.mmap`) or, in tests, any writable buffer (``bytearray``, uint8 ndarray).
    name : str
        What the region is, for error messages (e.g. ``"/dev/uio0 map0"``).
    device_memory : bool
        The mapping is device memory (``/dev/mem`` with ``O_SYNC``): byte copies use aligned 8-byte accesses only,
        because arm64 faults on unaligned accesses to device memory.
    owner : object, optional
        Closed with the region (the :class:`mmap.mmap` behind a view).

    Notes
    -----
    32-bit register accesses are single aligned 32-bit loads and stores (numpy scalar access on a ``uint32`` view),
    as the AXI4-Lite slave expects.
    """

    def __init__(self, buffer: Any, *, name: str = "region", device_memory: bool = False, owner: Any = None):
        self.name = name
        self.device_memory = device_memory
        self._owner = owner
        self._bytes = np.frombuffer(buffer, np.uint8)
        if not self._bytes.flags.writeable:
            raise TypeError(f"{name}: the buffer of an MmioRegion must be writable")
        self._words = self._bytes[: self._bytes.size & ~3].view(np.uint32)

    @classmethod
    def map_file(cls, path: str | Path, size: int, *, offset: int = 0, sync: bool = True,
                 device_memory: bool = False, name: str | None = None) -> MmioRegion:
        """Map ``size`` bytes of a device file (``/dev/uioN``, ``/dev/udmabufN``, ``/dev/mem``) at ``offset``.

        Parameters
        ----------
        path : str or Path
            The file to map.
        size : int
            Bytes to map.
        offset : int
            File offset (page aligned): the physical address for ``/dev/mem``, ``N * page size`` for UIO map N.
        sync : bool
            Open with ``O_SYNC`` (uncached mapping for ``/dev/mem`` and u-dma-buf).
        device_memory : bool
            See the class parameters.
        name : str, optional
            For error messages (default: the path).
        """
        path = Path(path)
        label = name or str(path)
        flags = os.O_RDWR | (os.O_SYNC if sync else 0)
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            raise FpgaSetupError(f"{path} does not exist") from None
        except PermissionError:
            raise FpgaSetupError(f"no permission to open {path}: run as root or give your user access "
                                 f"(e.g. a udev rule setting its group)") from None
        try:
            mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)
        except (OSError, ValueError) as exc:
            raise FpgaSetupError(f"cannot map {size:#x} bytes of {path} at offset {offset:#x}: {exc}") from None
        finally:
            os.close(fd)
        return cls(mapping, name=label, device_memory=device_memory, owner=mapping)

    @property
    def size(self) -> int:
        """Bytes of the region."""
        return int(self._bytes.size)

    def _check(self, offset: int, length: int, what: str) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise IndexError(f"{what} [{offset:#x}, {offset + length:#x}) is outside {self.name} "
                             f"({self.size:#x} bytes)")

    # ------------------------------------------------------------------ registers
    def read32(self, offset: int) -> int:
        """Read the 32-bit word at byte ``offset`` (4-byte aligned)."""
        if offset & 3:
            raise ValueError(f"{self.name}: register offset {offset:#x} is not 4-byte aligned")
        self._check(offset, 4, "register read")
        return int(self._words[offset >> 2])

    def write32(self, offset: int, value: int) -> None:
        """Write the 32-bit word at byte ``offset`` (4-byte aligned)."""
        if offset & 3:
            raise ValueError(f"{self.name}: register offset {offset:#x} is not 4-byte aligned")
        self._check(offset, 4, "register write")
        self._words[offset >> 2] = value & 0xFFFFFFFF

    # ------------------------------------------------------------------ bytes
    def read(self, offset: int, length: int) -> np.ndarray:
        """Copy ``length`` bytes at ``offset`` out of the region (uint8 array).

        The region is only ever loaded in aligned 8-byte words (:meth:`_load_words`); the bytes asked for are cut
        out of them in ordinary memory.
        """
        self._check(offset, length, "read")
        if length == 0:
            return np.zeros(0, np.uint8)
        lo, hi = offset & ~7, (offset + length + 7) & ~7
        words = self._load_words(lo, (hi - lo) >> 3)
        return words.view(np.uint8)[offset - lo:offset - lo + length].copy()

    def write(self, offset: int, data: Any) -> None:
        """Copy bytes (``bytes``, any ndarray viewed as bytes) into the region at ``offset``.

        The region is only ever stored in aligned 8-byte words (:meth:`_store_words`): a partial first or last word
        is read, merged in ordinary memory and written back whole. arm64 faults on an unaligned access to Device
        memory (u-dma-buf's ``sync_mode=1`` since v2.1.2 maps ``O_SYNC`` buffers that way, "you probably won't be
        able to use memset()", ikwzm/udmabuf ``Readme.md``), and a plain ``memcpy`` makes unaligned accesses at
        the ends of an unaligned range.
        """
        src = _as_bytes(data)
        self._check(offset, src.size, "write")
        if src.size == 0:
            return
        lo, hi = offset & ~7, (offset + src.size + 7) & ~7
        staged = np.empty((hi - lo) >> 3, np.uint64)
        if lo != offset:
            staged[0] = self._load_words(lo, 1)[0]            # keep the bytes around a partial first word
        if hi != offset + src.size and (staged.size > 1 or lo == offset):
            staged[-1] = self._load_words(hi - 8, 1)[0]       # ... and a partial last word
        staged.view(np.uint8)[offset - lo:offset - lo + src.size] = src
        self._store_words(lo, staged)

    def _word_view(self, byte_offset: int, count: int) -> np.ndarray:
        base = self._bytes[byte_offset:byte_offset + 8 * count]
        if byte_offset & 7 or base.ctypes.data & 7:
            raise ValueError(f"{self.name}: word access at {byte_offset:#x} is not 8-byte aligned")
        return base.view(np.uint64)

    def _load_words(self, byte_offset: int, count: int) -> np.ndarray:
        """Load ``count`` aligned 8-byte words starting at ``byte_offset`` (a multiple of 8) into a new array.

        Normal memory (u-dma-buf write-combined, i.e. Normal non-cacheable on arm64): one numpy copy between two
        8-byte aligned arrays. Device memory: one aligned 8-byte load per word, as PYNQ's MMIO does its accesses.
        """
        words = self._word_view(byte_offset, count)
        if not self.device_memory:
            return words.copy()
        out = np.empty(count, np.uint64)
        for i in range(count):
            out[i] = words[i]
        return out

    def _store_words(self, byte_offset: int, values: np.ndarray) -> None:
        """Store aligned 8-byte words at ``byte_offset`` (a multiple of 8); see :meth:`_load_words`."""
        words = self._word_view(byte_offset, values.size)
        if not self.device_memory:
            words[:] = values
            return
        for i in range(values.size):
            words[i] = values[i]

    def close(self) -> None:
        """Unmap the region (further accesses fail)."""
        self._bytes = np.zeros(0, np.uint8)
        self._words = np.zeros(0, np.uint32)
        if self._owner is not None and hasattr(self._owner, "close"):
            try:
                self._owner.close()
            except BufferError:  # a caller still holds a view; the mapping goes when that view does
                pass
        self._owner = None


def _as_bytes(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return np.frombuffer(bytes(data), np.uint8)


# ---------------------------------------------------------------------------------------------------- interrupts
class Interrupt(Protocol):
    """What :class:`FpgaDevice` needs from an interrupt line."""

    def enable(self) -> None: ...
    def wait(self, timeout_s: float) -> bool: ...
    def close(self) -> None: ...


class UioInterrupt:
    """The interrupt of a UIO device (``uio_pdrv_genirq``).

    The kernel masks the line when it fires; writing a 32-bit 1 to the device file unmasks it. A read returns the
    number of interrupts so far; ``poll`` says when there is a new one.

    Parameters
    ----------
    path : str or Path
        The UIO device file (``/dev/uio0``).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            raise FpgaSetupError(f"{self.path} does not exist: load the device-tree overlay with the generic-uio "
                                 "node of the processor (docs/board.md)") from None
        except PermissionError:
            raise FpgaSetupError(f"no permission to open {self.path}: run as root or add a udev rule") from None
        self.count = 0

    def enable(self) -> None:
        """Unmask the interrupt line."""
        try:
            os.write(self._fd, struct.pack("=I", 1))
        except OSError as exc:
            raise FpgaSetupError(f"cannot enable the interrupt through {self.path} ({exc}): is the UIO device "
                                 "bound to uio_pdrv_genirq with an 'interrupts' property?") from None

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for an interrupt; True if one arrived."""
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        if not poller.poll(max(0, int(timeout_s * 1000))):
            return False
        raw = os.read(self._fd, 4)
        if len(raw) == 4:
            self.count = struct.unpack("=I", raw)[0]
        return True

    def close(self) -> None:
        """Close the device file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# ---------------------------------------------------------------------------------------------------- memory ordering
class DmaSync(Protocol):
    """Hand a range of the DDR window to the processor, or back to the CPU, with the barriers that implies."""

    def for_device(self, offset: int, size: int) -> None: ...
    def for_cpu(self, offset: int, size: int) -> None: ...


#: u-dma-buf's sync command: ``offset << 32 | size (multiple of 16) | direction << 2 | 1`` (ikwzm/udmabuf
#: ``Readme.md``, "sync_for_cpu" / "sync_for_device"; ``u-dma-buf.c`` ``udmabuf_sync_command_argments``).
_SYNC_SIZE_MAX = 0xFFFF_FFF0
_DMA_TO_DEVICE, _DMA_FROM_DEVICE = 1, 2


def _write_sysfs(path: Path, text: str) -> None:
    """Write one sysfs attribute (a function of its own so tests can make it fail)."""
    path.write_text(text)


class UdmabufSync:
    """Cache maintenance and ordering of a u-dma-buf buffer through its sysfs ``sync_for_device``/``sync_for_cpu``.

    Writing the sync command makes the driver call ``dma_sync_single_for_device`` (clean) or
    ``dma_sync_single_for_cpu`` (invalidate) on the range (ikwzm/udmabuf ``Readme.md``, "Manual cache management";
    ``u-dma-buf.c`` ``udmabuf_sync_for_device``/``_for_cpu``). On the non-coherent HP ports of the ZynqMP these end
    in a ``dsb``: every store the CPU made to the buffer, write-combined ones included, has completed before the
    following register write (START) is issued, and no load of the buffer after DONE can have been satisfied
    before it. That is the barrier ``writel()`` has in the kernel and user space otherwise lacks: Normal
    non-cacheable (write-combined) stores and Device stores to the register page are not ordered on arm64.
    ``DMA_TO_DEVICE`` for the CPU's writes, ``DMA_FROM_DEVICE`` for its reads (``arch_sync_dma_for_cpu`` does
    nothing for ``DMA_TO_DEVICE``).

    Parameters
    ----------
    info : Path
        ``/sys/class/u-dma-buf/<name>``.
    size : int
        Bytes of the buffer (ranges are clamped to it).
    """

    def __init__(self, info: str | Path, size: int):
        self.info = Path(info)
        self.size = int(size)

    def for_device(self, offset: int, size: int) -> None:
        """Clean ``[offset, offset + size)`` and order the CPU's stores before what follows (START)."""
        self._sync("sync_for_device", offset, size, _DMA_TO_DEVICE)

    def for_cpu(self, offset: int, size: int) -> None:
        """Invalidate ``[offset, offset + size)`` and order what follows after the processor's writes."""
        self._sync("sync_for_cpu", offset, size, _DMA_FROM_DEVICE)

    def _sync(self, attr: str, offset: int, size: int, direction: int) -> None:
        lo = max(0, offset & ~63)                                  # whole cache lines
        hi = min(self.size, (offset + max(size, 1) + 63) & ~63)
        while lo < hi:
            n = min(hi - lo, _SYNC_SIZE_MAX)
            self._command(attr, lo, (n + 15) & ~15, direction)
            lo += n

    def _command(self, attr: str, offset: int, size: int, direction: int) -> None:
        command = offset << 32 | size | direction << 2 | 1
        try:
            _write_sysfs(self.info / attr, f"{command:#018x}")
        except OSError as exc:
            # u-dma-buf before the encoded command takes only 1, with sync_offset/_size/_direction set beforehand.
            try:
                _write_sysfs(self.info / "sync_offset", str(offset))
                _write_sysfs(self.info / "sync_size", str(size))
                _write_sysfs(self.info / "sync_direction", str(direction))
                _write_sysfs(self.info / attr, "1")
            except OSError:
                raise FpgaSetupError(f"cannot write {self.info / attr} ({exc}): run as root or give your user "
                                     "write access to the u-dma-buf sysfs attributes (udev rule)") from None


# ---------------------------------------------------------------------------------------------------- discovery
def find_uio(name: str, *, sysfs: str | Path = "/sys", dev: str | Path = "/dev") -> Path:
    """The ``/dev/uioN`` whose UIO name (the device-tree node name) is ``name`` (``/sys/class/uio/uioN/name``).

    Raises
    ------
    FpgaSetupError
        No UIO device has that name; the message lists the ones there are.
    """
    root = Path(sysfs) / "class" / "uio"
    seen = []
    for entry in sorted(root.glob("uio*")):
        try:
            uio_name = (entry / "name").read_text().strip()
        except OSError:
            continue
        seen.append(f"{entry.name} ({uio_name})")
        if uio_name == name:
            return Path(dev) / entry.name
    listing = ", ".join(seen) if seen else "none"
    raise FpgaSetupError(f"no UIO device named {name!r} in {root} (found: {listing}); load the device-tree overlay "
                         f"of docs/board.md after `{UIO_MODULE_COMMAND}` (or boot with "
                         "uio_pdrv_genirq.of_id=generic-uio when the driver is built in)")


def _read_sysfs_int(path: Path, what: str, setup: str) -> int:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise FpgaSetupError(f"{path} does not exist ({what}); {setup}") from None
    try:
        return int(text, 0)
    except ValueError:
        raise FpgaSetupError(f"{path} holds {text!r}, not an integer ({what})") from None


def _udmabuf_sysfs(name: str, sysfs: Path) -> Path:
    # u-dma-buf 3.x and 4.x register the class "u-dma-buf"; 1.x/2.x "udmabuf".
    for cls in ("u-dma-buf", "udmabuf"):
        candidate = sysfs / "class" / cls / name
        if candidate.is_dir():
            return candidate
    raise FpgaSetupError(f"no u-dma-buf device {name!r} in {sysfs}/class/u-dma-buf (nor {sysfs}/class/udmabuf): "
                         f"load the u-dma-buf module and the overlay node with device-name = \"{name}\" "
                         "(docs/board.md), or pass dma_phys/dma_size for a reserved-memory carve-out")


def _ensure_sync_mode(path: Path) -> int | None:
    """Set u-dma-buf's ``sync_mode`` to 2 if it is not; return the value it has afterwards (None: no such file,
    -1: unreadable)."""
    if not path.exists():
        return None
    try:
        if path.read_text().strip() != "2":
            _write_sysfs(path, "2")
    except OSError:
        pass  # not root and no udev rule: keep what it is, and say so through the value read back
    try:
        return int(path.read_text().strip(), 0)
    except (OSError, ValueError):
        return -1


# ---------------------------------------------------------------------------------------------------- the device
class FpgaDevice:
    """A processor in the programmable logic, driven from Linux user space (target ``"fpga"``).

    Parameters
    ----------
    config : ProcessorConfig
        The configuration the bitstream was built for (checked against the CONFIG_HASH register by the driver).
    uio : str or Path or None
        The processor's UIO device: a UIO name (default :data:`DEFAULT_UIO`, ``"dlproc"``, the name the overlay
        gives the node; the device is the ``/dev/uioN`` whose ``/sys/class/uio/uioN/name`` says so) or a path
        (``"/dev/uio1"``). Its map 0 is the register page and its interrupt serves :meth:`wait_irq`. ``None``: no
        UIO (give ``regs_phys``; :meth:`wait_irq` polls). On PetaLinux ``/dev/uio0`` is usually another device.
    regs_phys : int, optional
        Map the register page from ``/dev/mem`` at this physical address instead of UIO map 0 (the interrupt
        still comes from ``uio`` when that exists). The block design puts it at :data:`DEFAULT_REGS_PHYS`.
    dma_buffer : str or Path or None
        The u-dma-buf device (``"/dev/udmabuf0"``); its physical address and size come from
        ``/sys/class/u-dma-buf/<name>/phys_addr`` and ``size``.
    dma_phys, dma_size : int, optional
        Instead of u-dma-buf: a physically contiguous carve-out (``reserved-memory`` with ``no-map``) mapped
        through ``/dev/mem`` (debugging only: no cache maintenance or barrier is available for it from user
        space, and copies are word by word).
    dma_sync : bool or DmaSync
        ``True`` (default): order the DDR buffer through u-dma-buf's ``sync_for_device``/``sync_for_cpu``
        (:class:`UdmabufSync`) when the buffer is a u-dma-buf; a :class:`DmaSync` object: use it (tests);
        ``False``: none.
    interrupt : bool or Interrupt
        ``True`` (default): use the UIO interrupt when there is a UIO device; ``False``: always poll STATUS; an
        :class:`Interrupt` object: use it (tests).
    poll_interval_s : float
        STATUS polling period when there is no interrupt.
    check_magic : bool
        Read the MAGIC register at once and fail with a setup hint if no processor answers.
    regs, ddr : MmioRegion, optional
        Use these regions instead of opening device files (simulated targets in tests). ``ddr_phys_base`` is
        then the physical address the processor should use for DDR offset 0.
    ddr_phys_base : int, optional
        See ``regs, ddr``.
    sysfs, dev_mem : str or Path
        Roots of sysfs and the ``/dev/mem`` file (tests point them at fake trees).

    Attributes
    ----------
    ddr_phys_base : int
        Physical address of the DDR buffer (DDR window offset 0).
    ddr_size : int
        Bytes of the DDR buffer.
    uio_path : Path or None
        The UIO device in use.

    Notes
    -----
    Memory ordering. The processor reaches DDR through an HP port that does not snoop the CPU caches, and the
    buffer is mapped write-combined (Normal non-cacheable on arm64), which arm64 does not order against the Device
    stores to the register page. So:

    * every byte the CPU writes is recorded, and the write of CTRL with START is preceded by ``sync_for_device``
      over those bytes (clean + ``dsb``): the processor cannot start before the data it reads has reached DDR;
    * after START, every read of the buffer is preceded by ``sync_for_cpu`` over the bytes read (invalidate +
      ``dsb``): nothing the CPU reads can have been fetched before DONE was seen;
    * the buffer is only ever accessed in aligned 8-byte words (:meth:`MmioRegion.write`), so a buffer that ends
      up mapped as Device memory (``sync_mode`` 1) does not fault.
    """

    def __init__(self, config: ProcessorConfig, *, uio: str | Path | None = DEFAULT_UIO, regs_phys: int | None = None,
                 dma_buffer: str | Path | None = DEFAULT_DMA_BUFFER, dma_phys: int | None = None,
                 dma_size: int | None = None, dma_sync: bool | DmaSync = True, interrupt: bool | Interrupt = True,
                 poll_interval_s: float = 1e-4, check_magic: bool = True, regs: MmioRegion | None = None,
                 ddr: MmioRegion | None = None, ddr_phys_base: int | None = None, sysfs: str | Path = "/sys",
                 dev_mem: str | Path = "/dev/mem"):
        if not isinstance(config, ProcessorConfig):
            raise TypeError(f"config must be a ProcessorConfig, not {config!r}")
        self.config = config
        self.poll_interval_s = poll_interval_s
        self._sysfs = Path(sysfs)
        self._dev_mem = Path(dev_mem)
        self._regions: list[MmioRegion] = []
        self._interrupt: Interrupt | None = None
        self._sync: DmaSync | None = dma_sync if dma_sync not in (True, False) else None
        self._udmabuf_info: Path | None = None
        self._dirty: tuple[int, int] | None = None    # bytes written since the last sync_for_device
        self._started = False                          # the processor may have written the buffer since
        self.uio_path: Path | None = None
        try:
            uio_path = None
            if regs is None:
                try:
                    uio_path = self._resolve_uio(uio)
                except FpgaSetupError:
                    if regs_phys is None:
                        raise
                    # Registers through /dev/mem: without a UIO device there is no interrupt; wait_irq polls.
            self.regs = regs if regs is not None else self._open_registers(uio_path, regs_phys)
            if ddr is not None:
                if ddr_phys_base is None:
                    raise TypeError("ddr_phys_base is required with ddr=")
                self.ddr, self.ddr_phys_base = ddr, int(ddr_phys_base)
            else:
                self.ddr, self.ddr_phys_base = self._open_ddr(dma_buffer, dma_phys, dma_size)
            self.ddr_size = self.ddr.size
            if dma_sync is True and self._udmabuf_info is not None:
                self._sync = UdmabufSync(self._udmabuf_info, self.ddr_size)
            self.uio_path = uio_path
            self._check_window()
            if interrupt is True:
                if uio_path is not None and regs is None:
                    self._interrupt = UioInterrupt(uio_path)
            elif interrupt is not False:
                self._interrupt = interrupt
            if check_magic:
                self._check_magic()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ opening
    def _resolve_uio(self, uio: str | Path | None) -> Path | None:
        if uio is None:
            return None
        text = str(uio)
        if "/" not in text:
            return find_uio(text, sysfs=self._sysfs)
        path = Path(text)
        if not path.exists():
            raise FpgaSetupError(f"{path} does not exist: load the bitstream and the device-tree overlay with the "
                                 "processor's generic-uio node, boot with uio_pdrv_genirq.of_id=generic-uio "
                                 f"(docs/board.md), or pass uio=None, regs_phys={DEFAULT_REGS_PHYS:#x} to map the "
                                 "registers through /dev/mem and poll")
        return path

    def _open_registers(self, uio_path: Path | None, regs_phys: int | None) -> MmioRegion:
        if regs_phys is not None:
            if regs_phys % mmap.PAGESIZE:
                raise FpgaSetupError(f"regs_phys {regs_phys:#x} is not page aligned")
            region = MmioRegion.map_file(self._dev_mem, REGISTER_PAGE_BYTES, offset=regs_phys,
                                         device_memory=True, name=f"{self._dev_mem} @ {regs_phys:#x}")
        elif uio_path is not None:
            map_dir = self._sysfs / "class" / "uio" / uio_path.name / "maps" / "map0"
            size = _read_sysfs_int(map_dir / "size", "size of the register page",
                                   "the UIO node needs a 'reg' property covering the register page")
            if size < REGISTER_PAGE_BYTES:
                raise FpgaSetupError(f"{map_dir / 'size'} is {size:#x}: the register page needs "
                                     f"{REGISTER_PAGE_BYTES:#x} bytes ('reg' of the overlay node)")
            # UIO selects map N with the mmap offset N * page size; map 0 is offset 0.
            region = MmioRegion.map_file(uio_path, REGISTER_PAGE_BYTES, offset=0, device_memory=True,
                                         name=f"{uio_path} map0")
        else:
            raise FpgaSetupError("no way to reach the registers: give uio='/dev/uioN' (or its name) or "
                                 f"regs_phys={DEFAULT_REGS_PHYS:#x}")
        self._regions.append(region)
        return region

    def _open_ddr(self, dma_buffer: str | Path | None, dma_phys: int | None,
                  dma_size: int | None) -> tuple[MmioRegion, int]:
        if dma_phys is not None:
            if not dma_size:
                raise FpgaSetupError("dma_phys needs dma_size (bytes of the reserved-memory carve-out)")
            if dma_phys % mmap.PAGESIZE or dma_size % mmap.PAGESIZE:
                raise FpgaSetupError(f"dma_phys {dma_phys:#x} and dma_size {dma_size:#x} must be page aligned")
            region = MmioRegion.map_file(self._dev_mem, dma_size, offset=dma_phys, device_memory=True,
                                         name=f"{self._dev_mem} @ {dma_phys:#x}")
            self._regions.append(region)
            return region, dma_phys
        if dma_buffer is None:
            raise FpgaSetupError("no DDR buffer: give dma_buffer='/dev/udmabuf0' or dma_phys/dma_size")
        dev = Path(dma_buffer)
        if not dev.exists():
            raise FpgaSetupError(f"{dev} does not exist: install and load the u-dma-buf kernel module and add its "
                                 "device-tree node (docs/board.md), or pass dma_phys/dma_size for a "
                                 "reserved-memory carve-out")
        info = _udmabuf_sysfs(dev.name, self._sysfs)
        setup = "is the u-dma-buf module loaded?"
        phys = _read_sysfs_int(info / "phys_addr", "physical address of the DMA buffer", setup)
        size = _read_sysfs_int(info / "size", "size of the DMA buffer", setup)
        if dma_size is not None:
            if dma_size > size:
                raise FpgaSetupError(f"dma_size {dma_size:#x} is larger than {dev} ({size:#x} bytes)")
            size = dma_size
        # sync_mode 2: an O_SYNC mapping is write-combined (Normal non-cacheable), which the overlay's
        # `sync-mode = <2>` already sets. A buffer made by `insmod u-dma-buf udmabuf0=...` starts at 1 (Device
        # memory since u-dma-buf 2.1.2); if it cannot be set to 2 the region is mapped as Device memory and
        # copied word by word (correct, slow).
        device_memory = _ensure_sync_mode(info / "sync_mode") not in (None, 2)
        region = MmioRegion.map_file(dev, size, sync=True, device_memory=device_memory, name=str(dev))
        self._udmabuf_info = info
        self._regions.append(region)
        return region, phys

    def _check_window(self) -> None:
        base, size, bits = self.ddr_phys_base, self.ddr_size, self.config.axi_addr_width
        if base % 4096:
            raise FpgaSetupError(f"the DDR buffer at {base:#x} is not 4 KiB aligned")
        if size < 4096:
            raise FpgaSetupError(f"the DDR buffer has only {size} bytes")
        if base + size > 1 << bits:
            raise FpgaSetupError(f"the DDR buffer [{base:#x}, {base + size:#x}) is beyond the processor's "
                                 f"{bits}-bit AXI addresses")

    def _check_magic(self) -> None:
        magic = self.regs.read32(Reg.MAGIC)
        if magic != MAGIC:
            raise FpgaSetupError(f"no dlproc processor answers at {self.regs.name} (MAGIC reads {magic:#010x}, "
                                 f"expected {MAGIC:#010x}): is the bitstream loaded (fpgautil -b ...) and the "
                                 "register page at the address of the block design?")

    # ------------------------------------------------------------------ the Device interface
    def read_reg(self, offset: int) -> int:
        """Read a 32-bit control/status register."""
        return self.regs.read32(int(offset))

    def write_reg(self, offset: int, value: int) -> None:
        """Write a 32-bit control register; a START is preceded by ``sync_for_device`` (class notes)."""
        offset, value = int(offset), int(value)
        if offset == Reg.CTRL and value & CTRL_START:
            if self._sync is not None:
                lo, hi = self._dirty if self._dirty is not None else (0, 64)   # 64: a barrier even if nothing new
                self._sync.for_device(lo, hi - lo)
            self._dirty = None
            self._started = True
        self.regs.write32(offset, value)

    def write_ddr(self, offset: int, data: Any) -> None:
        """Copy bytes into the DDR buffer at a window offset (recorded for the next ``sync_for_device``)."""
        offset, src = int(offset), _as_bytes(data)
        self.ddr.write(offset, src)
        if src.size:
            lo, hi = offset, offset + int(src.size)
            if self._dirty is not None:
                lo, hi = min(lo, self._dirty[0]), max(hi, self._dirty[1])
            self._dirty = (lo, hi)

    def read_ddr(self, offset: int, length: int) -> np.ndarray:
        """Copy bytes out of the DDR buffer at a window offset (uint8 array); after a START, ``sync_for_cpu``
        over those bytes comes first (class notes)."""
        offset, length = int(offset), int(length)
        if self._started and self._sync is not None and length:
            self._sync.for_cpu(offset, length)
        return self.ddr.read(offset, length)

    def _finished(self) -> bool:
        return bool(self.read_reg(Reg.STATUS) & (STATUS_DONE | STATUS_ERROR))

    def wait_irq(self, timeout_s: float) -> bool:
        """Wait until the processor raises DONE or ERROR, at most ``timeout_s`` seconds.

        With an interrupt: unmask it, then sleep in ``poll`` (the processor's ``irq`` is a level, high while DONE or
        ERROR is set and IRQ_EN is on, so one that fired before the unmask is delivered at once). Without: poll
        STATUS every :attr:`poll_interval_s`. A wake-up that finds the processor still busy (a stale event) goes
        back to waiting.

        Returns
        -------
        bool
            Whether STATUS shows DONE or ERROR.
        """
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            if self._interrupt is not None:
                self._interrupt.enable()
            if self._finished():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._interrupt is not None:
                self._interrupt.wait(remaining)
            else:
                time.sleep(min(self.poll_interval_s, remaining))

    def close(self) -> None:
        """Unmap the regions and close the interrupt."""
        if self._interrupt is not None:
            self._interrupt.close()
            self._interrupt = None
        for region in self._regions:
            region.close()
        self._regions = []

    def __enter__(self) -> FpgaDevice:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        irq = "interrupt" if self._interrupt is not None else "polling"
        return (f"FpgaDevice([{self.config.hardware_hash}], regs={self.regs.name}, "
                f"ddr={self.ddr_size:#x} bytes at {self.ddr_phys_base:#x}, {irq})")
