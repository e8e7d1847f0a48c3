"""Calibration: run the float graph over sample inputs and collect the range of every tensor.

Two statistics are available:

``"minmax"``
    the smallest and largest value seen;
``"percentile"``
    the ``percentile`` of ``|x|`` over all values seen (from a histogram of 2048 bins whose range doubles as larger
    values arrive), clipped to the min/max; it ignores rare outliers at the price of saturating them;
``"entropy"``
    the clipping threshold of ``|x|`` whose 128-level quantization loses the least information (smallest
    Kullback-Leibler divergence from the histogram, the TensorRT int8 calibration), clipped to the min/max.

The result maps each tensor name to ``(lo, hi)``; :func:`~.quantize.quantize` takes ``max(|lo|, |hi|)`` as the
symmetric range.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .float_ref import HostRunner, run_layer
from .graph import Graph

__all__ = ["calibrate", "AbsHistogram"]


class AbsHistogram:
    """Histogram of ``|x|`` over ``[0, top)`` with a fixed number of bins; ``top`` doubles to fit new values.

    Parameters
    ----------
    bins : int
        Number of bins (even).
    """

    def __init__(self, bins: int = 2048):
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
        step = max(1, (used - levels) // 256)  # at most ~256 candidate thresholds
        for i in range(levels, used + 1, step):
            p = counts[:i].copy()
            p[-1] += counts[i:].sum()
            level = (np.arange(i) * levels) // i  # the quantization level of each bin
            nonzero = counts[:i] > 0
            sums = np.bincount(level, weights=counts[:i], minlength=levels)
            spread = np.bincount(level, weights=nonzero, minlength=levels)
            q = np.where(nonzero, sums[level] / np.maximum(spread[level], 1), 0.0)
            p /= p.sum()
            q /= q.sum()
            mask = p > 0
            kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
            if kl < best_kl:
                best, best_kl = i, kl
        return (best + 0.5) * width


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
              percentile: float = 99.99, batch_size: int = 8) -> dict[str, tuple[float, float]]:
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

    Returns
    -------
    dict of str to (float, float)
        ``(lo, hi)`` per tensor of ``graph.tensors``.
    """
    if method not in ("minmax", "percentile", "entropy"):
        raise ValueError(f"calibration method {method!r}; use 'minmax', 'percentile' or 'entropy'")
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile {percentile} is not in (0, 100]")
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    hists: dict[str, AbsHistogram] = {}
    host = HostRunner(graph)
    shape = graph.tensors[graph.inputs[0]].onnx_shape[1:]
    seen = 0
    last_use = {name: i for i, layer in enumerate(graph.layers) for name in layer.inputs}

    def observe(name: str, value: np.ndarray) -> None:
        lo[name] = min(lo.get(name, np.inf), float(np.min(value)))
        hi[name] = max(hi.get(name, -np.inf), float(np.max(value)))
        if method != "minmax":
            hists.setdefault(name, AbsHistogram()).add(value)

    for batch in _batches(samples, batch_size, shape):
        if batch.shape[1:] != shape:
            raise ValueError(f"calibration sample of shape {batch.shape[1:]}; the network takes {shape}")
        seen += batch.shape[0]
        values = {graph.inputs[0]: batch.astype(np.float64)}
        observe(graph.inputs[0], values[graph.inputs[0]])
        for index, layer in enumerate(graph.layers):
            outs = run_layer(graph, layer, [values[v] for v in layer.inputs], host)
            for name, value in zip(layer.outputs, outs, strict=True):
                values[name] = value
                if name in graph.tensors:
                    observe(name, value)
            for name in layer.inputs:  # free what no later layer reads (large feature maps, many samples)
                if last_use[name] == index:
                    values.pop(name, None)
    if seen == 0:
        raise ValueError("calibration needs at least one sample")
    if method == "minmax":
        return {k: (lo[k], hi[k]) for k in lo}
    stats = {}
    for k in lo:
        p = hists[k].percentile(percentile) if method == "percentile" else hists[k].entropy_threshold()
        stats[k] = (max(lo[k], -p), min(hi[k], p))
    return stats
