"""The memory system behind the processor's AXI4 master, in time: one owner for the RTL harness and the estimate.

A board's DDR is described by :class:`DdrModel` in physical units: the controller's aggregate bandwidth (GB/s, read
and write beats together, shared by every AXI port) and its latency (ns). :meth:`DdrModel.timing` converts it into
cycles of one processor configuration (:class:`DdrTiming`) with the configuration's ``clock_mhz``:

* each AXI master port moves at most one data beat per processor cycle and direction (the port's own limit);
* all ports share the controller's ``bandwidth_gbps``: ``bandwidth / (clock x beat bytes)`` beats per cycle,
  reads and writes together (rounded down to 1/1000 beat, so the model never grants more than the board);
* a read returns its first beat ``ceil(read_latency_ns x clock)`` cycles after its address handshake, a write
  response comes ``ceil(write_latency_ns x clock)`` cycles after the last data beat.

At a low clock the port (one beat per cycle) limits a stream; at a high clock the controller does, and the
latency in cycles grows with the clock. The Verilator harness (``sim/verilator/harness.cpp``, through
:meth:`dlproc.sim.verilator.VerilatorDevice.set_memory_model`) and :func:`dlproc.runtime.estimate.estimate_performance`
both take their DDR timing from here. See ``docs/memory.md``.

This module imports neither Amaranth nor the gateware.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from dlproc.processor.config import ProcessorConfig

__all__ = ["DdrModel", "DdrTiming", "ZCU102_DDR", "IDEAL_DDR", "MEMORY_MODELS", "memory_model"]

#: Denominator of the shared controller's beats-per-cycle fraction (the rate is rounded down to it).
RATE_DENOMINATOR = 1000


@dataclass(frozen=True)
class DdrTiming:
    """The memory system seen by the AXI4 master, in processor cycles.

    Attributes
    ----------
    read_latency : int
        Cycles from a read address handshake to its first data beat (at least 1).
    write_latency : int
        Cycles from the last write beat to its response (at least 1).
    beats_per_cycle : Fraction
        Limit of each direction of the port, in beats per cycle (at most 1 = the port's full width every cycle).
    shared_beats_per_cycle : Fraction or None
        Limit of the DDR controller shared by reads and writes of every port, in beats per cycle (may exceed 1);
        None for no shared limit.
    name : str
        What the timing was derived from (shown in profiles and the bench).
    """

    read_latency: int = 24
    write_latency: int = 8
    beats_per_cycle: Fraction = Fraction(1)
    shared_beats_per_cycle: Fraction | None = None
    name: str = "ideal (24-cycle read latency, one beat per cycle)"

    @property
    def stream_rate(self) -> float:
        """Beats per cycle of one stream (one direction, the other idle): the tighter of the two limits."""
        rate = self.beats_per_cycle
        if self.shared_beats_per_cycle is not None:
            rate = min(rate, self.shared_beats_per_cycle)
        return float(rate)


@dataclass(frozen=True)
class DdrModel:
    """A board's DDR controller in physical units (see the module docstring).

    Attributes
    ----------
    name : str
        Short name (``"zcu102"``).
    description : str
        What the figures describe and where they come from.
    peak_gbps : float
        Peak bandwidth of the DDR interface in GB/s (10^9 bytes per second).
    efficiency : float
        Fraction of the peak a PL master can sustain (0 to 1].
    read_latency_ns : float
        Time from a read request to its first data at the AXI port.
    write_latency_ns : float
        Time from the last write data beat to the write response.
    """

    name: str
    description: str
    peak_gbps: float
    efficiency: float
    read_latency_ns: float
    write_latency_ns: float

    def __post_init__(self) -> None:
        if not (self.peak_gbps > 0 and 0 < self.efficiency <= 1 and self.read_latency_ns >= 0
                and self.write_latency_ns >= 0):
            raise ValueError(f"DdrModel {self.name!r}: peak_gbps must be > 0, efficiency in (0, 1] and latencies "
                             f">= 0, not {self.peak_gbps}, {self.efficiency}, {self.read_latency_ns}, "
                             f"{self.write_latency_ns}")

    @property
    def bandwidth_gbps(self) -> float:
        """Sustained aggregate bandwidth (reads and writes together), GB/s: ``peak_gbps x efficiency``."""
        return self.peak_gbps * self.efficiency

    def timing(self, config: ProcessorConfig, *, clock_mhz: float | None = None) -> DdrTiming:
        """The model in cycles of ``config`` (at ``clock_mhz``, default ``config.clock_mhz``)."""
        mhz = float(config.clock_mhz if clock_mhz is None else clock_mhz)
        if mhz <= 0:
            raise ValueError(f"clock_mhz must be positive, not {mhz}")
        bytes_per_cycle = self.bandwidth_gbps * 1e3 / mhz
        num = math.floor(bytes_per_cycle / config.beat_bytes * RATE_DENOMINATOR + 1e-6)
        shared = Fraction(max(num, 1), RATE_DENOMINATOR)

        def cycles(ns: float) -> int:
            return max(1, math.ceil(ns * mhz / 1e3 - 1e-9))

        return DdrTiming(read_latency=cycles(self.read_latency_ns), write_latency=cycles(self.write_latency_ns),
                         beats_per_cycle=Fraction(1), shared_beats_per_cycle=shared,
                         name=f"{self.name}: {self.bandwidth_gbps:g} GB/s shared, {self.read_latency_ns:g} ns read "
                              f"latency at {mhz:g} MHz")


#: The ZCU102's PS DDR4 (64-bit DDR4-2400 on the PS side: 19.2 GB/s peak, UG1182) as seen from the PL's HP ports.
#: Efficiency 75%: the share of the peak reachable from the PL (issue 13 and /work/shared/TOOLCHAIN.md, "about 17-19
#: GB/s peak"; UG585 states the same ~75% maximum controller efficiency for the Zynq-7000 DDR controller).
#: Latencies are an ASSUMPTION (no measurement at hand): 180 ns from an HP port's read address to its first data
#: beat (PS interconnect + AFI FIFO + DDR4 controller page miss) and 120 ns from the last write beat to the response.
ZCU102_DDR = DdrModel(
    name="zcu102",
    description="ZCU102 PS DDR4-2400, 64 bit: 19.2 GB/s peak x 75% reachable from the PL; latency 180 ns read / "
                "120 ns write response (assumed)",
    peak_gbps=19.2, efficiency=0.75, read_latency_ns=180.0, write_latency_ns=120.0)

#: The old cycle-based model (read latency 24 cycles, write response 8, one beat per cycle at any clock): frames/s
#: scale with ``clock_mhz``. Kept for comparisons (``bench/throughput.py --memory ideal``).
IDEAL_DDR = DdrTiming()

#: Memory models by name (``"ideal"`` is already in cycles).
MEMORY_MODELS: dict[str, DdrModel | DdrTiming] = {"zcu102": ZCU102_DDR, "ideal": IDEAL_DDR}


def memory_model(memory: str | DdrModel | DdrTiming | None, config: ProcessorConfig, *,
                 clock_mhz: float | None = None) -> DdrTiming:
    """The :class:`DdrTiming` of ``memory`` (a name of :data:`MEMORY_MODELS`, a model or a timing; default
    ``"zcu102"``) for ``config``.

    Raises
    ------
    ValueError
        For an unknown name.
    """
    if memory is None:
        memory = "zcu102"
    if isinstance(memory, str):
        if memory not in MEMORY_MODELS:
            raise ValueError(f"unknown memory model {memory!r}: known are {', '.join(sorted(MEMORY_MODELS))}")
        memory = MEMORY_MODELS[memory]
    if isinstance(memory, DdrTiming):
        return memory
    if isinstance(memory, DdrModel):
        return memory.timing(config, clock_mhz=clock_mhz)
    raise TypeError(f"memory must be a model name, a DdrModel or a DdrTiming, not {memory!r}")
