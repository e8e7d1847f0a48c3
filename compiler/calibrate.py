"""Calibration: run the float graph over sample inputs and collect the range of every tensor.

Three statistics choose the range ``(lo, hi)`` of each activation tensor:

``"minmax"``
    the smallest and largest value seen. Nothing is clipped, but a single outlier stretches the int8 step of the whole
    tensor: Gaussian data (sigma 1) with a few values at 50 gets a step of 0.39, and most values fall into a handful
    of levels;
``"percentile"``
    the ``percentile`` of ``|x|`` over all values seen (default 99.99; from a histogram of 8192 bins whose range
    doubles as larger values arrive; the result is the upper edge of a bin), clipped to the min/max. Outliers rarer
    than ``100 - percentile`` percent saturate at the int8 limits and the bulk keeps a fine step: in the example above
    the range becomes about 4.2 (step 0.033), the clipped fraction is that of the outliers (about 1e-4), and the mean
    squared error on the bulk drops about 140-fold;
``"entropy"``
    the clipping threshold of ``|x|`` whose 128-level quantization loses the least information (smallest
    Kullback-Leibler divergence between the clipped histogram and its quantized version, the TensorRT int8
    calibration; ~256 candidate thresholds spaced geometrically), clipped to the min/max. On the example it also
    settles near 4.2 sigma, clipping the outliers and a few bulk values (a few 1e-4 in all), with the lowest error
    on the bulk.

The histogram resolves ``top / 8192`` with ``top`` the power of two above the largest magnitude, and the smallest
entropy candidate is 128 bins (``top / 64``): outliers more than about 64 times the bulk's clipping point (some
250 sigma for Gaussian data) leave the entropy threshold at ``top / 64``, coarser than it should be but still far
below min-max; ``"percentile"`` keeps its precision much further.

The result, :class:`CalibrationStats`, maps each tensor name to the chosen ``(lo, hi)`` (:func:`~.quantize.quantize`
takes ``max(|lo|, |hi|)`` as the symmetric range) and keeps what a report needs: the observed minimum and maximum,
and a :class:`Log2Histogram` of every tensor.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np

from dlproc.errors import CalibrationError

from .float_ref import HostRunner, run_layer
from .graph import Graph

__all__ = ["calibrate", "AbsHistogram", "Log2Histogram", "CalibrationStats"]


class AbsHistogram:
    """Histogram of ``|x|`` over ``[0, top)`` with a fixed number of bins; ``top`` doubles to fit new values.

    Parameters
    ----------
    bins : int
        Number of bins (even).
    """

    def __init__(self, bins: int = 8192):
        self.bins = bins
        self.counts = np.zeros(bins, np.int64)
        self.top = 0.0

    def add(self, values: np.ndarray) -> None:
        """Count the magnitudes of ``values``."""
        mags = np.abs(np.asarray(values, np.float64)).reshape(-1)
        if mags.size == 0:
            return
        peak = float(mags.max())
        if self.top == 0.0:
            self.top = 2.0 ** np.ceil(np.log2(peak)) if peak > 0 else 1.0
        while peak >= self.top:  # halve the resolution: merge bin pairs into the lower half
            self.counts = np.concatenate([self.counts.reshape(-1, 2).sum(axis=1), np.zeros(self.bins // 2, np.int64)])
            self.top *= 2.0
        self.counts += np.histogram(mags, bins=self.bins, range=(0.0, self.top))[0]

    def percentile(self, q: float) -> float:
        """The upper edge of the bin holding the ``q``-th percentile of the magnitudes."""
        total = int(self.counts.sum())
        if total == 0:
            return 0.0
        index = int(np.searchsorted(np.cumsum(self.counts), q / 100.0 * total))
        return (min(index, self.bins - 1) + 1) * self.top / self.bins

    def entropy_threshold(self, levels: int = 128) -> float:
        """The threshold ``t`` minimising ``KL(P || Q)``, ``P`` the histogram clipped at ``t`` (outliers added to
        its last bin), ``Q`` the same quantized to ``levels`` uniform levels."""
        counts = self.counts.astype(np.float64)
        width = self.top / self.bins
        used = int(np.flatnonzero(counts)[-1]) + 1 if counts.any() else 0
        if used <= levels:
            return used * width
        best, best_kl = used, np.inf
        # ~256 candidate thresholds, spaced geometrically: fine steps near the bulk, coarse ones out to the outliers
        for i in np.unique(np.geomspace(levels, used, 256).round().astype(np.int64)):
            p = counts[:i].copy()
            p[-1] += counts[i:].sum()
            level = (np.arange(i) * levels) // i  # the quantization level of each bin
            nonzero = counts[:i] > 0
            sums = np.bincount(level, weights=counts[:i], minlength=levels)
            spread = np.bincount(level, weights=nonzero, minlength=levels)
            q = np.where(nonzero, sums[level] / np.maximum(spread[level], 1), 0.0)
            if q.sum() == 0:  # every bin of the clipped histogram is empty: nothing to compare
                continue
            p /= p.sum()
            q /= q.sum()
            mask = p > 0
            kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
            if kl < best_kl:
                best, best_kl = i, kl
        return (best + 0.5) * width


class Log2Histogram:
    """Histogram of ``|x|`` in logarithmic bins: ``sub`` bins per octave over ``[2**-64, 2**64)``, zeros apart.

    Bin ``i`` counts the magnitudes in ``[2**(e / sub), 2**((e + 1) / sub))`` with ``e = i + LOW * sub``; smaller
    non-zero magnitudes go to the first bin, larger ones to the last. The report draws it per octave and estimates
    the clipped and the underflowing fraction of a tensor from it.

    Parameters
    ----------
    sub : int
        Bins per octave.
    """

    LOW, HIGH = -64, 64  #: octave range

    def __init__(self, sub: int = 8):
        self.sub = sub
        self.counts = np.zeros((self.HIGH - self.LOW) * sub, np.int64)
        self.zeros = 0
        self.total = 0
        self.peak = 0.0  #: largest magnitude seen

    @classmethod
    def of(cls, values: np.ndarray, sub: int = 8) -> Log2Histogram:
        """The histogram of one array."""
        hist = cls(sub)
        hist.add(values)
        return hist

    def add(self, values: np.ndarray) -> None:
        """Count the magnitudes of ``values``."""
        mags = np.abs(np.asarray(values, np.float64)).reshape(-1)
        if mags.size == 0:
            return
        self.total += mags.size
        nonzero = mags[mags > 0]
        self.zeros += mags.size - nonzero.size
        if nonzero.size == 0:
            return
        self.peak = max(self.peak, float(nonzero.max()))
        index = np.floor(np.log2(nonzero) * self.sub).astype(np.int64) - self.LOW * self.sub
        self.counts += np.bincount(np.clip(index, 0, self.counts.size - 1), minlength=self.counts.size)

    def edges(self) -> np.ndarray:
        """The ``len(counts) + 1`` bin edges (magnitudes)."""
        return 2.0 ** (np.arange(self.counts.size + 1) / self.sub + self.LOW)

    def fraction_above(self, threshold: float) -> float:
        """Estimated fraction of all values with ``|x| > threshold`` (see :meth:`beyond`; exactly 0 when the largest
        magnitude is not above ``threshold``)."""
        if self.total == 0:
            return 0.0
        return float(self.beyond(threshold, above=True).sum() / self.total)

    def fraction_below(self, threshold: float) -> float:
        """Estimated fraction of all values with ``0 < |x| < threshold`` (see :meth:`beyond`)."""
        if self.total == 0:
            return 0.0
        return float(self.beyond(threshold, above=False).sum() / self.total)

    def beyond(self, threshold: float, *, above: bool) -> np.ndarray:
        """Estimated count per bin of the magnitudes above (or, non-zero, below) ``threshold``.

        Within a bin the magnitudes are taken as spread evenly in ``log2``, and the bin holding the largest magnitude
        as ending there.
        """
        lo = np.arange(self.counts.size, dtype=np.float64)  # bin edges in units of bins
        hi = lo + 1.0
        if self.peak > 0:
            top = (np.log2(self.peak) - self.LOW) * self.sub
            hi = np.where((lo <= top) & (top < hi), np.maximum(top, lo + 1e-9), hi)
        pos = (np.log2(threshold) - self.LOW) * self.sub if threshold > 0 else -np.inf
        part = (hi - pos) / (hi - lo) if above else (pos - lo) / (hi - lo)
        return self.counts * np.clip(part, 0.0, 1.0)

    def octaves(self) -> tuple[np.ndarray, np.ndarray]:
        """Counts per octave: ``(e, counts)`` for the octaves ``[2**e, 2**(e+1))`` from the smallest to the largest
        non-empty one."""
        per_octave = self.counts.reshape(-1, self.sub).sum(axis=1)
        octaves = np.arange(self.LOW, self.HIGH)
        used = np.flatnonzero(per_octave)
        if used.size == 0:
            return octaves[:0], per_octave[:0]
        return octaves[used[0]:used[-1] + 1], per_octave[used[0]:used[-1] + 1]


class CalibrationStats(dict):
    """The chosen range ``(lo, hi)`` of every tensor (a ``dict``), with what the calibration saw.

    Attributes
    ----------
    method : str
        The range statistic (``"minmax"``, ``"percentile"``, ``"entropy"``).
    percentile : float
        The percentile of ``method="percentile"``.
    samples : int
        Number of calibration inputs.
    observed : dict of str to (float, float)
        The smallest and largest value seen per tensor.
    histograms : dict of str to Log2Histogram
        The magnitudes seen per tensor.
    """

    def __init__(self, ranges=(), *, method: str = "minmax", percentile: float = 99.99, samples: int = 0,
                 observed: dict | None = None, histograms: dict | None = None):
        super().__init__(ranges)
        self.method = method
        self.percentile = percentile
        self.samples = samples
        self.observed: dict[str, tuple[float, float]] = dict(observed or {})
        self.histograms: dict[str, Log2Histogram] = dict(histograms or {})


def _batches(samples: np.ndarray | Iterable[np.ndarray], batch_size: int, sample_shape: tuple[int, ...]):
    if isinstance(samples, np.ndarray):
        if samples.shape == sample_shape:
            samples = samples[None]
        for i in range(0, samples.shape[0], batch_size):
            yield samples[i:i + batch_size]
        return
    for batch in samples:
        batch = np.asarray(batch)
        yield batch[None] if batch.shape == sample_shape else batch


def calibrate(graph: Graph, samples: np.ndarray | Iterable[np.ndarray], *, method: str = "minmax",
              percentile: float = 99.99, batch_size: int = 8, progress: bool | None = None) -> CalibrationStats:
    """Collect the value range of every tensor of a float graph.

    Parameters
    ----------
    graph : Graph
        The fused float graph.
    samples : ndarray or iterable of ndarray
        Network inputs: an array ``[N, C, H, W]`` (processed ``batch_size`` at a time) or an iterable of batches
        (or of single ``[C, H, W]`` images).
    method : {"minmax", "percentile", "entropy"}
        The statistic (see the module docstring).
    percentile : float
        Percentile of ``|x|`` for ``method="percentile"``.
    batch_size : int
        Batch size when ``samples`` is one array.
    progress : bool, optional
        Show a progress bar (tqdm) over the samples; by default shown when there are more than 256 samples.

    Returns
    -------
    CalibrationStats
        ``(lo, hi)`` per tensor of ``graph.tensors`` (and per :func:`~.graph.pre_activation` of a layer with a
        lookup-table activation), with the observed ranges and histograms.
    """
    if method not in ("minmax", "percentile", "entropy"):
        raise ValueError(f"calibration method {method!r}; use 'minmax', 'percentile' or 'entropy'")
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile {percentile} is not in (0, 100]")
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    hists: dict[str, AbsHistogram] = {}
    logs: dict[str, Log2Histogram] = {}
    host = HostRunner(graph)
    shape = graph.tensors[graph.inputs[0]].onnx_shape[1:]
    seen = 0
    last_use = {name: i for i, layer in enumerate(graph.layers) for name in layer.inputs}

    def observe(name: str, value: np.ndarray) -> None:
        if not np.all(np.isfinite(value)):
            raise CalibrationError(f"tensor {name!r} becomes NaN/Inf during calibration (in the samples from "
                                   f"{seen - batch.shape[0]}): the float network overflows on this data; check the "
                                   "weights and the input scale")
        lo[name] = min(lo.get(name, np.inf), float(np.min(value)))
        hi[name] = max(hi.get(name, -np.inf), float(np.max(value)))
        logs.setdefault(name, Log2Histogram()).add(value)
        if method != "minmax":
            hists.setdefault(name, AbsHistogram()).add(value)

    total = _count(samples, shape)
    bar = None
    if progress or (progress is None and total is not None and total > 256):
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"calibrating {graph.name}", unit="sample")
    try:
        for batch in _batches(samples, batch_size, shape):
            if batch.shape[1:] != shape:
                raise CalibrationError(f"calibration sample of shape {batch.shape[1:]}; the network takes {shape}")
            finite = np.isfinite(np.asarray(batch, np.float64)).reshape(batch.shape[0], -1)
            if not finite.all():
                first = int(np.flatnonzero(~finite.all(axis=1))[0])
                raise CalibrationError(f"calibration sample {seen + first} holds {int((~finite[first]).sum())} "
                                       "NaN/Inf value(s); calibration needs finite data (drop or repair that sample)")
            seen += batch.shape[0]
            values = {graph.inputs[0]: batch.astype(np.float64)}
            observe(graph.inputs[0], values[graph.inputs[0]])
            for index, layer in enumerate(graph.layers):
                pre: dict[str, np.ndarray] = {}
                outs = run_layer(graph, layer, [values[v] for v in layer.inputs], host, pre)
                for name, value in pre.items():  # the lookup table's input (nonlinear unit)
                    observe(name, value)
                for name, value in zip(layer.outputs, outs, strict=True):
                    values[name] = value
                    if name in graph.tensors:
                        observe(name, value)
                for name in layer.inputs:  # free what no later layer reads (large feature maps, many samples)
                    if last_use[name] == index:
                        values.pop(name, None)
            if bar is not None:
                bar.update(batch.shape[0])
    finally:
        if bar is not None:
            bar.close()
    if seen == 0:
        raise CalibrationError("calibration needs at least one sample")
    observed = {k: (lo[k], hi[k]) for k in lo}
    first_lo, first_hi = observed[graph.inputs[0]]
    if first_lo == first_hi:
        raise CalibrationError(f"calibration data is constant (all {seen} samples hold only the value {first_lo:g}): "
                               "no range can be measured; calibrate with representative inputs")
    flat = sorted(k for k, (a, b) in observed.items() if a == b)
    if flat:
        warnings.warn(f"calibration: {len(flat)} tensor(s) hold a single value on all {seen} samples "
                      f"({', '.join(f'{k!r} = {observed[k][0]:g}' for k in flat[:5])}"
                      f"{', ...' if len(flat) > 5 else ''}); their int8 scale is arbitrary. Are the samples "
                      "representative?", UserWarning, stacklevel=2)
    if method == "minmax":
        ranges = observed
    else:
        ranges = {}
        for k in lo:
            p = hists[k].percentile(percentile) if method == "percentile" else hists[k].entropy_threshold()
            ranges[k] = (max(lo[k], -p), min(hi[k], p))
    return CalibrationStats(ranges, method=method, percentile=percentile, samples=seen, observed=observed,
                            histograms=logs)


def _count(samples, shape: tuple[int, ...]) -> int | None:
    """Number of samples when it is known before iterating."""
    if isinstance(samples, np.ndarray):
        return 1 if samples.shape == shape else samples.shape[0]
    try:
        return sum(1 if np.shape(b) == shape else np.shape(b)[0] for b in samples) if isinstance(
            samples, list | tuple) else None
    except (TypeError, IndexError):
        return None
