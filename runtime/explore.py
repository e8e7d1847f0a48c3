"""Design-space exploration: the smallest processor that reaches a frame rate on every given network.

:func:`explore` sweeps the independent fields of :class:`~dlproc.processor.config.ProcessorConfig` that change the
speed or the size of the processor (conv lanes ``ic x oc``, fc threads, the input/weight/accumulator buffers, the
clock), keeps only legal configurations (the configuration's own validation, then the board's DSP/LUT/BRAM/FF budget
by the analytical resource model of :mod:`dlproc.boards.resources`), compiles each network for them and estimates the
frame's cycles with :mod:`dlproc.runtime.estimate`. It returns every evaluated point, the Pareto front (frames/s
against DSP, LUT and BRAM36) and the recommended configuration: the smallest by the chosen objective among those whose
slowest network reaches the target with a margin.

Fields that are not swept: ``axi_data_width`` is the widest legal width up to :data:`MAX_AXI_BITS` (the widest PS
HP port of a Zynq UltraScale+, see :mod:`dlproc.boards.zynqmp`; a wider master would be narrowed by the interconnect
and the estimate's one beat per cycle would not hold); the DDR window, the address width and the event log come from
the ``base`` configuration.

What the figures assume (also in :attr:`ExploreResult.assumptions`):

* the clock of :func:`supported_clocks`: the clocks the timing check passes when it has a recorded result for the
  configuration, otherwise the base preset's ``clock_mhz``, labelled "clock not checked";
* the estimate's ZCU102 memory model (:mod:`dlproc.boards.memory`, the same as the Verilator simulation's
  default): the PS DDR's bandwidth and latency in GB/s and ns, converted at the configuration's clock;
* resources from the analytical model fitted to Yosys syntheses (upper bounds of LUT/FF), not from synthesis
  (``synthesize=K`` synthesizes the K best).

Compilation is grouped: every point that shares the fields the compiler reads (:func:`compile_key`: all but
``clock_mhz``, ``fc_threads`` and ``event_log_depth``) is one task that compiles each network once and then estimates
every fc width and clock. The tasks run on Ray (:mod:`dlproc.runtime.distributed`).
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlproc.boards.resources import BoardCapacity, board_capacity, model_resources
from dlproc.processor.config import ConfigError, ProcessorConfig
from dlproc.runtime.distributed import TaskResult, run_tasks

__all__ = ["explore", "ExploreResult", "ExplorePoint", "supported_clocks", "compile_key", "DEFAULT_SPACE",
           "OBJECTIVES", "CLOCK_NOT_CHECKED", "pareto_front"]

#: Widest AXI master the sweep proposes: the PS HP ports of a Zynq UltraScale+ are at most 128 bits wide.
MAX_AXI_BITS = 128

#: The values swept by default (each combination is checked by ProcessorConfig's validation).
DEFAULT_SPACE: dict[str, tuple] = {
    "conv_ic_lanes": (4, 8, 16, 32),
    "conv_oc_lanes": (4, 8, 16, 32, 64, 128, 256),
    "fc_threads": (4, 16),
    "input_buffer_kib": (8, 32, 128),
    "weight_buffer_kib": (8, 32, 128, 512),
    "acc_buffer_entries": (512, 2048),
    "param_buffer_entries": (64,),
}
#: Largest ``conv_oc_lanes / conv_ic_lanes`` the default sweep considers (wider arrays idle on small layers).
MAX_OC_PER_IC = 16

OBJECTIVES = ("dsp", "lut", "bram", "power")
CLOCK_NOT_CHECKED = "clock not checked"
#: Clocks the sweep tries when the timing check has recorded an fmax for a configuration.
CANDIDATE_CLOCKS_MHZ = (100.0, 150.0, 200.0, 250.0, 300.0)
#: Fields the compiler does not read: configurations differing only in them share one compilation.
NOT_COMPILED_FIELDS = ("clock_mhz", "fc_threads", "event_log_depth")


def supported_clocks(config: ProcessorConfig) -> tuple[list[float], str]:
    """The clocks the explore may propose for a configuration, and a label saying where they come from.

    When :mod:`dlproc.boards.timing` is importable and has a recorded result (``timing_recorded.json``) for the
    configuration, the clocks of :data:`CANDIDATE_CLOCKS_MHZ` up to its estimated fmax; otherwise only the
    configuration's own ``clock_mhz`` (the base preset's), labelled :data:`CLOCK_NOT_CHECKED`.
    """
    import importlib

    try:  # through sys.modules, so a stand-in of the timing check can be put in its place
        timing = importlib.import_module("dlproc.boards.timing")
    except ImportError:
        timing = None
    recorded = getattr(timing, "RECORDED", None)
    if timing is not None and recorded is not None and Path(recorded).exists():
        try:
            entry = json.loads(Path(recorded).read_text()).get(timing.timing_key(config))
        except (ValueError, AttributeError):
            entry = None
        if entry and entry.get("model_version") == getattr(timing, "MODEL_VERSION", None):
            fmax = float(entry["fmax_mhz"])
            # the candidates the check supports; below the lowest, the fmax itself rounded down to 5 MHz
            clocks = [c for c in CANDIDATE_CLOCKS_MHZ if c <= fmax] or ([5.0 * (fmax // 5)] if fmax >= 5 else [])
            if clocks:
                return clocks, f"timing check: fmax {fmax:.0f} MHz (recorded {entry.get('date', '?')})"
    return [float(config.clock_mhz)], CLOCK_NOT_CHECKED


def compile_key(config: ProcessorConfig) -> str:
    """The fields the compiler reads, as a JSON key (configurations with equal keys compile to the same program)."""
    data = config.to_dict()
    for name in NOT_COMPILED_FIELDS:
        data.pop(name)
    return json.dumps(data, sort_keys=True)


def ddr_model_label(memory: str = "zcu102") -> str:
    """One line naming the memory model the frame rates assume (the estimate's, :mod:`dlproc.boards.memory`)."""
    from dlproc.boards.memory import MEMORY_MODELS

    model = MEMORY_MODELS[memory]
    return (f"memory: the estimate's {model.name} DDR model ({model.bandwidth_gbps:g} GB/s shared, "
            f"{model.read_latency_ns:g} ns read latency, one AXI beat per cycle per port) at the configuration's "
            "clock; a point at another clock rescales those cycles (its latency in cycles is not re-derived)")


# ---------------------------------------------------------------------------------------------------- points
@dataclass
class ExplorePoint:
    """One evaluated configuration.

    Attributes
    ----------
    config : ProcessorConfig
    fps : dict of str to float
        Estimated frames/s per network (processor only; host layers excluded) at ``config.clock_mhz``.
    cycles : dict of str to int
        Estimated cycles of one frame per network.
    resources : dict of str to float
        ``LUT``, ``FF``, ``DSP``, ``BRAM36`` from the analytical model.
    clock_source : str
        Where the clock comes from (:func:`supported_clocks`).
    measured_fps : dict of str to float
        Frames/s measured on the RTL (``verify``), per network.
    synthesized : dict of str to float
        Resources from Yosys (``synthesize``).
    """

    config: ProcessorConfig
    fps: dict[str, float]
    cycles: dict[str, int]
    resources: dict[str, float]
    clock_source: str = CLOCK_NOT_CHECKED
    measured_fps: dict[str, float] = field(default_factory=dict)
    synthesized: dict[str, float] = field(default_factory=dict)
    verify_error: str | None = None
    synthesis_error: str | None = None

    @property
    def min_fps(self) -> float:
        """Frames/s of the slowest network."""
        return min(self.fps.values())

    @property
    def power_index(self) -> float:
        """A relative dynamic-power index, not watts: clock (GHz) x (DSP + 2 BRAM36 + LUT/64 + FF/256).

        dlproc has no power model; the weights are assumptions that only rank configurations.
        """
        r = self.resources
        return self.config.clock_mhz / 1000 * (r["DSP"] + 2 * r["BRAM36"] + r["LUT"] / 64 + r["FF"] / 256)

    def objective(self, name: str) -> float:
        """The value minimised for an objective of :data:`OBJECTIVES`."""
        return {"dsp": self.resources["DSP"], "lut": self.resources["LUT"], "bram": self.resources["BRAM36"],
                "power": self.power_index}[name]

    def label(self) -> str:
        """Short name: lanes, fc, buffers, clock."""
        c = self.config
        return (f"{c.conv_ic_lanes}x{c.conv_oc_lanes} fc{c.fc_threads} in{c.input_buffer_kib}K "
                f"w{c.weight_buffer_kib}K acc{c.acc_buffer_entries} @{c.clock_mhz:g}MHz")

    def row(self) -> dict[str, Any]:
        """A flat dictionary (CSV row / JSON)."""
        c = self.config
        out: dict[str, Any] = {
            "conv_ic_lanes": c.conv_ic_lanes, "conv_oc_lanes": c.conv_oc_lanes, "fc_threads": c.fc_threads,
            "axi_data_width": c.axi_data_width, "input_buffer_kib": c.input_buffer_kib,
            "weight_buffer_kib": c.weight_buffer_kib, "acc_buffer_entries": c.acc_buffer_entries,
            "param_buffer_entries": c.param_buffer_entries, "clock_mhz": c.clock_mhz,
            "clock_source": self.clock_source, "min_fps": round(self.min_fps, 2),
        }
        for name, value in self.fps.items():
            out[f"fps[{name}]"] = round(value, 2)
        out.update({k: self.resources[k] for k in ("DSP", "LUT", "FF", "BRAM36")})
        out["power_index"] = round(self.power_index, 2)
        for name, value in self.measured_fps.items():
            out[f"measured_fps[{name}]"] = round(value, 2)
        for kind, value in self.synthesized.items():
            out[f"synth_{kind}"] = value
        return out


def pareto_front(points: Sequence[ExplorePoint], kinds: Sequence[str] = ("DSP", "LUT", "BRAM36")) -> list[int]:
    """Indices of the points no other point dominates (at least the frames/s of the slowest network with at most
    the resources of every kind, better in one)."""
    if not points:
        return []
    fps = np.array([p.min_fps for p in points])
    res = np.array([[p.resources[k] for k in kinds] for p in points], dtype=float)
    front = []
    for i in range(len(points)):
        no_worse = (fps >= fps[i]) & np.all(res <= res[i], axis=1)
        better = (fps > fps[i]) | np.any(res < res[i], axis=1)
        if not np.any(no_worse & better):
            front.append(i)
    return front


@dataclass
class ExploreResult:
    """What :func:`explore` found.

    Attributes
    ----------
    networks : list of str
    target_fps, margin : float
        The recommended configuration reaches ``target_fps * (1 + margin)`` on every network.
    board : BoardCapacity
    objective : str
    points : list of ExplorePoint
        Every legal configuration that fits the board and compiles, at every supported clock.
    front : list of ExplorePoint
        The Pareto front of :attr:`points` (frames/s of the slowest network against DSP, LUT, BRAM36).
    recommended : ExplorePoint or None
        The smallest point by the objective meeting the target with margin (``None``: nothing does).
    verified : list of ExplorePoint
        The points run on the RTL or synthesized (``verify`` / ``synthesize``), best first.
    rejected : dict of str to int
        Configurations never proposed: ``invalid`` (ProcessorConfig validation), ``over budget`` (board resources),
        ``does not compile`` (the compiler refused a network).
    failures : list of str
        Tasks that failed (exception, crashed worker, timeout), one line each; their points are missing.
    compilations : int
        Network compilations performed (each shared by every fc width and clock of its group).
    assumptions : list of str
        Clock, memory model and resource model behind the figures.
    """

    networks: list[str]
    target_fps: float
    margin: float
    board: BoardCapacity
    objective: str
    points: list[ExplorePoint]
    front: list[ExplorePoint]
    recommended: ExplorePoint | None
    verified: list[ExplorePoint] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    compilations: int = 0
    assumptions: list[str] = field(default_factory=list)

    def meets(self, point: ExplorePoint) -> bool:
        """Whether a point reaches the target with the margin on every network."""
        return point.min_fps >= self.target_fps * (1 + self.margin)

    def table(self, points: Sequence[ExplorePoint] | None = None) -> str:
        """A text table of the front (or the given points), the recommended one marked ``*``."""
        points = self.front if points is None else points
        nets = self.networks
        head = (f"{'':1} {'configuration':<42} {'DSP':>6} {'LUT':>8} {'BRAM36':>7} "
                + " ".join(f"{('fps ' + n)[:14]:>14}" for n in nets) + f" {'meets':>5}")
        lines = [head, "-" * len(head)]
        for p in sorted(points, key=lambda p: (p.resources["DSP"], p.resources["LUT"], -p.min_fps)):
            mark = "*" if p is self.recommended else ""
            lines.append(f"{mark:1} {p.label():<42} {p.resources['DSP']:>6,.0f} {p.resources['LUT']:>8,.0f} "
                         f"{p.resources['BRAM36']:>7g} " + " ".join(f"{p.fps[n]:>14,.1f}" for n in nets)
                         + f" {'yes' if self.meets(p) else 'no':>5}")
        return "\n".join(lines)

    def summary(self) -> str:
        """The answer in a few lines: target, what was swept, the recommendation and what it assumes."""
        def cap(kind: str) -> str:
            value = getattr(self.board, kind)
            return "unlimited" if value >= 1 << 40 else f"{value:,}"

        lines = [f"Target: {self.target_fps:g} frames/s (+{self.margin:.0%} margin) on {', '.join(self.networks)}; "
                 f"board {self.board.name} (DSP {cap('DSP')}, LUT {cap('LUT')}, BRAM36 {cap('BRAM36')}); "
                 f"objective: smallest {self.objective}.",
                 f"Evaluated {len(self.points)} points ({self.compilations} compilations); never proposed: "
                 + ", ".join(f"{n} {k}" for k, n in self.rejected.items()) + f"; front: {len(self.front)} points."]
        if self.failures:
            lines.append(f"{len(self.failures)} task(s) failed: " + "; ".join(self.failures[:3]))
        p = self.recommended
        if p is None:
            best = max(self.points, key=lambda q: q.min_fps, default=None)
            lines.append("No configuration reaches the target with the margin"
                         + (f" (fastest: {best.min_fps:,.1f} frames/s, {best.label()})." if best else "."))
        else:
            util = ", ".join(f"{k} {p.resources[k]:,.0f} ({p.resources[k] / getattr(self.board, k):.0%})"
                             for k in ("DSP", "LUT", "BRAM36"))
            lines.append(f"Recommended: {p.label()} [{p.config.hardware_hash}]: {util}; "
                         + ", ".join(f"{n} {p.fps[n]:,.1f} frames/s" for n in self.networks)
                         + f" at {p.config.clock_mhz:g} MHz ({p.clock_source}).")
        for v in self.verified:
            if v.measured_fps or v.verify_error:
                meas = ", ".join(f"{n} {v.measured_fps[n]:,.1f} (est. {v.fps[n]:,.1f})" for n in v.measured_fps)
                lines.append(f"RTL (Verilator) {v.label()}: " + (meas or f"failed: {v.verify_error}"))
            if v.synthesized or v.synthesis_error:
                syn = ", ".join(f"{k} {val:,.0f} (model {v.resources[k]:,.0f})" for k, val in v.synthesized.items())
                lines.append(f"Yosys {v.label()}: " + (syn or f"failed: {v.synthesis_error}"))
        lines += [f"Assumes: {a}" for a in self.assumptions]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "networks": self.networks, "target_fps": self.target_fps, "margin": self.margin,
            "board": dataclasses.asdict(self.board), "objective": self.objective, "assumptions": self.assumptions,
            "rejected": self.rejected, "failures": self.failures, "compilations": self.compilations,
            "recommended": self.recommended.row() if self.recommended else None,
            "recommended_config": self.recommended.config.to_dict() if self.recommended else None,
            "front": [p.row() for p in self.front], "verified": [p.row() for p in self.verified],
            "points": len(self.points),
        }

    def plot(self, path: str | Path) -> Path:
        """Draw frames/s (slowest network) against DSP and against LUT: all points, the front, the target line and
        the recommended point (PNG)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
        fps = [p.min_fps for p in self.points]
        for ax, kind in zip(axes, ("DSP", "LUT"), strict=True):
            ax.scatter([p.resources[kind] for p in self.points], fps, s=8, c="0.75", label="legal configurations")
            front = sorted(self.front, key=lambda p: p.resources[kind])
            ax.scatter([p.resources[kind] for p in front], [p.min_fps for p in front], s=18, c="tab:blue",
                       label="Pareto front (fps vs DSP, LUT, BRAM36)")
            ax.axhline(self.target_fps, color="tab:red", lw=1.2, label=f"target {self.target_fps:g} frames/s")
            ax.axhline(self.target_fps * (1 + self.margin), color="tab:red", lw=0.8, ls="--",
                       label=f"target + {self.margin:.0%} margin")
            ax.axvline(getattr(self.board, kind), color="0.3", lw=0.8, ls=":", label=f"{self.board.name} {kind}")
            if self.recommended is not None:
                r = self.recommended
                ax.scatter([r.resources[kind]], [r.min_fps], marker="*", s=220, c="tab:orange", edgecolors="k",
                           zorder=5, label=f"chosen: {r.label()}")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(f"{kind} (analytical model)")
            ax.grid(True, which="both", alpha=0.3)
        axes[0].set_ylabel("frames/s of the slowest network (estimate)")
        axes[0].legend(fontsize=7, loc="lower right")
        clocks = sorted({p.config.clock_mhz for p in self.points})
        fig.suptitle(f"{', '.join(self.networks)} on {self.board.name}: clocks {', '.join(f'{c:g}' for c in clocks)}"
                     f" MHz ({'; '.join(sorted({p.clock_source for p in self.points}))}); estimate's DDR model",
                     fontsize=9)
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def write(self, directory: str | Path) -> dict[str, Path]:
        """Write ``points.csv`` (every point), ``explore.json`` (summary and front), ``pareto.png`` and
        ``processor.json`` (the recommended configuration, for ``dlproc compile/build --processor``)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"csv": out / "points.csv", "json": out / "explore.json", "png": out / "pareto.png"}
        rows = [p.row() for p in self.points]
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with paths["csv"].open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        paths["json"].write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        self.plot(paths["png"])
        if self.recommended is not None:
            paths["processor"] = out / "processor.json"
            self.recommended.config.save(paths["processor"])
        return paths


# ---------------------------------------------------------------------------------------------------- the sweep
def _candidates(base: ProcessorConfig, space: dict[str, Sequence], max_oc_per_ic: int | None
                ) -> tuple[list[ProcessorConfig], int]:
    """Every valid combination of the swept fields (and how many were invalid)."""
    names = list(space)
    out, invalid = [], 0
    for values in itertools.product(*(space[n] for n in names)):
        fields = dict(zip(names, values, strict=True))
        ic = fields.get("conv_ic_lanes", base.conv_ic_lanes)
        oc = fields.get("conv_oc_lanes", base.conv_oc_lanes)
        if max_oc_per_ic and oc > ic * max_oc_per_ic:
            continue  # outside the sweep's shape limit (not an illegal configuration)
        element_bits = 8 if base.dtype == "int8" else 32
        fields.setdefault("axi_data_width", min(MAX_AXI_BITS, 512, max(32, ic * element_bits)))
        try:
            out.append(base.replace(**fields))
        except ConfigError:
            invalid += 1
    return out, invalid


def _fits(resources: dict[str, float], board: BoardCapacity) -> bool:
    return all(resources[k] <= getattr(board, k) for k in ("DSP", "LUT", "FF", "BRAM36"))


def _evaluate_group(item: tuple[dict, list[int]], shared: dict) -> dict[str, Any]:
    """Ray task: compile every network once for a compile group, estimate each fc width's cycles per frame."""
    from dlproc.compiler.errors import CompileError
    from dlproc.compiler.network import compile_graph
    from dlproc.runtime.estimate import estimate_performance

    fields, fc_widths = item
    config = ProcessorConfig.from_dict(fields)
    cycles: dict[int, dict[str, int]] = {fc: {} for fc in fc_widths}
    refused: dict[str, str] = {}
    compilations = 0
    for name, graph in shared["graphs"]:
        try:
            net = compile_graph(copy.deepcopy(graph), config)
            compilations += 1
        except CompileError as exc:
            refused[name] = str(exc).splitlines()[0]
            continue
        for fc in fc_widths:
            variant = dataclasses.replace(net, config=config.replace(fc_threads=fc))
            cycles[fc][name] = int(estimate_performance(variant, ddr=shared.get("ddr")).total_cycles)
    return {"cycles": cycles, "refused": refused, "compilations": compilations}


def _first_frame(graph: Any, seed: int = 0) -> np.ndarray:
    shape = tuple(graph.tensors[graph.inputs[0]].onnx_shape[1:])
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _verify_point(item: dict, shared: dict) -> dict[str, float]:
    """Ray task: compile each network for the configuration and run its first frame on the RTL (Verilator)."""
    from dlproc.compiler.network import compile_graph
    from dlproc.runtime.driver import Driver
    from dlproc.runtime.workflow import open_device

    config = ProcessorConfig.from_dict(item)
    measured = {}
    device = open_device(config, "sim")
    try:
        driver = Driver(device, timeout_s=shared.get("timeout_s") or 600.0)
        for name, graph in shared["graphs"]:
            net = compile_graph(copy.deepcopy(graph), config)
            driver.load(net)
            _, runs, _ = driver.infer(_first_frame(graph))
            measured[name] = int(sum(run.cycles for run in runs))
    finally:
        device.close()
    return measured


def _synthesize_point(item: dict, shared: dict) -> dict[str, float]:
    """Ray task: Yosys synthesis of the configuration for the board's family."""
    from dlproc.boards.resources import synthesize_resources

    report = synthesize_resources(ProcessorConfig.from_dict(item), shared["synth_board"],
                                  timeout_s=shared.get("timeout_s"))
    return {k: report.total.as_dict()[k] for k in ("DSP", "LUT", "FF", "BRAM36", "URAM")}


def _prepare(networks: Iterable[Any], base: ProcessorConfig, calibration: Any) -> list[tuple[str, Any]]:
    """(name, graph to compile) per network: int8 networks are quantized with ``calibration`` (random data by
    default: the cycles do not depend on the values)."""
    from dlproc.runtime.workflow import Workflow

    graphs = []
    for i, network in enumerate(networks):
        wf = Workflow(network, processor=base)
        name = wf.float_graph.name or f"net{i}"
        if any(name == n for n, _ in graphs):
            name = f"{name}_{i}"
        if base.dtype == "int8":
            if wf.imported_scales and not wf._missing_scales():
                wf.compile()
            else:
                samples = calibration
                if samples is None:
                    samples = np.random.default_rng(0).random((4, *wf.input_shape), dtype=np.float32)
                wf.calibrate(samples, progress=False)
            graphs.append((name, wf.graph))
        else:
            graphs.append((name, wf.float_graph))
    return graphs


def explore(networks: Sequence[Any] | Any, *, fps: float, board: str = "zcu102", dtype: str = "int8",
            objective: str = "dsp", margin: float = 0.10, space: dict[str, Sequence] | None = None,
            base: ProcessorConfig | str | None = None, calibration: Any = None, workers: int | None = None,
            address: str | None = None, verify: int = 0, synthesize: int = 0, progress: bool = False,
            timeout_s: float | None = None, max_oc_per_ic: int | None = MAX_OC_PER_IC) -> ExploreResult:
    """Search the processor configurations for the smallest that reaches ``fps`` on every network.

    Parameters
    ----------
    networks : ONNX path, ModelProto, or a sequence of them
    fps : float
        Target frames/s (every network, processor latency of one frame).
    board : str
        ``"zcu102"``, ``"zcu104"``, ``"kv260"`` (Kria K26) or ``"custom:dsp=N,lut=N,bram=N"``.
    dtype : {"int8", "fp32"}
    objective : {"dsp", "lut", "bram", "power"}
        What "smallest" means (``power``: a relative index, see :attr:`ExplorePoint.power_index`).
    margin : float
        The recommended point reaches ``fps * (1 + margin)``.
    space : dict, optional
        Values per swept field (default :data:`DEFAULT_SPACE`); fields not named come from ``base``.
    base : ProcessorConfig or str, optional
        Values of the fields not swept (default: the ``zcu102_<dtype>`` preset, also the clock when the timing
        check has no recorded result).
    calibration : array_like, optional
        Calibration inputs for int8 (default: random; the cycle counts do not depend on the values).
    workers, address : optional
        Ray: local CPUs, or a cluster address (default ``RAY_ADDRESS``); ``workers=0`` runs in this process.
    verify : int
        Run the ``verify`` best points of the front meeting the target on the RTL (a Verilator build each, then the
        first frame of every network: random pixels, the cycles do not depend on them).
    synthesize : int
        Synthesize the ``synthesize`` best points of the front meeting the target with Yosys.
    progress : bool
        A progress bar with the points done and the best so far.
    timeout_s : float, optional
        Longest wait for the sweep's tasks (and each verification or synthesis).
    max_oc_per_ic : int, optional
        Skip arrays with ``conv_oc_lanes > max_oc_per_ic * conv_ic_lanes``.

    Returns
    -------
    ExploreResult
        ``print(result.summary())``, ``result.table()``, ``result.write(directory)``.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; objectives are {', '.join(OBJECTIVES)}")
    if not (isinstance(fps, (int, float)) and fps > 0):
        raise ValueError(f"fps must be a positive number of frames/s, not {fps!r}")
    if dtype not in ("int8", "fp32"):
        raise ValueError(f"unknown dtype {dtype!r}; dtypes are int8, fp32")
    capacity = board_capacity(board)
    base_config = ProcessorConfig.load(base) if base is not None else ProcessorConfig.preset(f"zcu102_{dtype}")
    if base_config.dtype != dtype:
        raise ValueError(f"the base configuration is {base_config.dtype}, not {dtype}")
    space = dict(DEFAULT_SPACE if space is None else space)
    known = {f.name for f in dataclasses.fields(ProcessorConfig)}
    unknown = sorted(set(space) - known)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} in the search space; fields are {sorted(known)}")
    if isinstance(networks, (str, Path)) or not isinstance(networks, Sequence):
        networks = [networks]
    graphs = _prepare(networks, base_config, calibration)
    names = [n for n, _ in graphs]

    configs, invalid = _candidates(base_config, space, max_oc_per_ic)
    rejected = {"invalid": invalid, "over budget": 0, "does not compile": 0}
    synth_board = board if board in ("zcu102", "zcu104", "kv260") else "zcu102"
    resources: dict[str, dict[str, float]] = {}
    groups: dict[str, tuple[dict, list[int]]] = {}
    for cfg in configs:
        res = model_resources(cfg, synth_board).total.as_dict()
        if not _fits(res, capacity):
            rejected["over budget"] += 1
            continue
        resources[cfg.hardware_hash] = res
        key = compile_key(cfg)
        if key not in groups:
            groups[key] = (cfg.to_dict(), [])
        groups[key][1].append(cfg.fc_threads)

    # clocks per configuration (the timing check's, or the base clock "not checked")
    clocks: dict[tuple[str, int], tuple[list[float], str]] = {}
    for key, (fields, fcs) in groups.items():
        for fc in fcs:
            clocks[(key, fc)] = supported_clocks(ProcessorConfig.from_dict({**fields, "fc_threads": fc}))
    total_points = sum(len(c[0]) for c in clocks.values())

    points: list[ExplorePoint] = []
    failures: list[str] = []
    compilations = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total_points, unit="point", desc="explore")
    best: list[ExplorePoint] = []
    group_keys = list(groups)
    target = fps * (1 + margin)

    def collect(res: TaskResult) -> None:
        nonlocal compilations
        key = group_keys[res.index]
        fields, fcs = groups[key]
        n_points = sum(len(clocks[(key, fc)][0]) for fc in fcs)
        if not res.ok:
            cfg = ProcessorConfig.from_dict(fields)
            failures.append(f"{cfg.conv_ic_lanes}x{cfg.conv_oc_lanes} in{cfg.input_buffer_kib}K "
                            f"w{cfg.weight_buffer_kib}K acc{cfg.acc_buffer_entries}: {res.error}")
        else:
            compilations += res.value["compilations"]
            if res.value["refused"]:
                rejected["does not compile"] += len(fcs)
            else:
                for fc in fcs:
                    cyc = res.value["cycles"][fc]
                    clock_list, source = clocks[(key, fc)]
                    for mhz in clock_list:
                        cfg = ProcessorConfig.from_dict({**fields, "fc_threads": fc, "clock_mhz": mhz})
                        p = ExplorePoint(cfg, {n: mhz * 1e6 / cyc[n] for n in names}, dict(cyc),
                                         resources[ProcessorConfig.from_dict({**fields, "fc_threads": fc})
                                                   .hardware_hash], source)
                        points.append(p)
                        if p.min_fps >= target and (not best or _rank(p, objective, capacity)
                                                    < _rank(best[0], objective, capacity)):
                            best[:] = [p]
        if bar is not None:
            bar.update(n_points)
            if best:
                bar.set_postfix_str(f"best {best[0].label()} {objective} {best[0].objective(objective):,.0f}")

    items = [groups[k] for k in group_keys]
    run_tasks(_evaluate_group, items, shared={"graphs": graphs, "ddr": "zcu102"}, workers=workers,
              address=address, timeout_s=timeout_s, on_result=collect)
    if bar is not None:
        bar.close()

    front_idx = pareto_front(points)
    front = [points[i] for i in front_idx]
    meeting = sorted((p for p in points if p.min_fps >= target), key=lambda p: _rank(p, objective, capacity))
    recommended = meeting[0] if meeting else None
    clock_sources = sorted({p.clock_source for p in points})
    assumptions = [
        "clock: " + ("; ".join(clock_sources) if clock_sources else "none evaluated")
        + (f" (the base configuration's {base_config.clock_mhz:g} MHz)"
           if CLOCK_NOT_CHECKED in clock_sources else ""),
        ddr_model_label(),
        "resources: analytical model of dlproc.boards.resources fitted to Yosys syntheses (LUT/FF upper bounds); "
        f"AXI master {MAX_AXI_BITS} bits at most (PS HP port)"
        + ("; fp32 LUT/FF scaled from one synthesis (rough, see FP32_FIT)" if dtype == "fp32" else ""),
    ]
    result = ExploreResult(names, float(fps), margin, capacity, objective, points, front, recommended,
                           rejected=rejected, failures=failures, compilations=compilations, assumptions=assumptions)

    # the K best are taken from the front (a configuration with the same lanes and larger buffers but no gain is
    # not a second candidate)
    on_front = {id(p) for p in front}
    shortlist = [p for p in meeting if id(p) in on_front][:max(verify, synthesize)]
    result.verified = list(shortlist)
    if verify and shortlist:
        outcomes = run_tasks(_verify_point, [p.config.to_dict() for p in shortlist[:verify]],
                             shared={"graphs": graphs, "timeout_s": timeout_s}, workers=workers, address=address,
                             timeout_s=timeout_s)
        for p, out in zip(shortlist, outcomes, strict=False):
            if out.ok:
                p.measured_fps = {n: p.config.clock_mhz * 1e6 / out.value[n] for n in names}
            else:
                p.verify_error = out.error
    if synthesize and shortlist:
        outcomes = run_tasks(_synthesize_point, [p.config.to_dict() for p in shortlist[:synthesize]],
                             shared={"synth_board": synth_board, "timeout_s": timeout_s}, workers=workers,
                             address=address, timeout_s=timeout_s)
        for p, out in zip(shortlist, outcomes, strict=False):
            if out.ok:
                p.synthesized = out.value
            else:
                p.synthesis_error = out.error
    return result


def _rank(p: ExplorePoint, objective: str, board: BoardCapacity) -> tuple[float, float, float]:
    """Sort key of "smaller": the objective, then the summed DSP/LUT/BRAM36 utilization, then faster first."""
    util = sum(p.resources[k] / max(1, getattr(board, k)) for k in ("DSP", "LUT", "BRAM36"))
    return (p.objective(objective), util, -p.min_fps)
