"""Speed of the performance estimate: milliseconds per estimate for zoo networks on zcu102_int8.

The estimate replays the compiled program through the timing model (no simulation), so sweeping hundreds of
configurations is cheap. Run: ``.venv/bin/python bench/estimate_speed.py [model ...]``.
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from zoo import zoo_model  # noqa: E402

from dlproc.runtime.estimate import estimate_performance  # noqa: E402
from dlproc.runtime.workflow import Workflow  # noqa: E402


def main(names: list[str]) -> None:
    print(f"machine: {platform.node()} {platform.machine()}, python {platform.python_version()}")
    print(f"{'model':<14} {'instructions':>12} {'estimate ms':>11} {'est. frames/s':>13} {'MAC util':>8}")
    for name in names:
        wf = Workflow(zoo_model(name), processor="zcu102_int8", target="ref")
        wf.calibrate(np.random.default_rng(0).standard_normal((1, *wf.input_shape)).astype(np.float32))
        net = wf.compile()
        estimate_performance(net)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            prof = estimate_performance(net)
            times.append(time.perf_counter() - t)
        print(f"{name:<14} {net.instr_count:>12,} {min(times) * 1e3:>11.1f} {prof.fps:>13,.1f} "
              f"{prof.mac_utilization:>8.1%}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["bvlc_alexnet", "resnet50", "squeezenet"])
