"""The ``dlproc`` command line: thin glue over the Python API.

Subcommands: ``presets``, ``compile``, ``run``, ``quantize``, ``compare``, ``generate``, ``estimate``, ``resources``,
``timing``, ``build``, ``board check``.
Errors a user can act on (bad model, bad configuration, wrong shapes, processor errors) print one line and exit
with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

__all__ = ["main"]


def _config(spec: str):
    from dlproc.processor.config import ProcessorConfig

    return ProcessorConfig.load(spec)


def _load_array(path: str, what: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file {p} does not exist")
    if p.suffix == ".npz":
        data = np.load(p)
        return data[data.files[0]]
    return np.load(p)


def cmd_presets(args: argparse.Namespace) -> int:
    from dlproc.processor.config import PRESETS, ProcessorConfig

    for name in PRESETS:
        print(f"{name:<14} {ProcessorConfig.preset(name).summary()}")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from dlproc.runtime.workflow import Workflow

    wf = Workflow(args.network, processor=args.processor)
    if wf.config.dtype == "int8":
        if not args.calibration:
            raise ValueError("the int8 processor needs calibration data: pass --calibration DATA.npy "
                             "(float32 [N, *input shape])")
        report = wf.calibrate(_load_array(args.calibration, "calibration"), method=args.method)
        if args.verbose:
            print(report)
    compiled = wf.compile()
    print(compiled.report())
    out = compiled.save(args.output)
    print(f"\nbundle written to {out}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from dlproc.compiler.network import CompiledNetwork
    from dlproc.runtime.driver import Driver, layer_outputs
    from dlproc.runtime.profile import profile_from_runs
    from dlproc.runtime.workflow import open_device

    net = CompiledNetwork.load(args.bundle)
    x = _load_array(args.input, "input").astype(np.float32)
    shape = tuple(net.tensors[net.inputs[0]]["onnx_shape"][1:])
    if x.shape == shape:
        x = x[None]
    if tuple(x.shape[1:]) != shape:
        raise ValueError(f"input has shape {x.shape}; expected [N, {', '.join(map(str, shape))}]")
    options = _fpga_options(args)
    if args.trace:
        if args.target != "sim":
            raise ValueError("--trace records the RTL's waveform: use it with --target sim")
        options["trace"] = args.trace
    wanted = layer_outputs(net) if args.activations else {}
    acts: list[dict[str, np.ndarray]] = []
    device = open_device(net.config, args.target, **options)
    try:
        driver = Driver(device, timeout_s=args.timeout)
        driver.load(net)
        outs, runs, host_seconds = [], [], []
        for frame in x:
            result, seg_runs, _ = driver.infer(frame)
            outs.append(result)
            runs.append(seg_runs)
            host_seconds.append(dict(driver.host_seconds))
            if wanted:
                acts.append(driver.read_activations(wanted))
    finally:
        device.close()
    if args.activations:
        _write_activations(args.activations, wanted, acts)
    ys = {name: np.concatenate([o[name] for o in outs]) for name in net.outputs}
    for name, y in ys.items():
        print(f"{name}: shape {y.shape}")
        if y.ndim == 2:
            print(f"  argmax per frame: {y.argmax(axis=1).tolist()}")
    if args.output:
        np.savez(args.output, **ys)
        print(f"outputs written to {args.output}")
    if args.profile or args.json or args.csv or args.perfetto or args.roofline:
        if args.target == "ref":
            print("(the 'ref' target has no timing: use --target sim, or `dlproc estimate`)")
        else:
            prof = profile_from_runs(net, runs, host_seconds=host_seconds, target=args.target)
            if args.profile:
                print(prof)
            _export_profile(prof, args)
    return 0


def _write_activations(directory: str, wanted: dict[str, str], acts: list[dict[str, np.ndarray]]) -> None:
    """One ``.npy`` per layer (float32 ``[N, ...]``, ONNX layout) and ``index.json`` mapping files to layers."""
    import json
    import re

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    index, used = [], set()
    for i, (key, tensor) in enumerate(wanted.items()):
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_.") or f"layer{i}"
        if stem in used:
            stem = f"{stem}_{i}"
        used.add(stem)
        value = np.concatenate([a[key] for a in acts], axis=0)
        np.save(out / f"{stem}.npy", value)
        index.append({"file": f"{stem}.npy", "layer": key, "tensor": tensor, "shape": list(value.shape)})
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    print(f"{len(index)} layer outputs written to {out} (index.json names the layer of each file)")


def _export_profile(prof, args: argparse.Namespace) -> None:
    """Write the profile where ``--json``, ``--csv`` and ``--perfetto`` ask."""
    for path, write, what in ((args.json, prof.to_json, "profile (JSON)"), (args.csv, prof.to_csv, "profile (CSV)"),
                              (args.perfetto, prof.save_trace, "trace (open in ui.perfetto.dev)"),
                              (args.roofline, prof.plot_roofline, "roofline plot")):
        if path:
            write(path)
            print(f"{what} written to {path}")


def _add_profile_exports(s: argparse.ArgumentParser) -> None:
    s.add_argument("--json", metavar="FILE", help="write the profile as JSON (schema in docs/profile.md)")
    s.add_argument("--csv", metavar="FILE", help="write the profile as CSV, one row per layer")
    s.add_argument("--perfetto", metavar="FILE", help="write a Chrome/Perfetto trace of one frame (JSON)")
    s.add_argument("--roofline", metavar="FILE", help="draw the layers on the processor's roofline (PNG)")


def cmd_compare(args: argparse.Namespace) -> int:
    from dlproc.runtime.workflow import Workflow

    wf = Workflow(args.network, processor=args.processor, target=args.target, timeout_s=args.timeout)
    if wf.config.dtype == "int8":
        if not args.calibration and not wf.imported_scales:
            raise ValueError("the int8 processor needs calibration data: pass --calibration DATA.npy "
                             "(float32 [N, *input shape])")
        if args.calibration:
            wf.calibrate(_load_array(args.calibration, "calibration"), method=args.method)
    try:
        result = wf.compare(_load_array(args.input, "input"), args.layers or None)
    finally:
        wf.close()
    print(result)
    if args.json:
        result.to_json(args.json)
        print(f"comparison written to {args.json}")
    return 0


def _fpga_options(args: argparse.Namespace) -> dict:
    """The ``FpgaDevice`` options of ``--uio`` (only with ``--target fpga``)."""
    if getattr(args, "uio", None) is None:
        return {}
    if args.target != "fpga":
        raise ValueError("--uio names the board's UIO device: use it with --target fpga")
    return {"uio": args.uio}


def _add_uio(parser: argparse.ArgumentParser) -> None:
    from dlproc.boards.zynqmp import UIO_NAME

    parser.add_argument("--uio", metavar="NAME", help=f"target fpga: the processor's UIO device, by name (default "
                        f"{UIO_NAME!r}, the name the overlay gives it) or path (/dev/uioN)")


def cmd_generate(args: argparse.Namespace) -> int:
    from dlproc.processor.generate import generate

    paths = generate(_config(args.processor), args.output)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    from dlproc.runtime.workflow import Workflow

    wf = Workflow(args.network, processor=args.processor)
    if wf.config.dtype == "int8":
        if args.calibration:
            wf.calibrate(_load_array(args.calibration, "calibration"))
        else:
            shape = wf.input_shape
            rng = np.random.default_rng(0)
            wf.calibrate(rng.standard_normal((4, *shape)).astype(np.float32))
            print("(no --calibration given: quantized with random data; timing does not depend on values)")
    prof = wf.estimate_performance()
    print(prof)
    _export_profile(prof, args)
    return 0


def cmd_resources(args: argparse.Namespace) -> int:
    from dlproc.boards.resources import estimate_resources

    print(estimate_resources(_config(args.processor), board=args.board, synthesize=not args.model))
    return 0


def cmd_timing(args: argparse.Namespace) -> int:
    """``dlproc timing``: worst paths and estimated fmax per module; exit status 1 when ``clock_mhz`` fails."""
    from dlproc.boards.timing import check_timing

    config = _config(args.processor)
    report = check_timing(config, args.module or None,
                          progress=lambda m: print(f"  synthesizing / analysing {m} ...", file=sys.stderr, flush=True))
    print(report.format(paths_per_module=args.paths))
    return 0 if report.passes else 1


def _add_timing_parser(sub) -> None:
    s = sub.add_parser("timing", help="estimate register-to-register delays and fmax (Yosys + UltraScale+ model)")
    s.add_argument("--processor", default="zcu102_int8", help="preset name or JSON file (default zcu102_int8)")
    s.add_argument("--module", action="append", help="analyse only this module (repeatable): csr, fetch, dispatch, "
                   "rd_arb, dma, engine, fc (fp32: also fpadd, fpmul)")
    s.add_argument("--paths", type=int, default=3, help="worst paths shown per module (default 3)")
    s.set_defaults(func=cmd_timing)


def cmd_build(args: argparse.Namespace) -> int:
    from dlproc.boards.vivado import write_build_plan

    plan = write_build_plan(_config(args.processor), args.output, board=args.board)
    for f in plan.files:
        print(f"  {f}")
    if plan.ran:
        print("Vivado ran.")
    else:
        print(f"Vivado is not on PATH; to build the bitstream run:\n  cd {args.output} && {plan.command}")
    return 0


def cmd_board_check(args: argparse.Namespace) -> int:
    """``dlproc board check``: each step of the board bring-up, one PASS/FAIL line each; exit 1 unless all pass."""
    from dlproc.boards.zynqmp import UIO_NAME
    from dlproc.compiler.network import CompiledNetwork
    from dlproc.runtime.board_check import BoardPaths, board_check

    network = CompiledNetwork.load(args.bundle) if args.bundle else None
    config = network.config if network is not None else _config(args.processor)
    paths = BoardPaths.under(args.root) if args.root else BoardPaths()
    checks = board_check(config, paths=paths, uio=args.uio or UIO_NAME, udmabuf=args.udmabuf,
                         network=network, interrupt=not args.poll)
    failed = [c for c in checks if not c.ok]
    print(f"board check: {len(checks) - len(failed)} of {len(checks)} steps passed"
          + ("" if not failed else f"; first problem: {failed[0].name}"))
    return 0 if not failed else 1


def cmd_quantize(args: argparse.Namespace) -> int:
    from dlproc.runtime.workflow import Workflow

    wf = Workflow(args.network, processor=args.processor, target=args.target, device_options=_fpga_options(args))
    if args.calibration:
        report = wf.calibrate(_load_array(args.calibration, "calibration"), method=args.method,
                              percentile=args.percentile, per_channel=not args.per_tensor, scale_mode=args.scale_mode)
    elif wf.imported_scales:  # a QDQ model brings its scales
        from dlproc.compiler.report import QuantizationReport

        wf.compile()
        report = QuantizationReport(wf.graph, None, method="imported from the QDQ model")
    else:
        raise ValueError("quantizing needs calibration data: pass --calibration DATA.npy (float32 [N, *input shape]);"
                         " only a QDQ model brings its own scales")
    print(report)
    if args.report and hasattr(report, "plot_histograms"):
        paths = report.plot_histograms(args.report)
        print(f"{len(paths)} histograms written to {args.report}")
    if args.qdq:
        wf.export_qdq(args.qdq)
        print(f"QDQ model written to {args.qdq}")
    if args.validate:
        labels = _load_array(args.labels, "labels") if args.labels else None
        print(wf.validate(_load_array(args.validate, "validation"), labels))
    wf.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dlproc`` command."""
    p = argparse.ArgumentParser(prog="dlproc", description="Open deep learning processor generator for FPGAs: "
                                "compile ONNX networks, run them on the golden model, the RTL or the board.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("presets", help="list the processor presets")
    s.set_defaults(func=cmd_presets)

    s = sub.add_parser("compile", help="compile an ONNX network into a bundle")
    s.add_argument("network", help="ONNX model")
    s.add_argument("--processor", default="zcu102_int8", help="preset name or JSON file (default zcu102_int8)")
    s.add_argument("--calibration", help="calibration inputs, .npy float32 [N, *input shape]")
    s.add_argument("--method", default="minmax", help="activation range method (minmax, percentile, entropy)")
    s.add_argument("-o", "--output", required=True, help="bundle directory to write")
    s.add_argument("-v", "--verbose", action="store_true", help="print the quantization report")
    s.set_defaults(func=cmd_compile)

    s = sub.add_parser("run", help="run a bundle on a target")
    s.add_argument("bundle", help="bundle directory")
    s.add_argument("--input", required=True, help="inputs, .npy float32 [N, *input shape]")
    s.add_argument("--target", default="ref", choices=("ref", "sim", "fpga"))
    s.add_argument("--profile", action="store_true", help="print the hardware profile (sim, fpga)")
    s.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the processor per segment")
    s.add_argument("-o", "--output", help="write outputs to this .npz")
    s.add_argument("--trace", help="write an FST waveform of the RTL to this file (target sim)")
    _add_uio(s)
    s.add_argument("--activations", metavar="DIR", help="write every layer's output (float32, ONNX layout, "
                   "dequantized) as one .npy per layer to DIR")
    _add_profile_exports(s)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("quantize", help="calibrate, report, validate and export the int8 quantization of a network")
    s.add_argument("network", help="ONNX model (a QDQ model brings its own scales)")
    s.add_argument("--processor", default="zcu102_int8", help="preset name or JSON file (default zcu102_int8)")
    s.add_argument("--calibration", help="calibration inputs, .npy float32 [N, *input shape]")
    s.add_argument("--method", default="minmax", choices=("minmax", "percentile", "entropy"),
                   help="activation range method (default minmax)")
    s.add_argument("--percentile", type=float, default=99.99, help="percentile of |x| for --method percentile")
    s.add_argument("--per-tensor", action="store_true", help="one weight scale per layer instead of per channel")
    s.add_argument("--scale-mode", default="fixed", choices=("fixed", "pow2"),
                   help="fixed-point multipliers, or power-of-two scales (shift-only requantization)")
    s.add_argument("--report", help="directory for the per-layer histogram PNGs")
    s.add_argument("--qdq", help="also export a QDQ ONNX model to this path")
    s.add_argument("--validate", help="validation inputs, .npy float32: compare int8 with float")
    s.add_argument("--labels", help="class labels of the validation inputs, .npy [N] (top-1 accuracy)")
    s.add_argument("--target", default="ref", choices=("ref", "sim", "fpga"), help="where --validate runs int8")
    _add_uio(s)
    s.set_defaults(func=cmd_quantize)

    s = sub.add_parser("compare", help="per-layer error of the processor against the float network (where int8 "
                       "loses accuracy)")
    s.add_argument("network", help="ONNX model")
    s.add_argument("--processor", default="zcu102_int8", help="preset name or JSON file (default zcu102_int8)")
    s.add_argument("--calibration", help="calibration inputs, .npy float32 [N, *input shape]")
    s.add_argument("--method", default="minmax", choices=("minmax", "percentile", "entropy"),
                   help="activation range method (default minmax)")
    s.add_argument("--input", required=True, help="inputs to compare on, .npy float32 [N, *input shape]")
    s.add_argument("--target", default="ref", choices=("ref", "sim", "fpga"), help="where the processor runs")
    s.add_argument("--layers", nargs="+", metavar="LAYER", help="only these layers (names or ONNX tensor names)")
    s.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the processor per segment")
    s.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("generate", help="write the processor's Verilog and RTLIL")
    s.add_argument("--processor", default="zcu102_int8")
    s.add_argument("-o", "--output", required=True)
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("estimate", help="estimate per-layer cycles, latency and frames/s without simulating")
    s.add_argument("network")
    s.add_argument("--processor", default="zcu102_int8")
    s.add_argument("--calibration")
    _add_profile_exports(s)
    s.set_defaults(func=cmd_estimate)

    s = sub.add_parser("resources", help="estimate LUT/FF/DSP/BRAM of a processor configuration")
    s.add_argument("--processor", default="zcu102_int8")
    s.add_argument("--board", default="zcu102")
    s.add_argument("--model", action="store_true", help="use the analytical model instead of synthesis")
    s.set_defaults(func=cmd_resources)

    from dlproc.boards.zynqmp import UDMABUF_NAME

    s = sub.add_parser("board", help="on the board: check every step from the loaded bitstream to a network")
    board = s.add_subparsers(dest="board_command", required=True, metavar="BOARD_COMMAND")
    c = board.add_parser("check", help="kernel arguments, FPGA manager, UIO, interrupt, u-dma-buf, PL clock, "
                         "registers, a one-instruction program and a tiny network against the golden model")
    c.add_argument("--bundle", help="check against this compiled bundle and run it as the network")
    c.add_argument("--processor", default="zcu102_int8",
                   help="configuration of the bitstream (preset or the build's config.json) without --bundle")
    _add_uio(c)
    c.add_argument("--udmabuf", default=UDMABUF_NAME, help=f"u-dma-buf device name (default {UDMABUF_NAME})")
    c.add_argument("--poll", action="store_true", help="poll STATUS instead of waiting for the interrupt")
    c.add_argument("--root", help=argparse.SUPPRESS)   # a copied or fake /sys, /proc, /dev tree (tests)
    c.set_defaults(func=cmd_board_check, target="fpga")
    _add_timing_parser(sub)

    s = sub.add_parser("build", help="write (and run, if Vivado is available) the bitstream build plan")
    s.add_argument("--board", default="zcu102")
    s.add_argument("--processor", default="zcu102_int8")
    s.add_argument("-o", "--output", required=True)
    s.set_defaults(func=cmd_build)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dlproc`` console script."""
    from dlproc.compiler.errors import CompileError
    from dlproc.compiler.network import BundleError
    from dlproc.processor.config import ConfigError
    from dlproc.runtime.driver import DeviceMismatch, ProcessorError, ProcessorTimeout

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CompileError, ConfigError, BundleError, ProcessorError, ProcessorTimeout, DeviceMismatch,
            FileNotFoundError, ValueError) as exc:
        print(f"dlproc {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
