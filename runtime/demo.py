"""``make demo``: defect detection on a production line, prototyped on the processor.

The scenario: a factory inspects nuts and bolts with a 120 frames/s camera. An AlexNet-style network classifies
each pre-processed frame as ``ok`` or ``defective``. The engineer

1. runs the float network and its trimmed variant (later convolutions removed) and reads their accuracy and
   parameter memory; on the fp32 processor when that variant is available, otherwise on the host;
2. quantizes both to int8 with calibration images and compiles them for the int8 ZCU102 processor (layer mapping
   and DDR memory map are printed);
3. runs a batch of camera frames on the processor's RTL in simulation (target "sim"), reads the hardware profile
   (per-layer cycles and milliseconds, latency, frames/s at the configured clock) and checks the 120 frames/s
   requirement;
4. compares float and int8 accuracy on held-out images and writes annotated images, a latency chart and a
   report to ``out/demo/``.

Every figure is measured in this run; nothing is copied from elsewhere.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlproc.compiler.errors import CompileError
from dlproc.errors import DlprocError
from dlproc.processor.config import ProcessorConfig
from dlproc.runtime.profile import Profile
from dlproc.runtime.workflow import Workflow

__all__ = ["main", "run_demo", "DemoResult"]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "defect_detection"
REQUIRED_FPS = 120.0
CALIBRATION_SEED = 90210
DEMO_FRAME_SEED = 4242


@dataclass
class Variant:
    """Measured figures of one network variant on one processor."""

    network: str
    precision: str
    processor: str
    parameters: int = 0
    parameter_bytes: int = 0
    accuracy: float | None = None
    accuracy_where: str = ""
    profile: Profile | None = None
    pending: str = ""
    predictions: list[int] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)

    @property
    def fps(self) -> float | None:
        return self.profile.fps if self.profile else None


@dataclass
class DemoResult:
    variants: list[Variant]
    out_dir: Path
    files: list[Path]


def _load_dataset_module():
    path = EXAMPLE / "dataset.py"
    if not path.is_file():
        raise FileNotFoundError(f"the demo needs {path} (run from a clone of the dlproc repository)")
    spec = importlib.util.spec_from_file_location("defect_dataset", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["defect_dataset"] = module
    spec.loader.exec_module(module)
    return module


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _float_accuracy(wf: Workflow, images: np.ndarray, labels: np.ndarray) -> float:
    from dlproc.compiler.float_ref import run_float

    logits = []
    for i in range(0, len(images), 32):
        values = run_float(wf.float_graph, images[i:i + 32])
        logits.append(values[wf.float_graph.outputs[0]].reshape(len(images[i:i + 32]), -1))
    return float((np.concatenate(logits).argmax(axis=1) == labels).mean())


def _params(wf: Workflow) -> int:
    return int(sum(layer.weight.size + (layer.bias.size if layer.bias is not None else 0)
                   for layer in wf.float_graph.layers if layer.weight is not None))


def run_demo(*, processor: str = "zcu102_int8", fp32_processor: str = "zcu102_fp32", frames: int = 8,
             test_images: int = 160, calibration_images: int = 64, out_dir: Path | str = "out/demo",
             target: str = "sim", fp32_target: str = "auto", quiet: bool = False) -> DemoResult:
    """Run the whole demo flow and write its outputs.

    Parameters
    ----------
    processor, fp32_processor : str
        int8 and fp32 processor configurations (presets or JSON files).
    frames : int
        Camera frames run on the processor's RTL (``target``) with the hardware profile.
    test_images : int
        Held-out images for float vs int8 accuracy (int8 accuracy on the golden model, which the test suite
        proves bit-identical to the RTL).
    calibration_images : int
        Images used to calibrate int8 quantization.
    out_dir : path
        Where images, chart and report go.
    target : {"sim", "ref"}
        Where the frames run ("sim" = RTL in Verilator).
    fp32_target : {"auto", "sim", "ref"}
        Where the float networks run on the fp32 processor; "auto" uses its RTL simulator when already built, and
        otherwise its golden model with the performance estimate (building a second ZCU102-sized simulator would
        take the demo past its time budget on a fresh machine).
    """
    say = (lambda *a, **k: None) if quiet else (lambda *a, **k: print(*a, **k, flush=True))
    ds = _load_dataset_module()
    meta = json.loads((EXAMPLE / "models" / "metadata.json").read_text())
    size = meta["input"]["shape"][-1]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    int8_cfg = ProcessorConfig.load(processor)
    say("=" * 100)
    say("dlproc demo: defect detection of nuts and bolts on a production line with a 120 frames/s camera")
    say(f"int8 processor: {int8_cfg.summary()}")
    say("=" * 100)

    t0 = time.time()
    test_x, test_y, _ = ds.generate(test_images, seed=meta["data"]["test_seed"] + 1, size=size)
    calib_x, _, _ = ds.generate(calibration_images, seed=CALIBRATION_SEED, size=size)
    raw_frames, frame_y, frame_meta = ds.generate_frames(frames, seed=DEMO_FRAME_SEED)
    frame_x = np.stack([ds.preprocess(f, size) for f in raw_frames]).astype(np.float32)
    say(f"generated {test_images} held-out images, {calibration_images} calibration images and {frames} camera "
        f"frames ({time.time() - t0:.1f} s)")

    variants: list[Variant] = []
    profiles: dict[str, Profile] = {}
    for key, label in (("defect_full", "full network"), ("defect_trimmed", "trimmed network")):
        model_path = EXAMPLE / "models" / f"{key}.onnx"
        say(f"\n### {label}: {model_path.name}")
        # ---- float
        wf = Workflow(str(model_path), processor=processor, target=target)
        n_params = _params(wf)
        fv = Variant(key, "float32", fp32_processor, parameters=n_params, parameter_bytes=4 * n_params)
        fv.accuracy = _float_accuracy(wf, test_x, test_y)
        fv.accuracy_where = "host (float64 reference)"
        try:
            fcfg = ProcessorConfig.load(fp32_processor)
            fp_target = target
            if target == "sim" and fp32_target == "auto":
                from dlproc.sim.verilator.build import cached_simulator

                fp_target = "sim" if cached_simulator(fcfg) is not None else "ref"
            elif fp32_target != "auto":
                fp_target = fp32_target
            fwf = Workflow(str(model_path), processor=fcfg, target=fp_target)
            fnet = fwf.compile()
            fv.parameter_bytes = fnet.weight_bytes + fnet.param_bytes
            say(fnet.report())
            if fp_target == "sim":
                say(f"\nrunning {frames} camera frames on the fp32 processor (sim)")
                _, prof = fwf.predict(frame_x, profile=True, progress=not quiet)
            else:
                fwf.predict(frame_x)  # the golden model of the fp32 processor (bit-identical to its RTL)
                prof = fwf.estimate_performance()
                prof.notes.append("fp32 timing is the performance estimate (within 5% of the RTL counters in the "
                                  "test suite): its RTL simulator is not built yet; --fp32-target sim builds it")
            fv.profile = prof
            fwf.close()
            say(prof)
        except (CompileError, NotImplementedError, ValueError) as exc:
            fv.pending = f"fp32 processor pending: {exc}"
            say(f"float32 on the {fp32_processor} processor: not available yet ({exc}); float accuracy measured on "
                f"the host, hardware profile pending")
        say(f"float32 top-1 accuracy on {test_images} held-out images: {fv.accuracy:.2%}; parameters {n_params:,} "
            f"({n_params * 4 / 2**20:.2f} MiB as float32)")
        variants.append(fv)
        # ---- int8
        say(f"\nint8: calibrating with {calibration_images} images and compiling for [{int8_cfg.hardware_hash}]")
        wf.calibrate(calib_x)
        net = wf.compile()
        say(net.report())
        iv = Variant(key, "int8", processor, parameters=n_params, parameter_bytes=net.weight_bytes + net.param_bytes)
        say(f"\nrunning {frames} camera frames on the processor ({target})")
        if target == "ref":  # the golden model has no cycle counters: the estimate gives the timing
            logits, prof = wf.predict(frame_x, progress=not quiet), wf.estimate_performance()
        else:
            logits, prof = wf.predict(frame_x, profile=True, progress=not quiet)
        iv.profile = prof
        profiles[f"{key} int8"] = prof
        probs = _softmax(np.asarray(logits).reshape(frames, -1))
        iv.predictions = probs.argmax(axis=1).tolist()
        iv.confidences = probs.max(axis=1).tolist()
        say(prof)
        verdict = "meets" if prof.fps >= REQUIRED_FPS else "does NOT meet"
        say(f"==> {prof.fps:,.1f} frames/s at {int8_cfg.clock_mhz:g} MHz {verdict} the {REQUIRED_FPS:g} frames/s "
            f"requirement")
        ref = Workflow(str(model_path), processor=processor, target="ref")
        ref.graph, ref.compiled = wf.graph, net
        ref_logits = np.asarray(ref.predict(test_x)).reshape(test_images, -1)
        iv.accuracy = float((ref_logits.argmax(axis=1) == test_y).mean())
        iv.accuracy_where = "golden model (bit-identical to the RTL)"
        if target == "sim":
            check = np.asarray(ref.predict(frame_x)).reshape(frames, -1)
            same = np.array_equal(check, np.asarray(logits).reshape(frames, -1))
            say(f"RTL outputs identical to the golden model on the {frames} frames: {same}")
        say(f"int8 top-1 accuracy on {test_images} held-out images: {iv.accuracy:.2%} (float {fv.accuracy:.2%})")
        variants.append(iv)
        ref.close()
        wf.close()
        _annotate(ds, raw_frames, frame_y, frame_meta, iv, out / f"{key}_frames.png")

    files = [out / f"{v}_frames.png" for v in ("defect_full", "defect_trimmed")]
    files.append(_latency_chart(profiles, out / "layer_latency.png"))
    files.append(_write_report(variants, int8_cfg, frames, test_images, out / "report.md"))
    say("\n" + _summary_table(variants))
    say(f"\noutputs: {', '.join(str(f) for f in files)}")
    return DemoResult(variants, out, files)


def _summary_table(variants: list[Variant]) -> str:
    hdr = (f"| {'network':<15} | {'precision':<9} | {'processor':<12} | {'parameter memory':>16} | "
           f"{'accuracy':>8} | {'frames/s':>9} | {'latency ms':>10} | {'>= 120 fps':<10} |")
    lines = [hdr, "|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|"]
    for v in variants:
        est = "*" if v.profile is not None and v.profile.source == "estimate" else ""
        fps = f"{v.fps:,.1f}{est}" if v.fps else "pending"
        lat = f"{v.profile.latency_s * 1e3:.3f}" if v.profile else "pending"
        meets = ("yes" if v.fps >= REQUIRED_FPS else "no") if v.fps else "-"
        acc = f"{v.accuracy:.2%}" if v.accuracy is not None else "-"
        lines.append(f"| {v.network:<15} | {v.precision:<9} | {v.processor:<12} | "
                     f"{v.parameter_bytes / 2**20:>12.2f} MiB | {acc:>8} | {fps:>9} | {lat:>10} | {meets:<10} |")
    return "\n".join(lines)


def _annotate(ds, frames: np.ndarray, labels: np.ndarray, meta: list[dict], v: Variant, path: Path) -> Path:
    from PIL import Image, ImageDraw

    top, left, h, w = ds.ROI
    tiles = []
    for i, frame in enumerate(frames):
        img = Image.fromarray(frame).convert("RGB")
        draw = ImageDraw.Draw(img)
        pred = v.predictions[i]
        ok = pred == int(labels[i])
        colour = (40, 200, 60) if pred == 0 else (230, 40, 40)
        draw.rectangle([left, top, left + w - 1, top + h - 1], outline=colour, width=3)
        text = f"{ds.CLASSES[pred]} {v.confidences[i]:.0%}"
        draw.rectangle([left, top, left + 8 * len(text) + 6, top + 14], fill=colour)
        draw.text((left + 3, top + 1), text, fill=(255, 255, 255))
        truth = f"truth: {ds.CLASSES[int(labels[i])]} ({meta[i].get('part')}, {meta[i].get('defect')})"
        draw.text((4, img.height - 14), truth + ("" if ok else "  MISSED"), fill=(255, 255, 0))
        tiles.append(img)
    cols = min(4, len(tiles))
    rows = -(-len(tiles) // cols)
    sheet = Image.new("RGB", (cols * tiles[0].width, rows * tiles[0].height), (0, 0, 0))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % cols) * tile.width, (i // cols) * tile.height))
    tmp = path.with_suffix(".tmp.png")
    sheet.save(tmp)
    tmp.replace(path)
    return path


def _latency_chart(profiles: dict[str, Profile], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(profiles), 1, figsize=(10, 3.2 * len(profiles)), squeeze=False)
    for ax, (name, prof) in zip(axes[:, 0], profiles.items(), strict=True):
        layers = [layer for layer in prof.layers if layer.target == "hw" and layer.cycles]
        ms = [layer.seconds(prof.clock_mhz) * 1e3 for layer in layers]
        ax.barh([layer.name for layer in layers][::-1], ms[::-1], color="#3070b0")
        ax.set_xlabel(f"latency per frame (ms) at {prof.clock_mhz:g} MHz")
        ax.set_title(f"{name}: {prof.latency_s * 1e3:.3f} ms, {prof.fps:,.1f} frames/s "
                     f"(hardware counters, {prof.frames} frames)")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def _write_report(variants: list[Variant], cfg: ProcessorConfig, frames: int, test_images: int, path: Path) -> Path:
    lines = ["# dlproc demo: defect detection on a production line", "",
             f"Requirement: {REQUIRED_FPS:g} frames/s. int8 processor: {cfg.summary()}.", "",
             _summary_table(variants), "",
             f"- Frames/s and latency: processor hardware counters over {frames} camera frames run on the RTL in "
             "Verilator, at the configuration's clock; figures marked * are the performance estimate (fp32 when "
             "its simulator is not built).",
             f"- Accuracy: {test_images} held-out generated images; float on the host, int8 on the golden model "
             "(bit-identical to the RTL, checked on the frames).",
             "- Parameter memory: bytes of weights and per-channel parameters in the DDR image (int8), or 4 bytes "
             "per float32 parameter.", ""]
    for v in variants:
        if v.pending:
            lines.append(f"- {v.network} {v.precision}: {v.pending}")
    lines += ["", "![per-layer latency](layer_latency.png)", "",
              "![full network on camera frames](defect_full_frames.png)", "",
              "![trimmed network on camera frames](defect_trimmed_frames.png)", ""]
    for v in variants:
        if v.profile is not None:
            lines += [f"## {v.network} {v.precision} profile", "", "```", str(v.profile), "```", ""]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    """Command-line entry of ``python -m dlproc.runtime.demo`` (``make demo``)."""
    p = argparse.ArgumentParser(prog="dlproc-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--processor", default="zcu102_int8")
    p.add_argument("--fp32-processor", default="zcu102_fp32")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--test-images", type=int, default=160)
    p.add_argument("--calibration-images", type=int, default=64)
    p.add_argument("--target", default="sim", choices=("sim", "ref"))
    p.add_argument("--fp32-target", default="auto", choices=("auto", "sim", "ref"))
    p.add_argument("-o", "--out", default="out/demo")
    p.add_argument("--force", action="store_true", help="replace the outputs of a previous demo run in --out")
    args = p.parse_args(argv)
    t = time.time()
    try:
        from dlproc.outputs import check_output

        check_output(args.out, overwrite=args.force, kind="dir", marker="report.md", what="demo output directory")
        run_demo(processor=args.processor, fp32_processor=args.fp32_processor, frames=args.frames,
                 test_images=args.test_images, calibration_images=args.calibration_images, out_dir=args.out,
                 target=args.target, fp32_target=args.fp32_target)
    except KeyboardInterrupt:
        print("dlproc-demo: interrupted", file=sys.stderr)
        return 130
    except (DlprocError, OSError, ValueError) as exc:
        print(f"dlproc-demo: error: {exc}", file=sys.stderr)
        return 2
    print(f"demo finished in {time.time() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
