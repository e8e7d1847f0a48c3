"""What int8 quantization did to every tensor: ranges, scales, clipping, histograms.

:class:`QuantizationReport` describes each quantized tensor of a quantized graph:

* **activations** (the network input, every processor layer's output, host outputs the processor reads): the range
  the calibration observed, the chosen scale, the range int8 represents with it (``[-128 s, 127 s]``), and the
  fractions of the calibration values that are clipped (``|x| > 127.5 s``) or fall below the smallest step
  (``0 < |x| < s / 2``, they become 0). These are *estimated* from the calibration's
  :class:`~.calibrate.Log2Histogram` (8 bins per octave, values spread evenly in ``log2`` inside a bin); a range
  that covers the largest value seen clips exactly nothing.
* **weights** (per layer) and **biases**: the same figures, computed *exactly* from the values with each output
  channel's own scale (weights clamp at ``+-127`` steps, biases are int32 with scale ``s_in * s_w[c]``).

``print(report)`` shows one table row per tensor, grouped by layer. :meth:`QuantizationReport.plot_histograms` draws
the histograms in the style of MATLAB's Deep Network Quantizer: one PNG per processor layer, one panel per tensor,
``log2``-binned magnitudes with a logarithmic count axis, bins the int8 type cannot represent (clipped, or below the
smallest step) in grey and representable bins in blue, darker for more values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .calibrate import Log2Histogram
from .graph import Graph, Layer

__all__ = ["QuantizationReport", "TensorQuantization", "ValidationResult", "OutputError"]

#: A histogram bin is drawn grey when more than this fraction of its values is not representable.
_LOST_MAJORITY = 0.5


@dataclass
class TensorQuantization:
    """How one tensor was quantized.

    Attributes
    ----------
    name : str
        Tensor name (activations) or ``"<layer>.weight"`` / ``"<layer>.bias"``.
    kind : str
        ``"activation"``, ``"weight"`` or ``"bias"``.
    layer : str
        The layer the row belongs to (producer of an activation, owner of a parameter).
    role : str
        ``"input"``, ``"output"``, ``"weight"`` or ``"bias"`` relative to ``layer``.
    observed : (float, float) or None
        Smallest and largest value (None for an activation without calibration data, e.g. a QDQ model's).
    scale : ndarray of float64
        The scale, one per output channel for weights and biases, one element for activations.
    qmin, qmax : int
        Integer range (int8 activations ``-128..127``, weights ``-127..127``, int32 biases).
    clipped : float or None
        Fraction of the values outside the representable range.
    underflow : float or None
        Fraction of the values that are not zero but quantize to zero.
    exact : bool
        Whether ``clipped`` and ``underflow`` come from the values (True) or from the calibration histogram.
    histogram : Log2Histogram or None
        The magnitudes (calibration histogram for activations, computed from the values for parameters).
    lost : ndarray or None
        Per fine histogram bin, how many of its values are not representable.
    """

    name: str
    kind: str
    layer: str
    role: str
    observed: tuple[float, float] | None
    scale: np.ndarray
    qmin: int
    qmax: int
    clipped: float | None
    underflow: float | None
    exact: bool
    histogram: Log2Histogram | None
    lost: np.ndarray | None

    @property
    def representable(self) -> tuple[float, float]:
        """The real range the integer type covers (the widest channel for per-channel scales)."""
        return float(self.qmin * self.scale.max()), float(self.qmax * self.scale.max())

    def scale_text(self) -> str:
        lo, hi = float(self.scale.min()), float(self.scale.max())
        return f"{lo:.4g}" if lo == hi else f"{lo:.3g}..{hi:.3g}"


def _parameter_row(name: str, kind: str, layer: str, values: np.ndarray, scale: np.ndarray, qmin: int,
                   qmax: int) -> TensorQuantization:
    """Exact figures of a parameter tensor ``values`` ``[C, ...]`` with per-channel ``scale`` ``[C]``."""
    v = np.asarray(values, np.float64)
    s = np.broadcast_to(np.asarray(scale, np.float64).reshape(-1, *([1] * (v.ndim - 1))), v.shape)
    ratio = v / s
    q = np.round(ratio)
    clipped = (q > qmax) | (q < qmin)
    under = (v != 0) & (q == 0)
    hist = Log2Histogram.of(v)
    lost = np.zeros_like(hist.counts, dtype=np.float64)
    bad = np.abs(v[clipped | under])
    if bad.size:
        idx = np.floor(np.log2(bad) * hist.sub).astype(np.int64) - hist.LOW * hist.sub
        lost += np.bincount(np.clip(idx, 0, lost.size - 1), minlength=lost.size)
    n = max(v.size, 1)
    observed = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    return TensorQuantization(name, kind, layer, kind, observed, np.asarray(scale, np.float64).reshape(-1), qmin, qmax,
                              float(clipped.sum() / n), float(under.sum() / n), True, hist, lost)


def _activation_row(name: str, layer: str, role: str, scale: float, stats) -> TensorQuantization:
    observed = getattr(stats, "observed", {}).get(name) if stats is not None else None
    if observed is None and stats is not None and name in stats and not hasattr(stats, "observed"):
        observed = tuple(stats[name])  # a plain dict of ranges: the chosen range is all we know
    hist = getattr(stats, "histograms", {}).get(name) if stats is not None else None
    clipped = underflow = lost = None
    if hist is not None:
        top, step = 127.5 * scale, 0.5 * scale
        clipped = hist.fraction_above(top)
        underflow = hist.fraction_below(step)
        lost = hist.beyond(top, above=True) + hist.beyond(step, above=False)
    return TensorQuantization(name, "activation", layer, role, observed, np.array([scale], np.float64), -128, 127,
                              clipped, underflow, False, hist, lost)


class QuantizationReport:
    """Per-layer account of a quantized graph.

    Parameters
    ----------
    graph : Graph
        The quantized graph (:func:`~.quantize.quantize`).
    stats : dict, optional
        The calibration's :class:`~.calibrate.CalibrationStats` (observed ranges and histograms); a plain dict of
        ranges, or None (a QDQ model's scales), gives the table without clipping figures for activations.
    method : str, optional
        Calibration method for the header (taken from ``stats`` when it has one).
    per_channel : bool
        Whether weights have per-channel scales (header only).
    scale_mode : str
        ``"fixed"`` or ``"pow2"`` (header only).

    Attributes
    ----------
    rows : list of TensorQuantization
        Every quantized tensor, in layer order.
    layers : dict of str to list of TensorQuantization
        The rows of each processor layer (inputs from outside the processor, weights, bias, output).
    """

    def __init__(self, graph: Graph, stats=None, *, method: str | None = None, per_channel: bool = True,
                 scale_mode: str = "fixed"):
        self.graph = graph
        self.stats = stats
        self.method = method or getattr(stats, "method", None) or ("imported" if not stats else "given")
        self.per_channel = per_channel
        self.scale_mode = scale_mode
        self.layers: dict[str, list[TensorQuantization]] = {}
        hw_made = {layer.output for layer in graph.layers if layer.target == "hw"}
        reported: set[str] = set()
        for layer in graph.layers:
            if layer.target != "hw" or layer.quant is None:
                continue
            rows = []
            for name in dict.fromkeys(layer.inputs):
                if name not in hw_made and name not in reported:  # network input or a host layer's output
                    rows.append(_activation_row(name, layer.name, "input", graph.tensors[name].scale, stats))
                    reported.add(name)
            rows += self._parameters(layer)
            rows.append(_activation_row(layer.output, layer.name, "output", graph.tensors[layer.output].scale, stats))
            reported.add(layer.output)
            self.layers[layer.name] = rows
        self.rows = [row for rows in self.layers.values() for row in rows]

    def _parameters(self, layer: Layer) -> list[TensorQuantization]:
        quant = layer.quant
        if layer.op not in ("conv", "fc") or quant.weight is None:
            return []
        s_w = quant.weight_scale.astype(np.float64)
        rows = [_parameter_row(f"{layer.name}.weight", "weight", layer.name, layer.weight, s_w, -127 if
                               quant.weight.min() > -128 else -128, 127)]
        if layer.bias is not None and np.any(layer.bias):
            s_in = self.graph.tensors[layer.inputs[0]].scale
            rows.append(_parameter_row(f"{layer.name}.bias", "bias", layer.name, layer.bias, s_in * s_w,
                                       -(1 << 31), (1 << 31) - 1))
        return rows

    # ------------------------------------------------------------------ text
    def __str__(self) -> str:
        mode = ("power-of-two scales (shift-only requantization)" if self.scale_mode == "pow2"
                else "fixed-point multipliers")
        head = (f"Quantization of {self.graph.name!r}: activations {self.method}, "
                f"{'per-channel' if self.per_channel else 'per-tensor'} weights, {mode}")
        cols = ("layer", "tensor", "kind", "observed range", "scale", "representable", "clipped", "< step")
        lines = []
        for layer, rows in self.layers.items():
            for i, r in enumerate(rows):
                obs = "" if r.observed is None else f"[{r.observed[0]:.4g}, {r.observed[1]:.4g}]"
                lo, hi = r.representable
                rep = f"[{lo:.4g}, {hi:.4g}]" if r.kind != "bias" else f"int32 x {r.scale_text()}"
                lines.append((layer if i == 0 else "", _short(r.name, 28), r.role, obs, r.scale_text(), rep,
                              _pct(r.clipped, r.exact), _pct(r.underflow, r.exact)))
        widths = [max(len(c), *(len(line[i]) for line in lines)) if lines else len(c) for i, c in enumerate(cols)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        out = [head, fmt.format(*cols), fmt.format(*("-" * w for w in widths))]
        out += [fmt.format(*line).rstrip() for line in lines]
        out.append("(activation fractions are estimated from the calibration histograms; ~ marks an estimate)")
        return "\n".join(out)

    def __repr__(self) -> str:
        return f"<QuantizationReport {self.graph.name!r}: {len(self.layers)} layers, {len(self.rows)} tensors>"

    # ------------------------------------------------------------------ plots
    def plot_histograms(self, directory: str | Path, layers: list[str] | None = None) -> list[Path]:
        """Write one PNG per processor layer with the histogram of each of its quantized tensors.

        Parameters
        ----------
        directory : str or Path
            Created if needed; files are named ``<index>_<layer>.png``.
        layers : list of str, optional
            Only these layers (names as in :attr:`layers`); all by default.

        Returns
        -------
        list of Path
            The files written, in layer order.
        """
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        unknown = sorted(set(layers or ()) - set(self.layers))
        if unknown:
            raise KeyError(f"no quantized layers {unknown}; the report has {list(self.layers)}")
        for index, (layer, rows) in enumerate(self.layers.items()):
            if layers is not None and layer not in layers:
                continue
            fig, axes = plt.subplots(len(rows), 1, figsize=(7.5, 2.3 * len(rows)), squeeze=False)
            for ax, row in zip(axes[:, 0], rows, strict=True):
                _draw(ax, row)
            fig.suptitle(f"{layer} ({self._op(layer)})", fontsize=11)
            height = 2.3 * len(rows)
            fig.subplots_adjust(left=0.09, right=0.98, top=1 - 0.6 / height, bottom=0.5 / height, hspace=0.8)
            path = out / f"{index:02d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', layer)}.png"
            fig.savefig(path, dpi=80, metadata={"Software": None})
            plt.close(fig)
            paths.append(path)
        return paths

    def _op(self, name: str) -> str:
        return next(layer.op for layer in self.graph.layers if layer.name == name)


def _pct(value: float | None, exact: bool) -> str:
    if value is None:
        return "-"
    return f"{'' if exact else '~'}{100 * value:.3g}%"


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def _draw(ax, row: TensorQuantization) -> None:
    """One histogram panel: bars per octave of ``|x|``, log count axis, grey where int8 loses the values."""
    from matplotlib import colormaps
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    hist = row.histogram
    label = {"input": "input activations", "output": "output activations", "weight": "weights", "bias": "bias"}
    title = f"{label[row.role]} {_short(row.name, 40)}: scale {row.scale_text()}"
    if hist is None or hist.total == hist.zeros:
        ax.text(0.5, 0.5, "no calibration histogram" if hist is None else "all values are zero",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title, fontsize=9)
        ax.set_yticks([])
        ax.set_xticks([])
        return
    octaves, counts = hist.octaves()
    start = (octaves[0] - hist.LOW) * hist.sub
    lost = row.lost[start:start + counts.size * hist.sub].reshape(-1, hist.sub).sum(axis=1)
    greyed = lost > _LOST_MAJORITY * np.maximum(counts, 1)
    level = np.log1p(counts) / np.log1p(max(counts.max(), 1))
    blues, greys = colormaps["Blues"], colormaps["Greys"]
    colors = [greys(0.35 + 0.3 * lv) if g else blues(0.35 + 0.65 * lv) for lv, g in zip(level, greyed, strict=True)]
    shown = counts > 0
    ax.bar(octaves[shown], counts[shown], width=1.0, align="edge", color=np.array(colors)[shown],
           edgecolor="white", linewidth=0.5)
    ax.set_yscale("log")
    ax.set_ylim(0.7, counts.max() * 2.0)
    s_lo, s_hi = float(row.scale.min()), float(row.scale.max())
    step, top = np.log2(0.5 * s_lo), np.log2((row.qmax + 0.5) * s_hi)
    lo_x, hi_x = octaves[0] - 0.5, octaves[-1] + 1.5
    if row.kind != "bias":  # (an int32 bias spans 32 octaves: its limits are off the chart)
        lo_x, hi_x = min(lo_x, np.floor(step) - 0.5), max(hi_x, np.ceil(top) + 0.5)
        ax.axvspan(step, top, color=blues(0.12), zorder=0)
        ax.axvline(step, color="tab:blue", linestyle=":", linewidth=1)
        ax.axvline(top, color="tab:blue", linestyle="--", linewidth=1)
    ax.set_xlim(lo_x, hi_x)
    ticks = np.arange(int(np.ceil(lo_x)), int(np.floor(hi_x)) + 1)
    stride = max(1, int(np.ceil(ticks.size / 16)))
    ticks = ticks[::stride]
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks], fontsize=7)  # plain text: mathtext labels make plotting 10x slower
    ax.yaxis.set_major_locator(LogLocator(numticks=5))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.tick_params(axis="y", labelsize=7)
    zeros = hist.zeros / hist.total
    ax.set_title(f"{title}, clipped {_pct(row.clipped, row.exact)}, below step {_pct(row.underflow, row.exact)}"
                 + (f", zeros {100 * zeros:.3g}%" if zeros else ""), fontsize=8)
    ax.set_xlabel("log2 |value|  (bar e counts 2^e <= |x| < 2^(e+1))", fontsize=7)
    ax.set_ylabel("count", fontsize=7)


# ---------------------------------------------------------------------------------------------- validation


@dataclass
class OutputError:
    """Error statistics of one network output, quantized against float.

    Attributes
    ----------
    max_abs, mean_abs : float
        Largest and mean absolute difference.
    cosine : float
        Cosine similarity of the flattened outputs (1 for identical directions).
    sqnr_db : float
        Signal-to-quantization-noise ratio ``10 log10(sum(ref**2) / sum((q - ref)**2))`` (inf when equal).
    """

    max_abs: float
    mean_abs: float
    cosine: float
    sqnr_db: float

    @classmethod
    def of(cls, reference: np.ndarray, quantized: np.ndarray) -> OutputError:
        """The statistics of ``quantized`` against ``reference`` (same shape)."""
        ref = np.asarray(reference, np.float64).reshape(-1)
        got = np.asarray(quantized, np.float64).reshape(-1)
        if ref.shape != got.shape:
            raise ValueError(f"outputs of {ref.size} and {got.size} values cannot be compared")
        diff = got - ref
        noise, signal = float(np.sum(diff ** 2)), float(np.sum(ref ** 2))
        norms = float(np.linalg.norm(ref) * np.linalg.norm(got))
        cosine = float(ref @ got / norms) if norms > 0 else float(np.array_equal(ref, got))
        sqnr = np.inf if noise == 0 else (10 * np.log10(signal / noise) if signal > 0 else -np.inf)
        return cls(float(np.abs(diff).max(initial=0.0)), float(np.abs(diff).mean()) if diff.size else 0.0, cosine,
                   float(sqnr))


@dataclass
class ValidationResult:
    """Float against int8 on validation data (:meth:`dlproc.runtime.workflow.Workflow.validate`).

    Attributes
    ----------
    frames : int
        Number of inputs.
    target : str
        Where the int8 network ran.
    float_accuracy, int8_accuracy : float or None
        Top-1 accuracy (argmax of the first output) with labels.
    agreement : float
        Fraction of frames whose top-1 class is the same for both networks (first output).
    metric_name : str or None
        Name of the user metric.
    float_metric, int8_metric : float or None
        The user metric of both networks.
    outputs : dict of str to OutputError
        Error statistics per output.
    float_outputs, int8_outputs : dict of str to ndarray
        The outputs themselves.
    """

    frames: int
    target: str
    float_accuracy: float | None
    int8_accuracy: float | None
    agreement: float
    metric_name: str | None
    float_metric: float | None
    int8_metric: float | None
    outputs: dict[str, OutputError]
    float_outputs: dict[str, np.ndarray]
    int8_outputs: dict[str, np.ndarray]

    @classmethod
    def compare(cls, reference: dict[str, np.ndarray], quantized: dict[str, np.ndarray], *, labels=None,
                metric=None, target: str = "ref") -> ValidationResult:
        """Compare output dictionaries (same names, batch axis first)."""
        names = list(reference)
        first_ref, first_q = (np.asarray(reference[names[0]]), np.asarray(quantized[names[0]]))
        n = first_ref.shape[0]
        top_ref = first_ref.reshape(n, -1).argmax(axis=1)
        top_q = first_q.reshape(n, -1).argmax(axis=1)
        acc_f = acc_q = m_f = m_q = None
        if labels is not None:
            labels = np.asarray(labels).reshape(-1)
            acc_f, acc_q = float(np.mean(top_ref == labels)), float(np.mean(top_q == labels))
        if metric is not None:
            def pack(d):
                return d[names[0]] if len(names) == 1 else [d[k] for k in names]

            m_f, m_q = float(metric(pack(reference), labels)), float(metric(pack(quantized), labels))
        errors = {k: OutputError.of(reference[k], quantized[k]) for k in names}
        return cls(n, target, acc_f, acc_q, float(np.mean(top_ref == top_q)),
                   getattr(metric, "__name__", "metric") if metric is not None else None, m_f, m_q, errors,
                   dict(reference), dict(quantized))

    def __str__(self) -> str:
        lines = [f"Validation on {self.frames} frames: float (onnx.reference) vs int8 (target {self.target!r})"]
        rows = []
        if self.float_accuracy is not None:
            rows.append(("top-1 accuracy", f"{100 * self.float_accuracy:.2f}%", f"{100 * self.int8_accuracy:.2f}%"))
        if self.metric_name is not None:
            rows.append((self.metric_name, f"{self.float_metric:.6g}", f"{self.int8_metric:.6g}"))
        if rows:
            width = max(len(r[0]) for r in rows)
            lines.append(f"  {'':<{width}}  {'float':>10}  {'int8':>10}")
            lines += [f"  {r[0]:<{width}}  {r[1]:>10}  {r[2]:>10}" for r in rows]
        lines.append(f"  top-1 agreement float/int8: {100 * self.agreement:.2f}%")
        head = ("output", "max |err|", "mean |err|", "cosine", "SQNR dB")
        body = [(_short(k, 30), f"{e.max_abs:.4g}", f"{e.mean_abs:.4g}", f"{e.cosine:.6f}", f"{e.sqnr_db:.2f}")
                for k, e in self.outputs.items()]
        widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
        fmt = "  " + "  ".join(f"{{:>{w}}}" if i else f"{{:<{w}}}" for i, w in enumerate(widths))
        lines += [fmt.format(*head)] + [fmt.format(*b) for b in body]
        return "\n".join(lines)
