"""What the nonlinear unit changes for edge-network blocks: host layers, program segments and estimated processor
cycles on tiny_int8 with and without ``has_nonlinear_unit``, and the int8 cosine against the float evaluator.

The blocks are tests/edge_nets.py (MobileNet v3 and EfficientNet style, every lookup-table activation, elementwise
Mul, LRN). Host layers run between hardware segments; their time is the host's, not in the cycle figure.
Run: ``.venv/bin/python bench/nonlinear_unit.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from edge_nets import EDGE_NETS  # noqa: E402

from dlproc.compiler.float_ref import float_evaluator  # noqa: E402
from dlproc.processor.config import ProcessorConfig  # noqa: E402
from dlproc.runtime.workflow import Workflow  # noqa: E402


def main() -> None:
    plain = ProcessorConfig.preset("tiny_int8")
    configs = {"without": plain, "with": plain.replace(has_nonlinear_unit=True)}
    print(f"{'network':<20} {'unit':<8} {'host layers':>11} {'segments':>8} {'hw cycles':>10} {'cosine':>8}")
    for name, build in EDGE_NETS.items():
        model, shape = build()
        rng = np.random.default_rng(0)
        calib = rng.standard_normal((16, *shape[1:])).astype(np.float32)
        x = rng.standard_normal((4, *shape[1:])).astype(np.float32)
        reference = float_evaluator(model)
        want = np.concatenate([reference.run(None, {"input": f[None]})[0] for f in x]).ravel()
        for label, cfg in configs.items():
            wf = Workflow(model, processor=cfg, target="ref")
            wf.calibrate(calib)
            net = wf.compile()
            got = np.asarray(wf.predict(x), np.float64).ravel()
            cosine = got @ want / (np.linalg.norm(got) * np.linalg.norm(want))
            hosts = sum(layer.target == "host" for layer in wf.graph.layers)
            cycles = wf.estimate_performance().total_cycles
            print(f"{name:<20} {label:<8} {hosts:>11} {len(net.segments):>8} {cycles:>10,} {cosine:>8.5f}")


if __name__ == "__main__":
    main()
