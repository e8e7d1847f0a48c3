"""Compile time of the largest ONNX zoo architectures shipped in the onnx wheel, for zcu102_int8.

Prints, per model: front end (load + fusion), calibration (1 random frame), compilation (tiling, code, the static
verification of the program, image), of which the verification alone (``verify_program``, timed again), instruction
count and parameter bytes. Run: ``.venv/bin/python bench/compile_time.py [model ...]``.
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from zoo import zoo_model  # noqa: E402

from dlproc.runtime.workflow import Workflow  # noqa: E402
from dlproc.sim.hazards import verify_program  # noqa: E402


def main(names: list[str]) -> None:
    cpu = platform.processor() or platform.machine()
    print(f"machine: {platform.node()} {cpu}, python {platform.python_version()}")
    print(f"{'model':<14} {'front end s':>11} {'calibrate s':>11} {'compile s':>9} {'verify s':>8} "
          f"{'instructions':>12} "
          f"{'weights MiB':>11} {'host layers':>11}")
    for name in names:
        model = zoo_model(name)
        t0 = time.perf_counter()
        wf = Workflow(model, processor="zcu102_int8", target="ref")
        t1 = time.perf_counter()
        wf.calibrate(np.random.default_rng(0).standard_normal((1, *wf.input_shape)).astype(np.float32))
        t2 = time.perf_counter()
        net = wf.compile()
        t3 = time.perf_counter()
        verify_program(net.config, net.instructions())
        t4 = time.perf_counter()
        host = sum(layer.target == "host" for layer in net.layers)
        print(f"{name:<14} {t1 - t0:>11.2f} {t2 - t1:>11.2f} {t3 - t2:>9.2f} {t4 - t3:>8.2f} {net.instr_count:>12,} "
              f"{net.weight_bytes / 2**20:>11.1f} {host:>11}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["vgg19", "resnet50", "bvlc_alexnet"])
