"""DDR bytes per frame by kind, frames/s and MAC utilization of ONNX zoo networks on a preset (the estimate).

Bytes are decoded from the compiled program (LOAD by target buffer, STORE, FC weight stream, instruction fetch),
as the RTL's DMA beat counters would count them. Calibration (the slow part) uses ``--frames`` standard-normal
frames (seed 0); cycle counts do not depend on the values. With ``--cache DIR`` the quantized graph of each network
is pickled there and reused, so a compiler change can be measured before and after on the same graph.

Run: ``nice -n 10 .venv/bin/python bench/ddr_traffic.py [--cache DIR] [--preset zcu102_int8] [model ...]``.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from zoo import zoo_model  # noqa: E402

from dlproc.compiler.network import CompiledNetwork, compile_graph  # noqa: E402
from dlproc.processor.config import INSTRUCTION_BYTES  # noqa: E402
from dlproc.processor.isa import Buffer, InstructionSet, Opcode  # noqa: E402
from dlproc.runtime.estimate import estimate_performance  # noqa: E402
from dlproc.runtime.workflow import Workflow  # noqa: E402

KINDS = ("input", "weight", "param", "store", "fc", "instr")


def ddr_bytes_by_kind(net: CompiledNetwork) -> dict[str, int]:
    """Bytes one frame moves, by kind: input/weight/param loads, stores, fc weight stream, instruction fetch."""
    c = net.config
    isa = InstructionSet(c)
    words = net.instructions()
    out = dict.fromkeys(KINDS, 0)
    for seg in net.segments:
        if seg.kind != "hw":
            continue
        out["instr"] += seg.count * INSTRUCTION_BYTES
        for word in words[seg.start:seg.start + seg.count]:
            ins = isa.decode(word)
            if ins.opcode == Opcode.LOAD:
                kind = {Buffer.INPUT: "input", Buffer.WEIGHT: "weight", Buffer.PARAM: "param"}[Buffer(ins.buffer)]
                out[kind] += ins.n2 * ins.n1 * ins.len0
            elif ins.opcode == Opcode.STORE:
                out["store"] += ins.n2 * ins.n1 * ins.n0 * c.input_entry_bytes
            elif ins.opcode == Opcode.FC:
                out["fc"] += ins.n_out * ins.n_in * c.input_entry_bytes
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=["resnet50", "vgg19", "inception_v1", "squeezenet",
                                                  "bvlc_alexnet"])
    ap.add_argument("--preset", default="zcu102_int8")
    ap.add_argument("--frames", type=int, default=2, help="calibration frames (default 2)")
    ap.add_argument("--cache", type=Path, help="directory for the pickled quantized graphs")
    args = ap.parse_args()
    print(f"preset {args.preset}; MB = 1e6 bytes per frame")
    print(f"{'model':<14} {'frames/s':>9} {'MAC util':>8} " + " ".join(f"{k + ' MB':>10}" for k in KINDS)
          + f" {'total MB':>9} {'instrs':>8}")
    for name in args.models:
        wf = Workflow(zoo_model(name), processor=args.preset, target="ref")
        path = args.cache / f"{name}.{args.preset}.{args.frames}.pkl" if args.cache else None
        if path is not None and path.exists():
            graph = pickle.loads(path.read_bytes())
        else:
            frames = np.random.default_rng(0).standard_normal((args.frames, *wf.input_shape)).astype(np.float32)
            wf.calibrate(frames)
            graph = wf.graph
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(pickle.dumps(graph))
        net = compile_graph(graph, wf.config)
        prof = estimate_performance(net)
        kinds = ddr_bytes_by_kind(net)
        print(f"{name:<14} {prof.fps:>9.1f} {prof.mac_utilization:>8.1%} "
              + " ".join(f"{kinds[k] / 1e6:>10.2f}" for k in KINDS)
              + f" {sum(kinds.values()) / 1e6:>9.2f} {net.instr_count:>8,}", flush=True)


if __name__ == "__main__":
    main()
