"""Throughput of whole networks on a processor configuration under a memory model (issue 13).

Prints, per network: frames/s, MAC utilization, DDR bytes per frame and GB/s, and the fraction of the compute roof
(the MAC array's peak) and of the DDR roof (the tighter of one beat per cycle on the AXI port and the memory
model's shared bandwidth) that the frame reaches, from the estimate (``runtime/estimate.py``) and, with ``--rtl``,
from the Verilator RTL's own counters (one frame; small networks only: a zoo network takes minutes).

Networks: the ONNX zoo architectures in the onnx wheel (``tests/zoo.py``: seeded random weights) and, with
``--torchvision``, torchvision models with random weights (torch is a bench-only install; skipped when absent).
The cycle counts do not depend on the weights' or the calibration's values, so by default every activation gets a
fixed synthetic scale (1/32) instead of a calibration pass (the float forward passes of a zoo network take minutes
on a loaded machine); ``--calibrate random`` calibrates on one seeded random frame instead. Only processor layers
are timed (host layers such as LRN and Softmax are not counted).

Run::

    nice -n 10 .venv/bin/python bench/throughput.py                       # zoo nets, zcu102_int8, ideal + zcu102
    .venv/bin/python bench/throughput.py squeezenet --clock 250 500 --memory zcu102
    .venv/bin/python bench/throughput.py --processor small_int8 --rtl --memory zcu102 tiny
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from zoo import ZOO, zoo_model  # noqa: E402

from dlproc.boards.memory import MEMORY_MODELS, memory_model  # noqa: E402
from dlproc.processor.config import ProcessorConfig  # noqa: E402
from dlproc.runtime.estimate import estimate_performance  # noqa: E402
from dlproc.runtime.workflow import Workflow  # noqa: E402

DEFAULT_NETS = ["bvlc_alexnet", "resnet50", "vgg19", "squeezenet", "inception_v1"]
TORCHVISION = ["alexnet", "resnet18", "vgg16", "mobilenet_v2", "squeezenet1_1"]


def tiny_model():
    """A small conv/pool/fc network (8x16x16 input) for ``--rtl`` runs on small configurations."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((16, 8, 3, 3)).astype(np.float32) * 0.2, "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((32, 16, 3, 3)).astype(np.float32) * 0.1, "w2")
    wf = numpy_helper.from_array(rng.standard_normal((10, 32 * 8 * 8)).astype(np.float32) * 0.05, "wf")
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["d"]),
             helper.make_node("MaxPool", ["d"], ["e"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Reshape", ["e", "shape"], ["f"]),
             helper.make_node("Gemm", ["f", "wf"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                              [w1, w2, wf, shape])
    return onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def torchvision_model(name: str):
    """A torchvision model with random weights exported to ONNX, or None when torch is not installed."""
    try:
        import io

        import onnx
        import torch
        import torchvision
    except ImportError:
        return None
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    buf = io.BytesIO()
    torch.onnx.export(model, torch.zeros(1, 3, 224, 224), buf, opset_version=13, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def load(name: str):
    if name == "tiny":
        return tiny_model()
    if name in ZOO:
        return zoo_model(name)
    if name in TORCHVISION:
        return torchvision_model(name)
    raise SystemExit(f"unknown network {name!r}: zoo nets are {', '.join(ZOO)}; torchvision: "
                     f"{', '.join(TORCHVISION)}; or 'tiny'")


def row(name: str, source: str, prof, config: ProcessorConfig, memory: str) -> str:
    timing = memory_model(memory, config)
    seconds = prof.latency_s
    hw = [layer for layer in prof.layers if layer.target == "hw"]
    ddr_bytes = sum(layer.ddr_bytes for layer in hw)
    gbps = ddr_bytes / seconds / 1e9 if seconds else 0.0
    roof_gbps = timing.stream_rate * config.beat_bytes * config.clock_mhz * 1e6 / 1e9
    return (f"| {name} | {source} | {memory} | {config.clock_mhz:g} | {1 / seconds:,.1f} | "
            f"{prof.mac_utilization:.1%} | {ddr_bytes / 1e6:,.2f} | {gbps:.2f} | {prof.mac_utilization:.1%} | "
            f"{gbps / roof_gbps:.1%} (of {roof_gbps:.2f} GB/s) |")


def calibrate(wf: Workflow, frame: np.ndarray, how: str) -> None:
    """Quantize ``wf``: with a fixed scale for every activation (``"synthetic"``) or calibrated on ``frame``."""
    if how == "synthetic":
        for tensor in wf.float_graph.tensors.values():
            if tensor.scale is None:
                tensor.scale = 1 / 32
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "calibration is skipped": that is the point
            wf.calibrate(frame)
    else:
        wf.calibrate(frame)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("nets", nargs="*", help=f"networks (default {' '.join(DEFAULT_NETS)})")
    ap.add_argument("--processor", default="zcu102_int8", help="preset name (default zcu102_int8)")
    ap.add_argument("--clock", type=float, nargs="+", help="clock_mhz values to play (default the preset's)")
    ap.add_argument("--memory", nargs="+", default=["ideal", "zcu102"], choices=sorted(MEMORY_MODELS),
                    help="memory models (default: ideal then zcu102)")
    ap.add_argument("--torchvision", action="store_true", help=f"also {' '.join(TORCHVISION)} (needs torch)")
    ap.add_argument("--calibrate", choices=("synthetic", "random"), default="synthetic",
                    help="fixed activation scales (default) or one random calibration frame")
    ap.add_argument("--rtl", action="store_true", help="also run one frame on the Verilator RTL (small nets only)")
    args = ap.parse_args(argv)
    names = args.nets or DEFAULT_NETS + (TORCHVISION if args.torchvision else [])
    base = ProcessorConfig.preset(args.processor)
    clocks = args.clock or [base.clock_mhz]
    for mem in args.memory:
        m = MEMORY_MODELS[mem]
        print(f"memory model {mem}: {getattr(m, 'description', None) or m.name}")
    print(f"configuration {args.processor}: {base.summary()}")
    print("| network | source | memory | MHz | frames/s | MAC util | DDR MB/frame | DDR GB/s | compute roof | "
          "DDR roof |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        model = load(name)
        if model is None:
            print(f"| {name} | skipped: torch/torchvision not installed |", flush=True)
            continue
        t0 = time.perf_counter()
        wf = Workflow(model, processor=base, target="ref")
        frame = np.random.default_rng(0).standard_normal((1, *wf.input_shape)).astype(np.float32)
        calibrate(wf, frame, args.calibrate)
        net = wf.compile()
        print(f"<!-- {name}: calibrate + compile {time.perf_counter() - t0:.1f} s -->", flush=True)
        for mhz in clocks:
            config = dataclasses.replace(base, clock_mhz=mhz)
            net.config = config  # same program: the instruction stream does not depend on the clock
            for mem in args.memory:
                prof = estimate_performance(net, ddr=memory_model(mem, config))
                print(row(name, "estimate", prof, config, mem), flush=True)
                if args.rtl and mhz == base.clock_mhz:
                    rtl = Workflow(model, processor=config, target="sim", device_options={"memory": mem})
                    calibrate(rtl, frame, args.calibrate)
                    rtl.compile()
                    _, prof_rtl = rtl.predict(frame, profile=True)
                    print(row(name, "RTL", prof_rtl, config, mem), flush=True)
                    rtl.close()
        net.config = base


if __name__ == "__main__":
    main()
