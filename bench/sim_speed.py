"""Simulated cycles per second of the RTL (Verilator) on whole networks.

For each configuration, compiles a network, runs frames through the register-level driver on the Verilator model
and prints hardware cycles (the processor's own CYCLES counter), wall time and cycles/s. Wall time covers the
whole frame (DDR writes, starting, waiting, reading back), so it is what a user waits for.
Run: ``.venv/bin/python bench/sim_speed.py [config ...]``.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from nets import ALL_NETS  # noqa: E402

from dlproc.processor.config import ProcessorConfig  # noqa: E402
from dlproc.runtime.driver import Driver  # noqa: E402
from dlproc.runtime.workflow import Workflow  # noqa: E402
from dlproc.sim.verilator.device import VerilatorDevice  # noqa: E402

NETS = ("large_conv", "residual")


def main(configs: list[str]) -> None:
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.machine()}, python "
          f"{platform.python_version()}")
    print(f"{'config':<13} {'network':<12} {'MAC lanes':>9} {'cycles':>11} {'wall s':>8} {'cycles/s':>10} "
          f"{'MAC util':>8}")
    for name in configs:
        cfg = ProcessorConfig.preset(name)
        t = time.perf_counter()
        dev = VerilatorDevice(cfg)
        build = time.perf_counter() - t
        for net_name in NETS:
            model, _ = ALL_NETS[net_name]()
            wf = Workflow(model, processor=cfg, target="ref")
            rng = np.random.default_rng(0)
            wf.calibrate(rng.standard_normal((4, *wf.input_shape)).astype(np.float32))
            net = wf.compile()
            drv = Driver(dev, timeout_s=600)
            drv.load(net)
            x = rng.standard_normal(wf.input_shape).astype(np.float32)
            drv.infer(x)  # warm up
            t = time.perf_counter()
            _, runs, _ = drv.infer(x)
            wall = time.perf_counter() - t
            cycles = sum(r.cycles for r in runs)
            util = net.total_macs / (cycles * cfg.macs_per_cycle)
            print(f"{name:<13} {net_name:<12} {cfg.macs_per_cycle:>9} {cycles:>11,} {wall:>8.2f} "
                  f"{cycles / wall:>10,.0f} {util:>8.1%}", flush=True)
        dev.close()
        print(f"  (simulator load/build {build:.1f} s)")


if __name__ == "__main__":
    main(sys.argv[1:] or ["tiny_int8", "zcu102_int8"])
