"""How fast the RTL simulation loop turns: simulator open time, build time, cycles/s, whole-network times.

For each preset it prints

* the time to open the cached simulator in a fresh process (``python -c "VerilatorDevice(preset)"``, imports
  included; builds the simulator first, and prints that build's time, if it is not cached yet);
* for the test networks ``large_conv`` and ``residual`` (``tests/nets.py``): hardware cycles (the processor's
  CYCLES counter), wall time of one frame through the register-level driver (DDR writes, start, wait, read back)
  and simulated cycles/s;
* with ``--zoo``, the same for one frame of AlexNet and ResNet-50 from the onnx wheel's zoo (seeded weights) on
  the zcu102 presets.

Run: ``.venv/bin/python bench/sim_speed.py [preset ...] [--zcu102] [--zoo]``. The default presets are
``tiny_int8`` and ``small_int8``; ``--zcu102`` adds ``zcu102_int8`` and ``zcu102_fp32`` (their simulators take
minutes to build the first time).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))
from nets import ALL_NETS  # noqa: E402

from dlproc.processor.config import ProcessorConfig  # noqa: E402
from dlproc.runtime.driver import Driver  # noqa: E402
from dlproc.runtime.workflow import Workflow  # noqa: E402
from dlproc.sim.verilator.build import build_simulator, cached_simulator  # noqa: E402
from dlproc.sim.verilator.device import VerilatorDevice  # noqa: E402

NETS = ("large_conv", "residual")
ZOO_NETS = ("bvlc_alexnet", "resnet50")


def open_seconds(name: str) -> float:
    """Wall time of opening the (cached) simulator of preset ``name`` in a fresh Python process."""
    code = ("from dlproc.processor.config import ProcessorConfig\n"
            "from dlproc.sim.verilator.device import VerilatorDevice\n"
            f"VerilatorDevice(ProcessorConfig.preset({name!r})).close()\n")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def frame(dev: VerilatorDevice, cfg: ProcessorConfig, model, label: str) -> None:
    wf = Workflow(model, processor=cfg, target="ref")
    rng = np.random.default_rng(0)
    wf.calibrate(rng.standard_normal((2, *wf.input_shape)).astype(np.float32))
    net = wf.compile()
    drv = Driver(dev, timeout_s=3600)
    drv.load(net)
    x = rng.standard_normal(wf.input_shape).astype(np.float32)
    start = time.perf_counter()
    _, runs, _ = drv.infer(x)
    wall = time.perf_counter() - start
    cycles = sum(r.cycles for r in runs)
    print(f"{cfg_name(cfg):<12} {label:<13} {cycles:>12,} {wall:>9.2f} {cycles / wall:>11,.0f}", flush=True)


def cfg_name(cfg: ProcessorConfig) -> str:
    return next((n for n in ("tiny_int8", "small_int8", "tiny_fp32", "zcu102_int8", "zcu102_fp32")
                 if ProcessorConfig.preset(n) == cfg), cfg.hardware_hash)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="*", default=None)
    parser.add_argument("--zcu102", action="store_true", help="add zcu102_int8 and zcu102_fp32")
    parser.add_argument("--zoo", action="store_true", help="also one frame of AlexNet and ResNet-50")
    args = parser.parse_args(argv)
    presets = list(args.presets or ["tiny_int8", "small_int8"])
    if args.zcu102:
        presets += [p for p in ("zcu102_int8", "zcu102_fp32") if p not in presets]
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.machine()}, python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f}")
    for name in presets:
        cfg = ProcessorConfig.preset(name)
        if cached_simulator(cfg) is None:
            start = time.perf_counter()
            build_simulator(cfg)
            print(f"{name}: simulator built in {time.perf_counter() - start:.0f} s")
        print(f"{name}: cached simulator opens in {open_seconds(name):.2f} s (fresh process, imports included)")
    print(f"{'config':<12} {'network':<13} {'cycles':>12} {'wall s':>9} {'cycles/s':>11}")
    for name in presets:
        cfg = ProcessorConfig.preset(name)
        with VerilatorDevice(cfg) as dev:
            for net_name in NETS:
                model, _ = ALL_NETS[net_name]()
                frame(dev, cfg, model, net_name)
            if args.zoo and name.startswith("zcu102"):
                from zoo import zoo_model

                for net_name in ZOO_NETS:
                    frame(dev, cfg, zoo_model(net_name), net_name)


if __name__ == "__main__":
    main()
