"""Performance profiles: per-layer cycles, latency, frames/s and MAC utilization.

The same :class:`Profile` type comes from the hardware's own counters (``predict(..., profile=True)`` on the
"sim" and "fpga" targets) and from the performance estimate, so the two can be compared line by line.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlproc.compiler.network import CompiledNetwork
from dlproc.processor.config import ProcessorConfig

__all__ = ["LayerProfile", "Profile", "profile_from_runs", "add_layer_cycles", "PROFILE_SCHEMA"]

#: Name and version of the JSON layout :meth:`Profile.to_json` writes (documented in ``docs/profile.md``).
PROFILE_SCHEMA = "dlproc.profile/1"

#: Columns of :meth:`Profile.to_csv`, in order (documented in ``docs/profile.md``).
CSV_COLUMNS = ("index", "layer", "op", "runs_on", "cycles", "latency_ms", "host_ms", "macs", "mac_utilization",
               "ddr_bytes", "ddr_gbps", "intensity", "roof", "compute_busy_cycles", "dma_busy_cycles", "fps",
               "network", "source", "target", "frames", "clock_mhz", "processor", "dtype", "macs_per_cycle")


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
    host_s : float or None
        Host layers: wall-clock seconds per frame measured around the layer on the host (``None`` when not
        measured, as in the estimate).
    ddr_bytes : int
        Bytes the layer moves between DDR and the processor (its LOAD, STORE and FC instructions).
    compute_busy, dma_busy : int or None
        Cycles the compute engine (GEMM, POST) and the DMA engine (LOAD, STORE, FC) were busy with the layer's
        instructions; they overlap when the compiler pipelines tiles. Only the estimate has them (``None`` from the
        hardware, which has no per-engine counters yet).
    """

    name: str
    op: str
    target: str
    cycles: int
    macs: int = 0
    host_s: float | None = None
    ddr_bytes: int = 0
    compute_busy: int | None = None
    dma_busy: int | None = None

    def seconds(self, clock_mhz: float) -> float:
        return self.cycles / (clock_mhz * 1e6)

    def mac_utilization(self, config: ProcessorConfig) -> float:
        """Useful MACs / (cycles x MAC lanes) of this layer (0 without cycles or MACs)."""
        return self.macs / (self.cycles * config.macs_per_cycle) if self.cycles and self.macs else 0.0

    def ddr_gbps(self, clock_mhz: float) -> float:
        """Achieved DDR traffic in GB/s (bytes moved / layer time; 0 without cycles)."""
        return self.ddr_bytes / self.seconds(clock_mhz) / 1e9 if self.cycles else 0.0

    @property
    def intensity(self) -> float:
        """Arithmetic intensity: MACs per byte moved between DDR and the processor (0 when it moves nothing)."""
        return self.macs / self.ddr_bytes if self.ddr_bytes else 0.0

    def roof(self, config: ProcessorConfig) -> str:
        """The roof above the layer on the roofline at its arithmetic intensity: ``"compute"`` (at or right of the
        ridge point ``macs_per_cycle / ddr_peak_bytes_per_cycle``) or ``"DDR"``; ``""`` for host layers.

        This is where the layer *could* be limited given its MACs per byte, not a measurement of what it waited on
        (that needs per-engine busy counters in the hardware)."""
        if self.target != "hw":
            return ""
        ridge = config.macs_per_cycle / config.ddr_peak_bytes_per_cycle
        return "compute" if self.ddr_bytes == 0 or self.intensity >= ridge else "DDR"


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
    notes : list of str
        Printed under the table.
    target : str
        Where the figures come from: ``"sim"`` or ``"fpga"`` (hardware counters), ``"estimate"``.
    network : str
        Name of the compiled network.
    timeline : list of dict
        The first frame in execution order, for :meth:`save_trace`: ``{"kind": "hw", "cycles": int, "events":
        [[layer, cycle], ...]}`` per hardware segment (its event log) and ``{"kind": "host", "layer": int,
        "seconds": float}`` per host layer.
    """

    config: ProcessorConfig
    layers: list[LayerProfile]
    total_cycles: int
    mac_busy_cycles: int = 0
    source: str = "hardware counters"
    frames: int = 1
    notes: list[str] = field(default_factory=list)
    target: str = ""
    network: str = ""
    timeline: list[dict] = field(default_factory=list)

    @property
    def clock_mhz(self) -> float:
        return self.config.clock_mhz

    @property
    def latency_s(self) -> float:
        """Processor latency of one frame in seconds at ``clock_mhz``."""
        return self.total_cycles / (self.clock_mhz * 1e6)

    @property
    def host_s(self) -> float | None:
        """Measured host time of one frame (sum of the host layers), ``None`` if host layers were not timed."""
        host = [layer for layer in self.layers if layer.target == "host"]
        if not host:
            return 0.0
        if any(layer.host_s is None for layer in host):
            return None
        return sum(layer.host_s for layer in host)

    @property
    def frame_s(self) -> float:
        """Time of one frame end to end: processor latency plus the measured host layers (0 when unknown)."""
        return self.latency_s + (self.host_s or 0.0)

    @property
    def fps(self) -> float | None:
        """Frames per second when frames run one after the other, host layers included where they were measured.

        ``None`` when there is nothing to time: every layer runs on the host and the host was not timed.
        """
        return 1.0 / self.frame_s if self.frame_s > 0 else None

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
        busy = any(layer.compute_busy is not None for layer in self.layers)
        hdr = (f"{'layer':<30} {'type':<8} {'runs on':<8} {'cycles':>12} {'latency (ms)':>13} {'MAC util':>9} "
               f"{'DDR GB/s':>9} {'roof':<7}" + (f" {'busy: compute / DMA':>19}" if busy else ""))
        lines = [f"Profile ({self.source}) of the {c.dtype} processor [{c.hardware_hash}]"
                 + (f", average of {self.frames} frames" if self.frames > 1 else ""), hdr, "-" * len(hdr)]
        for layer in self.layers:
            where = "FPGA" if layer.target == "hw" else "host"
            util = layer.mac_utilization(c)
            if layer.target == "hw":
                ms, cyc = f"{layer.seconds(self.clock_mhz) * 1e3:.4f}", f"{layer.cycles:,}"
            else:
                ms, cyc = (f"{layer.host_s * 1e3:.4f}" if layer.host_s is not None else "-"), "-"
            gbps = f"{layer.ddr_gbps(self.clock_mhz):.2f}" if layer.target == "hw" and layer.cycles else ""
            share = ""
            if busy and layer.target == "hw" and layer.cycles and layer.compute_busy is not None:
                share = f"{layer.compute_busy / layer.cycles:.0%} / {layer.dma_busy / layer.cycles:.0%}"
            row = (f"{layer.name[:30]:<30} {layer.op[:8]:<8} {where:<8} {cyc:>12} {ms:>13} "
                   f"{(f'{util:.1%}' if util else ''):>9} {gbps:>9} {layer.roof(c):<7}"
                   + (f" {share:>19}" if busy else ""))
            lines.append(row.rstrip())
        lines.append("-" * len(hdr))
        host_s = self.host_s
        if host_s:
            lines.append(f"{'Processor':<48} {self.total_cycles:>12,} {self.latency_s * 1e3:>13.4f} "
                         f"{self.mac_utilization:>9.1%}")
            lines.append(f"{'Host layers (measured)':<48} {'-':>12} {host_s * 1e3:>13.4f}")
            lines.append(f"{'Total':<48} {'':>12} {self.frame_s * 1e3:>13.4f}")
        else:
            lines.append(f"{'Total':<48} {self.total_cycles:>12,} {self.latency_s * 1e3:>13.4f} "
                         f"{self.mac_utilization:>9.1%}")
        fps = self.fps
        if fps is None:
            lines.append("Frames/s: n/a (every layer runs on the host and the host was not timed: measure with "
                         "predict(..., profile=True) on target 'sim' or 'fpga')")
        else:
            lines.append(f"Frames/s: {fps:,.1f}   Latency: {self.frame_s * 1e3:.3f} ms   "
                         f"MACs/frame: {self.total_macs:,}")
        lines.append(f"* The clock frequency of the processor is {self.clock_mhz:g} MHz "
                     f"({c.macs_per_cycle} MAC lanes, peak {c.peak_ops_per_s / 1e9:.1f} GOP/s).")
        if any(layer.target == "hw" for layer in self.layers):
            lines.append(f"* roof: the roofline's limit at the layer's MACs per DDR byte (ridge point "
                         f"{c.macs_per_cycle / c.ddr_peak_bytes_per_cycle:g} MAC/byte, DDR peak "
                         f"{c.ddr_peak_bytes_per_cycle * self.clock_mhz * 1e6 / 1e9:.1f} GB/s); a layer far below "
                         "both roofs is limited by neither (lanes left idle, latency).")
        if busy:
            lines.append("* busy: share of the layer's cycles the compute engine (GEMM, POST) and the DMA engine "
                         "(LOAD, STORE, FC) were busy; they overlap when tiles are pipelined.")
        lines.append(f"* Timing: {_timing_status(c)}.")
        for note in self.notes:
            lines.append(f"* {note}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ machine-readable results
    def to_dict(self) -> dict[str, Any]:
        """Every number of the table plus the configuration, clock, target and source (layout ``PROFILE_SCHEMA``,
        documented in ``docs/profile.md``)."""
        c = self.config
        layers = []
        for i, layer in enumerate(self.layers):
            hw = layer.target == "hw"
            layers.append({
                "index": i, "name": layer.name, "op": layer.op, "runs_on": "fpga" if hw else "host",
                "cycles": layer.cycles if hw else None,
                "latency_ms": layer.seconds(self.clock_mhz) * 1e3 if hw else None,
                "host_ms": layer.host_s * 1e3 if not hw and layer.host_s is not None else None,
                "macs": layer.macs, "mac_utilization": layer.mac_utilization(c) if hw else None,
                "ddr_bytes": layer.ddr_bytes if hw else None,
                "ddr_gbps": layer.ddr_gbps(self.clock_mhz) if hw else None,
                "intensity": layer.intensity if hw else None, "roof": layer.roof(c) or None,
                "compute_busy_cycles": layer.compute_busy, "dma_busy_cycles": layer.dma_busy,
            })
        host_s = self.host_s
        return {
            "schema": PROFILE_SCHEMA, "network": self.network, "source": self.source, "target": self.target,
            "frames": self.frames, "clock_mhz": self.clock_mhz, "processor": c.hardware_hash, "dtype": c.dtype,
            "macs_per_cycle": c.macs_per_cycle, "peak_ops_per_s": c.peak_ops_per_s,
            "ddr_peak_bytes_per_s": c.ddr_peak_bytes_per_cycle * self.clock_mhz * 1e6, "config": c.to_dict(),
            "total": {
                "cycles": self.total_cycles, "latency_ms": self.latency_s * 1e3,
                "host_ms": host_s * 1e3 if host_s is not None else None, "frame_ms": self.frame_s * 1e3,
                "fps": self.fps, "macs": self.total_macs, "mac_utilization": self.mac_utilization,
                "mac_busy_cycles": self.mac_busy_cycles,
            },
            "layers": layers, "notes": list(self.notes),
        }

    def to_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON (``null`` for figures that do not apply); returns the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    def to_csv(self, path: str | Path) -> Path:
        """Write one row per layer and a final ``Total`` row (columns :data:`CSV_COLUMNS`); returns the path.

        Every row repeats the network, source, target, frames, clock and processor so that each row stands alone;
        figures that do not apply are empty.
        """
        d = self.to_dict()
        common = {k: d[k] for k in ("network", "source", "target", "frames", "clock_mhz", "processor", "dtype",
                                    "macs_per_cycle")}
        rows = [{**row, "layer": row["name"], **common} for row in d["layers"]]
        t = d["total"]
        rows.append({"index": "", "layer": "Total", "op": "", "runs_on": "", "cycles": t["cycles"],
                     "latency_ms": t["frame_ms"], "host_ms": t["host_ms"], "macs": t["macs"],
                     "mac_utilization": t["mac_utilization"], "fps": t["fps"], **common})
        path = Path(path)
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_COLUMNS})
        return path

    def roofline_points(self) -> list[tuple[str, float, float]]:
        """``(layer, MACs per DDR byte, achieved GMAC/s)`` of the processor layers that do MACs and move data."""
        return [(layer.name, layer.intensity, layer.macs / layer.seconds(self.clock_mhz) / 1e9)
                for layer in self.layers
                if layer.target == "hw" and layer.macs and layer.ddr_bytes and layer.cycles]

    def plot_roofline(self, path: str | Path) -> Path:
        """Draw each layer on the configuration's roofline as a PNG (needs matplotlib).

        x: arithmetic intensity (MACs per byte moved between DDR and the processor, from the program), y: achieved
        GMAC/s (MACs / the layer's time); the roofs are the MAC array's peak (``macs_per_cycle x clock``) and the DDR
        port's peak (``ddr_peak_bytes_per_cycle x clock`` x intensity). Layers without MACs (pooling, add) are left
        out: they have no place on a MAC roofline.
        """
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        c = self.config
        peak = c.macs_per_cycle * self.clock_mhz * 1e6 / 1e9  # GMAC/s
        bw = c.ddr_peak_bytes_per_cycle * self.clock_mhz * 1e6 / 1e9  # GB/s
        points = self.roofline_points()
        ridge = peak / bw
        xs = [p[1] for p in points] + [ridge]
        lo, hi = min(xs) / 4, max(xs) * 4
        fig, ax = plt.subplots(figsize=(8, 5.5))
        grid = [lo, ridge, hi]
        ax.plot(grid, [min(peak, x * bw) for x in grid], color="black", lw=1.5,
                label=f"roofs: {peak:,.1f} GMAC/s, DDR {bw:.1f} GB/s")
        for i, (name, x, y) in enumerate(points):
            ax.scatter([x], [y], s=30, zorder=3, color=f"C{i % 10}")
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (MACs per DDR byte)")
        ax.set_ylabel("achieved GMAC/s")
        ax.set_title(f"{self.network or 'network'} on [{c.hardware_hash}] at {self.clock_mhz:g} MHz ({self.source})",
                     fontsize=9)
        ax.grid(True, which="both", lw=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path

    def trace_events(self) -> list[dict[str, Any]]:
        """The first frame as Chrome trace events (``ph: "X"`` spans in microseconds): one track for the processor's
        layers (from its event log, or the estimate's replay of it), one for the host layers, and in the estimate
        one per engine (DMA, compute) with the spans each was busy."""
        from dlproc.processor.isa import END_MARK

        us_per_cycle = 1.0 / self.clock_mhz
        pid = 1
        events: list[dict[str, Any]] = [
            {"ph": "M", "pid": pid, "name": "process_name", "args": {"name": f"{self.network or 'network'} "
                                                                     f"[{self.config.hardware_hash}]"}},
            {"ph": "M", "pid": pid, "tid": 1, "name": "thread_name", "args": {"name": "processor: layers"}},
            {"ph": "M", "pid": pid, "tid": 2, "name": "thread_name", "args": {"name": "host layers"}},
        ]
        engine_tid = {"dma": 3, "compute": 4}
        if any("engines" in entry for entry in self.timeline):
            events += [{"ph": "M", "pid": pid, "tid": tid, "name": "thread_name",
                        "args": {"name": f"{engine} engine ({self.source})"}} for engine, tid in engine_tid.items()]
        t0 = 0.0
        for entry in self.timeline:
            if entry["kind"] == "hw":
                log = entry["events"]
                for (lid, cyc), (_nid, ncyc) in zip(log, log[1:], strict=False):
                    if lid == END_MARK:
                        continue
                    layer = self.layers[lid]
                    events.append({"ph": "X", "pid": pid, "tid": 1, "name": layer.name, "cat": layer.op,
                                   "ts": t0 + cyc * us_per_cycle, "dur": (ncyc - cyc) * us_per_cycle,
                                   "args": {"layer": lid, "cycles": ncyc - cyc, "macs": layer.macs}})
                for engine, lid, start, end in entry.get("engines", []):
                    name = self.layers[lid].name if 0 <= lid < len(self.layers) else "start"
                    events.append({"ph": "X", "pid": pid, "tid": engine_tid[engine], "name": name, "cat": engine,
                                   "ts": t0 + start * us_per_cycle, "dur": (end - start) * us_per_cycle,
                                   "args": {"layer": lid, "cycles": end - start}})
                t0 += entry["cycles"] * us_per_cycle
            else:
                layer = self.layers[entry["layer"]]
                dur = entry["seconds"] * 1e6
                events.append({"ph": "X", "pid": pid, "tid": 2, "name": layer.name, "cat": layer.op, "ts": t0,
                               "dur": dur, "args": {"layer": entry["layer"], "measured_on": "host"}})
                t0 += dur
        return events

    def save_trace(self, path: str | Path) -> Path:
        """Write a Chrome/Perfetto trace (JSON trace-event format; open it in ui.perfetto.dev or chrome://tracing)
        of the first frame: per-layer spans on a processor track and a host track. Returns the path."""
        path = Path(path)
        path.write_text(json.dumps({"traceEvents": self.trace_events(), "displayTimeUnit": "ns",
                                    "otherData": {"schema": PROFILE_SCHEMA, "source": self.source,
                                                  "target": self.target, "clock_mhz": self.clock_mhz}}))
        return path


def _timing_status(config) -> str:
    from dlproc.boards.timing import timing_status

    return timing_status(config)


def add_layer_cycles(events: list[tuple[int, int]], into: dict[int, float]) -> None:
    """Add each layer's cycles from an event log of ``(layer id, cycle)`` MARKs: a layer lasts until the next MARK.

    The MARK recorded before END (``END_MARK``) only closes the last layer.
    """
    from dlproc.processor.isa import END_MARK

    for (lid, cyc), (_next, ncyc) in zip(events, events[1:], strict=False):
        if lid != END_MARK:
            into[lid] = into.get(lid, 0) + ncyc - cyc


def profile_from_runs(network: CompiledNetwork, runs_per_frame: list[list], source: str = "hardware counters", *,
                      host_seconds: list[dict[int, float]] | None = None, target: str = "") -> Profile:
    """Build a profile from the driver's segment runs of one or more frames (averaged).

    Parameters
    ----------
    network : CompiledNetwork
    runs_per_frame : list of list of SegmentRun
        Per frame, the hardware segments' counters in execution order.
    source : str
    host_seconds : list of dict of int to float, optional
        Per frame, the measured seconds of each host layer (by layer index), as ``Driver.host_seconds``.
    target : str
        ``"sim"`` or ``"fpga"``.
    """
    frames = len(runs_per_frame)
    cycles: dict[int, float] = {}
    total = mac = 0.0
    for runs in runs_per_frame:
        for run in runs:
            total += run.cycles
            mac += run.mac_busy
            add_layer_cycles(run.events, cycles)
    host: dict[int, float] = {}
    for per_frame in host_seconds or []:
        for idx, sec in per_frame.items():
            host[idx] = host.get(idx, 0.0) + sec / frames
    from dlproc.runtime.estimate import layer_ddr_bytes

    ddr = layer_ddr_bytes(network)
    layers = [LayerProfile(layer.name, layer.op, layer.target, int(round(cycles.get(layer.index, 0) / frames)),
                           layer.macs, host.get(layer.index) if layer.target == "host" else None,
                           ddr.get(layer.index, 0))
              for layer in network.layers]
    timeline: list[dict] = []
    if runs_per_frame:
        hw_runs = iter(runs_per_frame[0])
        first_host = (host_seconds or [{}])[0]
        for seg in network.segments:
            if seg.kind == "hw":
                run = next(hw_runs)
                timeline.append({"kind": "hw", "cycles": run.cycles, "events": [list(e) for e in run.events]})
            elif seg.layer in first_host:
                timeline.append({"kind": "host", "layer": seg.layer, "seconds": first_host[seg.layer]})
    notes = []
    if any(layer.target == "host" for layer in network.layers):
        if host_seconds:
            notes.append("Host layers: wall-clock time measured on this machine (onnx.reference), included in "
                         "Frames/s.")
        else:
            notes.append("Layers on the host are not included in the processor latency.")
    return Profile(network.config, layers, int(round(total / frames)), int(round(mac / frames)), source, frames, notes,
                   target=target, network=network.name, timeline=timeline)
