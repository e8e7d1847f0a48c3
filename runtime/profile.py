"""Performance profiles: per-layer cycles, latency, frames/s and MAC utilization.

The same :class:`Profile` type comes from the hardware's own counters (``predict(..., profile=True)`` on the
"sim" and "fpga" targets) and from the performance estimate, so the two can be compared line by line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dlproc.compiler.network import CompiledNetwork
from dlproc.processor.config import ProcessorConfig

__all__ = ["LayerProfile", "Profile", "profile_from_runs", "add_layer_cycles"]


@dataclass
class LayerProfile:
    """One layer's share of a frame.

    Attributes
    ----------
    name : str
    op : str
    target : str
        ``"hw"`` (FPGA processor) or ``"host"``.
    cycles : int
        Processor cycles (0 for host layers: they are not part of the processor's latency).
    macs : int
        Multiply-accumulates of the layer.
    """

    name: str
    op: str
    target: str
    cycles: int
    macs: int = 0

    def seconds(self, clock_mhz: float) -> float:
        return self.cycles / (clock_mhz * 1e6)


@dataclass
class Profile:
    """Latency and throughput of one frame on a processor configuration.

    Attributes
    ----------
    config : ProcessorConfig
    layers : list of LayerProfile
    total_cycles : int
        Processor cycles of all hardware segments of one frame.
    mac_busy_cycles : int
        Cycles in which the conv array did a MAC-mode step (hardware counter; 0 when unknown).
    source : str
        ``"hardware counters"`` or ``"estimate"``.
    frames : int
        Frames the figures are averaged over.
    """

    config: ProcessorConfig
    layers: list[LayerProfile]
    total_cycles: int
    mac_busy_cycles: int = 0
    source: str = "hardware counters"
    frames: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def clock_mhz(self) -> float:
        return self.config.clock_mhz

    @property
    def latency_s(self) -> float:
        """Processor latency of one frame in seconds at ``clock_mhz``."""
        return self.total_cycles / (self.clock_mhz * 1e6)

    @property
    def fps(self) -> float:
        """Frames per second when frames run back to back on the processor."""
        return 1.0 / self.latency_s if self.total_cycles else float("inf")

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers if layer.target == "hw")

    @property
    def mac_utilization(self) -> float:
        """Useful MACs / (cycles x MAC lanes): the fraction of the conv array's peak the network achieves."""
        if not self.total_cycles:
            return 0.0
        return self.total_macs / (self.total_cycles * self.config.macs_per_cycle)

    def __str__(self) -> str:
        c = self.config
        hdr = f"{'layer':<30} {'type':<8} {'runs on':<8} {'cycles':>12} {'latency (ms)':>13} {'MAC util':>9}"
        lines = [f"Profile ({self.source}) of the {c.dtype} processor [{c.hardware_hash}]"
                 + (f", average of {self.frames} frames" if self.frames > 1 else ""), hdr, "-" * len(hdr)]
        for layer in self.layers:
            where = "FPGA" if layer.target == "hw" else "host"
            util = layer.macs / (layer.cycles * c.macs_per_cycle) if layer.cycles and layer.macs else 0.0
            ms = f"{layer.seconds(self.clock_mhz) * 1e3:.4f}" if layer.target == "hw" else "-"
            cyc = f"{layer.cycles:,}" if layer.target == "hw" else "-"
            lines.append(f"{layer.name[:30]:<30} {layer.op:<8} {where:<8} {cyc:>12} {ms:>13} "
                         f"{(f'{util:.1%}' if util else ''):>9}")
        lines.append("-" * len(hdr))
        lines.append(f"{'Total':<48} {self.total_cycles:>12,} {self.latency_s * 1e3:>13.4f} "
                     f"{self.mac_utilization:>9.1%}")
        lines.append(f"Frames/s: {self.fps:,.1f}   Latency: {self.latency_s * 1e3:.3f} ms   "
                     f"MACs/frame: {self.total_macs:,}")
        lines.append(f"* The clock frequency of the processor is {self.clock_mhz:g} MHz "
                     f"({c.macs_per_cycle} MAC lanes, peak {c.peak_ops_per_s / 1e9:.1f} GOP/s).")
        lines.append(f"* Timing: {_timing_status(c)}.")
        for note in self.notes:
            lines.append(f"* {note}")
        return "\n".join(lines)


def _timing_status(config) -> str:
    from dlproc.boards.timing import timing_status

    return timing_status(config)


def add_layer_cycles(events: list[tuple[int, int]], into: dict[int, float]) -> None:
    """Add each layer's cycles from an event log of ``(layer id, cycle)`` MARKs: a layer lasts until the next MARK.

    The MARK recorded before END (``END_MARK``) only closes the last layer.
    """
    from dlproc.compiler.codegen import END_MARK

    for (lid, cyc), (_next, ncyc) in zip(events, events[1:], strict=False):
        if lid != END_MARK:
            into[lid] = into.get(lid, 0) + ncyc - cyc


def profile_from_runs(network: CompiledNetwork, runs_per_frame: list[list], source: str = "hardware counters"
                      ) -> Profile:
    """Build a profile from the driver's segment runs of one or more frames (averaged)."""
    frames = len(runs_per_frame)
    cycles: dict[int, float] = {}
    total = mac = 0.0
    for runs in runs_per_frame:
        for run in runs:
            total += run.cycles
            mac += run.mac_busy
            add_layer_cycles(run.events, cycles)
    layers = [LayerProfile(layer.name, layer.op, layer.target, int(round(cycles.get(layer.index, 0) / frames)),
                           layer.macs) for layer in network.layers]
    notes = []
    if any(layer.target == "host" for layer in network.layers):
        notes.append("Layers on the host are not included in the processor latency.")
    return Profile(network.config, layers, int(round(total / frames)), int(round(mac / frames)), source, frames, notes)
