"""The Verilated processor behind the device interface shared with the golden model and the board.

:class:`VerilatorDevice` loads the simulator library built by :func:`~dlproc.sim.verilator.build.build_simulator`
with :mod:`ctypes` and offers the register-level device interface the runtime's driver uses::

    config, ddr_phys_base, ddr_size
    read_reg(offset) -> int          write_reg(offset, value)
    write_ddr(offset, data)          read_ddr(offset, length) -> uint8 ndarray
    wait_irq(timeout_s) -> bool      close()

plus simulation controls: cycle counts, DDR timing, random backpressure, error injection and the AXI protocol
checker's findings. Every clock cycle runs in C++; Python only calls in per register access or run request.
"""

from __future__ import annotations

import ctypes
import time
import weakref
from fractions import Fraction
from pathlib import Path

import numpy as np

from dlproc.boards.memory import DdrModel, DdrTiming, memory_model
from dlproc.processor.config import ProcessorConfig

from .build import TopFactory, build_simulator

__all__ = ["VerilatorDevice", "SimulatorError", "BusError", "ProtocolError", "ABI_VERSION", "RESP_NAMES"]

#: Version of the harness's C API this module speaks (``DL_ABI_VERSION`` in harness.cpp).
ABI_VERSION = 2
#: AXI response codes by value.
RESP_NAMES = {0: "OKAY", 1: "EXOKAY", 2: "SLVERR", 3: "DECERR"}
_STAT_NAMES = ("cycles", "read_beats", "write_beats", "read_bursts", "write_bursts", "decode_error_bursts",
               "injected_error_bursts")
#: Largest number of cycles one ``wait_irq`` chunk runs before looking at the wall clock again.
_MAX_CHUNK = 1 << 20


class SimulatorError(RuntimeError):
    """The simulator could not be created or a register access did not complete."""


class BusError(SimulatorError):
    """A register access answered with an AXI error response.

    Attributes
    ----------
    offset : int
        Register byte offset.
    resp : int
        The AXI response code (2 SLVERR, 3 DECERR).
    """

    def __init__(self, message: str, *, offset: int, resp: int):
        super().__init__(message)
        self.offset = offset
        self.resp = resp


class ProtocolError(SimulatorError):
    """The design broke an AXI rule on its memory master (raised by :meth:`VerilatorDevice.check_protocol`)."""


_HANDLE = ctypes.c_void_p
_U64 = ctypes.c_uint64
_PROTOTYPES: dict[str, tuple[object, list[object]]] = {
    "dl_abi_version": (ctypes.c_int, []),
    "dl_bus_bytes": (ctypes.c_int, []),
    "dl_has_trace": (ctypes.c_int, []),
    "dl_create": (_HANDLE, [_U64, _U64, ctypes.c_char_p]),
    "dl_destroy": (None, [_HANDLE]),
    "dl_reset": (None, [_HANDLE, ctypes.c_int]),
    "dl_set_ddr_timing": (ctypes.c_int, [_HANDLE, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                         ctypes.c_int]),
    "dl_set_ddr_bandwidth": (ctypes.c_int, [_HANDLE, ctypes.c_int64, ctypes.c_int64]),
    "dl_set_backpressure": (None, [_HANDLE, ctypes.c_uint32, ctypes.c_int]),
    "dl_set_read_reorder": (None, [_HANDLE, ctypes.c_int]),
    "dl_set_error_range": (ctypes.c_int, [_HANDLE, _U64, _U64, ctypes.c_int]),
    "dl_ddr_write": (ctypes.c_int, [_HANDLE, _U64, ctypes.c_void_p, _U64]),
    "dl_ddr_read": (ctypes.c_int, [_HANDLE, _U64, ctypes.c_void_p, _U64]),
    "dl_reg_write": (ctypes.c_int, [_HANDLE, ctypes.c_uint32, ctypes.c_uint32]),
    "dl_reg_read": (ctypes.c_int, [_HANDLE, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)]),
    "dl_run_until_irq": (_U64, [_HANDLE, _U64]),
    "dl_step": (_U64, [_HANDLE, _U64]),
    "dl_irq": (ctypes.c_int, [_HANDLE]),
    "dl_cycles": (_U64, [_HANDLE]),
    "dl_protocol_errors": (_U64, [_HANDLE]),
    "dl_last_protocol_error": (ctypes.c_char_p, [_HANDLE]),
    "dl_first_protocol_error": (ctypes.c_char_p, [_HANDLE]),
    "dl_stats": (ctypes.c_int, [_HANDLE, ctypes.POINTER(_U64), ctypes.c_int]),
    "dl_trace_flush": (None, [_HANDLE]),
}
_LIBRARIES: dict[Path, ctypes.CDLL] = {}


def _load(path: Path) -> ctypes.CDLL:
    path = Path(path).resolve()
    if path not in _LIBRARIES:
        if not path.exists():
            raise SimulatorError(f"simulator library {path} does not exist; build it with build_simulator()")
        lib = ctypes.CDLL(str(path))  # RTLD_LOCAL: two simulators in one process keep their own Verilator runtime
        for name, (restype, argtypes) in _PROTOTYPES.items():
            try:
                fn = getattr(lib, name)
            except AttributeError:
                raise SimulatorError(f"{path} lacks {name}(): it was built from another harness version; "
                                     "delete it from the cache to rebuild") from None
            fn.restype = restype
            fn.argtypes = argtypes
        version = lib.dl_abi_version()
        if version != ABI_VERSION:
            raise SimulatorError(f"{path} speaks harness ABI {version}, this dlproc expects {ABI_VERSION}")
        _LIBRARIES[path] = lib
    return _LIBRARIES[path]


class VerilatorDevice:
    """The RTL of one processor configuration, simulated by Verilator, with a DDR model on its AXI4 master.

    Parameters
    ----------
    config : ProcessorConfig
        The processor configuration (also selects the cached simulator build).
    ddr_phys_base : int, optional
        Physical address the processor sees for DDR offset 0 (default ``config.ddr_base``); 4 KiB aligned.
    ddr_size : int, optional
        Bytes of modelled DDR (default ``config.ddr_size``). Accesses outside
        ``[ddr_phys_base, ddr_phys_base + ddr_size)`` answer DECERR.
    trace : str or Path, optional
        Write an FST waveform of the whole run to this file (uses a separately cached tracing build).
    top : callable, optional
        ``top(config)`` returns the Amaranth component to simulate instead of the processor (tests).
    library : str or Path, optional
        A simulator library to load instead of building or looking one up; ``top`` is then ignored.
    memory : str, DdrModel or DdrTiming, optional
        The memory system on the AXI4 master (default ``"zcu102"``: the ZCU102's PS DDR4 at ``config.clock_mhz``,
        :mod:`dlproc.boards.memory`; ``"ideal"``: 24-cycle read latency and one beat per cycle at any clock).

    Examples
    --------
    >>> with VerilatorDevice(ProcessorConfig.preset("tiny_int8")) as dev:   # doctest: +SKIP
    ...     dev.write_ddr(0, program)
    ...     dev.write_reg(Reg.CTRL, CTRL_START | CTRL_IRQ_EN)
    ...     assert dev.wait_irq(timeout_s=60)
    """

    def __init__(self, config: ProcessorConfig, *, ddr_phys_base: int | None = None, ddr_size: int | None = None,
                 trace: str | Path | None = None, top: TopFactory | None = None,
                 library: str | Path | None = None, memory: str | DdrModel | DdrTiming | None = None):
        if not isinstance(config, ProcessorConfig):
            raise TypeError(f"config must be a ProcessorConfig, not {config!r}")
        self.config = config
        self.ddr_phys_base = config.ddr_base if ddr_phys_base is None else int(ddr_phys_base)
        self.ddr_size = config.ddr_size if ddr_size is None else int(ddr_size)
        if self.ddr_phys_base < 0 or self.ddr_phys_base % 4096:
            raise ValueError(f"ddr_phys_base must be a non-negative multiple of 4096, not {self.ddr_phys_base:#x}")
        if self.ddr_size <= 0 or self.ddr_size % 64:
            raise ValueError(f"ddr_size must be a positive multiple of 64 bytes, not {self.ddr_size}")
        if library is None:
            library = build_simulator(config, trace=trace is not None, top=top)
        self.library = Path(library)
        self._lib = _load(self.library)
        if trace is not None and not self._lib.dl_has_trace():
            raise SimulatorError(f"{self.library} was built without tracing; build it with trace=True")
        self.trace_path = None if trace is None else Path(trace)
        handle = self._lib.dl_create(self.ddr_phys_base, self.ddr_size,
                                     None if trace is None else str(trace).encode())
        if not handle:
            raise SimulatorError(f"could not create the simulation (DDR of {self.ddr_size} bytes at "
                                 f"{self.ddr_phys_base:#x}, bus {self.bus_bytes} bytes)")
        self._handle: int | None = handle
        self._finalizer = weakref.finalize(self, self._lib.dl_destroy, handle)
        self._timing = {"read_latency": 24, "write_latency": 8, "beats_per_cycle": Fraction(1),
                        "max_outstanding": 8, "shared_beats_per_cycle": None}
        self.memory = memory_model(memory, config)
        self.set_memory_model(memory)

    # ------------------------------------------------------------------ plumbing
    @property
    def _h(self) -> int:
        if self._handle is None:
            raise SimulatorError("the VerilatorDevice is closed")
        return self._handle

    @property
    def bus_bytes(self) -> int:
        """Bytes of one AXI data beat of the simulated design."""
        return self._lib.dl_bus_bytes()

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.ddr_size:
            raise ValueError(f"DDR access [{offset:#x}, {offset + length:#x}) is outside the simulated DDR window "
                             f"[0, {self.ddr_size:#x})")

    # ------------------------------------------------------------------ device interface
    def read_reg_raw(self, offset: int) -> tuple[int, int]:
        """One AXI4-Lite read: ``(resp, value)`` without raising on an error response.

        Raises
        ------
        SimulatorError
            If the design does not complete the transaction within 100000 cycles.
        """
        value = ctypes.c_uint32()
        resp = self._lib.dl_reg_read(self._h, int(offset), ctypes.byref(value))
        if resp < 0:
            raise SimulatorError(f"register read at {int(offset):#x} did not complete within 100000 cycles")
        return resp, value.value

    def write_reg_raw(self, offset: int, value: int) -> int:
        """One AXI4-Lite write; returns the response code without raising on an error response."""
        resp = self._lib.dl_reg_write(self._h, int(offset), int(value) & 0xFFFFFFFF)
        if resp < 0:
            raise SimulatorError(f"register write at {int(offset):#x} did not complete within 100000 cycles")
        return resp

    def read_reg(self, offset: int) -> int:
        """Read a 32-bit control/status register (a full AXI4-Lite read, clocking the design).

        Raises
        ------
        BusError
            If the design answers SLVERR or DECERR.
        """
        resp, value = self.read_reg_raw(offset)
        if resp:
            raise BusError(f"register read at {int(offset):#x} answered {RESP_NAMES[resp]}", offset=offset, resp=resp)
        return value

    def write_reg(self, offset: int, value: int) -> None:
        """Write a 32-bit control register (a full AXI4-Lite write, clocking the design).

        Raises
        ------
        BusError
            If the design answers SLVERR or DECERR.
        """
        resp = self.write_reg_raw(offset, value)
        if resp:
            raise BusError(f"register write at {int(offset):#x} answered {RESP_NAMES[resp]}", offset=offset,
                           resp=resp)

    def write_ddr(self, offset: int, data: bytes | bytearray | memoryview | np.ndarray) -> None:
        """Copy bytes into the DDR model at a window offset (no simulated time passes).

        ``data`` is a bytes-like object or an array (its raw bytes are copied).
        """
        if isinstance(data, np.ndarray):
            buf = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        else:
            buf = np.frombuffer(memoryview(data).cast("B"), np.uint8)
        self._check_range(offset, buf.size)
        if buf.size:
            self._lib.dl_ddr_write(self._h, offset, buf.ctypes.data, buf.size)

    def read_ddr(self, offset: int, length: int) -> np.ndarray:
        """Copy ``length`` bytes out of the DDR model at a window offset, as a new uint8 array."""
        self._check_range(offset, length)
        out = np.empty(length, np.uint8)
        if length:
            self._lib.dl_ddr_read(self._h, offset, out.ctypes.data, length)
        return out

    def wait_irq(self, timeout_s: float) -> bool:
        """Clock the design until ``irq`` is high or ``timeout_s`` seconds of wall time have passed.

        Returns
        -------
        bool
            True if ``irq`` is high.
        """
        deadline = time.monotonic() + timeout_s
        chunk = 4096  # grows, so short runs return quickly and long ones look at the clock rarely
        while True:
            if self._lib.dl_irq(self._h):
                return True
            if time.monotonic() >= deadline:
                return False
            self._lib.dl_run_until_irq(self._h, chunk)
            chunk = min(2 * chunk, _MAX_CHUNK)

    def close(self) -> None:
        """Free the simulation (and finish the trace file); further calls raise :class:`SimulatorError`."""
        if self._handle is not None:
            self._handle = None
            self._finalizer()

    def __enter__(self) -> VerilatorDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ simulation controls
    def run_until_irq(self, max_cycles: int) -> int:
        """Clock until ``irq`` is high or ``max_cycles`` cycles have passed; returns the cycles run."""
        return self._lib.dl_run_until_irq(self._h, int(max_cycles))

    def step(self, cycles: int) -> None:
        """Clock the design for ``cycles`` cycles."""
        self._lib.dl_step(self._h, int(cycles))

    def reset(self, cycles: int = 4) -> None:
        """Assert the design's reset for ``cycles`` cycles; pending DDR transactions are dropped, DDR kept."""
        self._lib.dl_reset(self._h, int(cycles))

    @property
    def irq(self) -> bool:
        """Current level of the design's ``irq`` output."""
        return bool(self._lib.dl_irq(self._h))

    @property
    def cycles(self) -> int:
        """Clock cycles simulated since creation (reset cycles included)."""
        return self._lib.dl_cycles(self._h)

    @property
    def protocol_errors(self) -> int:
        """Number of AXI protocol violations seen on the design's memory master."""
        return self._lib.dl_protocol_errors(self._h)

    @property
    def first_protocol_error(self) -> str:
        """Message of the first protocol violation ("" if none)."""
        return self._lib.dl_first_protocol_error(self._h).decode()

    @property
    def last_protocol_error(self) -> str:
        """Message of the latest protocol violation ("" if none)."""
        return self._lib.dl_last_protocol_error(self._h).decode()

    def check_protocol(self) -> None:
        """Raise :class:`ProtocolError` if the design broke an AXI rule on its memory master."""
        count = self.protocol_errors
        if count:
            raise ProtocolError(f"{count} AXI protocol violation(s) on m_axi; first: {self.first_protocol_error}; "
                                f"last: {self.last_protocol_error}")

    def stats(self) -> dict[str, int]:
        """Counters of the DDR model: cycles, read/write beats and bursts, DECERR and injected-error bursts."""
        values = (_U64 * len(_STAT_NAMES))()
        self._lib.dl_stats(self._h, values, len(_STAT_NAMES))
        return dict(zip(_STAT_NAMES, values, strict=True))

    def set_ddr_timing(self, *, read_latency: int | None = None, write_latency: int | None = None,
                       beats_per_cycle: float | Fraction | tuple[int, int] | None = None,
                       max_outstanding: int | None = None) -> None:
        """Change the DDR model's timing in cycles; arguments left out keep their value.

        The values in force at creation come from the memory model (:meth:`set_memory_model`, default ZCU102 at
        ``config.clock_mhz``); the defaults named below are those of the ``"ideal"`` model. The shared DDR
        controller's limit is set separately (:meth:`set_ddr_bandwidth`).

        Parameters
        ----------
        read_latency : int
            Cycles from the AR handshake until RVALID of the first beat may rise, at least 1 (the next cycle);
            default 24.
        write_latency : int
            Cycles from the last W beat's handshake until BVALID may rise, at least 1; default 8.
        beats_per_cycle : float, Fraction or (num, den)
            Bandwidth limit per direction, in beats per cycle, at most 1 (default 1).
        max_outstanding : int
            Bursts in flight per direction before AWREADY/ARREADY drop (default 8).
        """
        timing = dict(self._timing)
        for name, value in (("read_latency", read_latency), ("write_latency", write_latency),
                            ("max_outstanding", max_outstanding)):
            if value is not None:
                timing[name] = int(value)
        if beats_per_cycle is not None:
            rate = (Fraction(*beats_per_cycle) if isinstance(beats_per_cycle, tuple)
                    else Fraction(beats_per_cycle).limit_denominator(1000))
            timing["beats_per_cycle"] = rate
        rate = timing["beats_per_cycle"]
        ok = self._lib.dl_set_ddr_timing(self._h, timing["read_latency"], timing["write_latency"], rate.numerator,
                                         rate.denominator, timing["max_outstanding"])
        if ok != 0:
            raise ValueError(f"invalid DDR timing {timing}: latencies must be >= 1, 0 < beats_per_cycle <= 1, "
                             "max_outstanding >= 1")
        self._timing = timing

    def set_memory_model(self, memory: str | DdrModel | DdrTiming | None = None, *,
                         clock_mhz: float | None = None) -> DdrTiming:
        """Put a memory system in time on the AXI4 master (:mod:`dlproc.boards.memory`).

        Sets the read and write latencies, the port's per-direction limit and the shared DDR controller's limit
        (reads and writes together) from ``memory`` converted at ``clock_mhz`` (default ``config.clock_mhz``: a
        simulator of one configuration can play the same design at another clock).

        Returns
        -------
        DdrTiming
            The timing in cycles now in force.
        """
        timing = memory_model(memory, self.config, clock_mhz=clock_mhz)
        self.set_ddr_timing(read_latency=timing.read_latency, write_latency=timing.write_latency,
                            beats_per_cycle=timing.beats_per_cycle)
        self.set_ddr_bandwidth(timing.shared_beats_per_cycle)
        self.memory = timing
        return timing

    def set_ddr_bandwidth(self, beats_per_cycle: Fraction | None) -> None:
        """Limit the shared DDR controller to ``beats_per_cycle`` read plus write beats per cycle (any positive
        rate; None switches the limit off)."""
        rate = None if beats_per_cycle is None else Fraction(beats_per_cycle).limit_denominator(1 << 20)
        if rate is not None and rate <= 0:
            raise ValueError(f"shared DDR bandwidth must be positive beats per cycle, not {beats_per_cycle}")
        num, den = (0, 1) if rate is None else (rate.numerator, rate.denominator)
        if self._lib.dl_set_ddr_bandwidth(self._h, num, den) != 0:
            raise ValueError(f"shared DDR bandwidth {rate} beats per cycle is out of range")
        self._timing["shared_beats_per_cycle"] = rate

    @property
    def ddr_timing(self) -> dict[str, object]:
        """The DDR model's current timing parameters (see :meth:`set_ddr_timing`)."""
        return dict(self._timing)

    def set_backpressure(self, percent: int, *, seed: int = 0) -> None:
        """Stall every channel of the DDR model at random: each READY, and each new VALID, is withheld in
        ``percent`` % of the cycles (0 switches it off). ``seed`` makes the pattern reproducible."""
        if not 0 <= percent <= 100:
            raise ValueError(f"backpressure percent must be from 0 to 100, not {percent}")
        self._lib.dl_set_backpressure(self._h, int(seed) & 0xFFFFFFFF, int(percent))

    def set_read_reorder(self, enable: bool) -> None:
        """Let the DDR model return read bursts of different IDs out of order (per-ID order is kept)."""
        self._lib.dl_set_read_reorder(self._h, int(bool(enable)))

    def set_error_range(self, lo: int, hi: int, resp: int = 2) -> None:
        """Answer ``resp`` (2 SLVERR, 3 DECERR) to every burst touching window offsets ``[lo, hi)``; such bursts
        are not performed. ``resp=0`` or an empty range switches the injection off."""
        if resp not in (0, 2, 3):
            raise ValueError(f"resp must be 0 (off), 2 (SLVERR) or 3 (DECERR), not {resp}")
        self._lib.dl_set_error_range(self._h, int(lo), int(hi), int(resp))

    def clear_error_range(self) -> None:
        """Switch error injection off."""
        self._lib.dl_set_error_range(self._h, 0, 0, 0)

    def flush_trace(self) -> None:
        """Write buffered waveform data to the trace file (it is also flushed on :meth:`close`)."""
        self._lib.dl_trace_flush(self._h)
