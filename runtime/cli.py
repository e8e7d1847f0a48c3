"""The ``dlproc`` command line: thin glue over the Python API.

Subcommands: ``presets``, ``compile``, ``run``, ``quantize``, ``compare``, ``generate``, ``estimate``, ``resources``,
``timing``, ``build``, ``board check``, ``explore``.
Errors a user can act on (bad model, bad configuration, bad data, wrong shapes, an output that exists, processor
errors) print one line ``dlproc COMMAND: error: ...`` and exit with status 2; an unexpected exception prints one
line and exits with 1; Ctrl-C exits with 130 and a closed pipe (``| head``) with 141, quietly. ``-v`` or
``DLPROC_DEBUG=1`` adds the traceback (``docs/errors.md``). Every command that writes refuses an existing output
unless given ``--force``, checks the output location before it starts, and writes whole outputs or nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

import numpy as np

from dlproc.errors import DlprocError, InputDataError
from dlproc.outputs import atomic_dir, atomic_file, check_output

__all__ = ["main", "EXIT_ERROR", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_BROKEN_PIPE"]

EXIT_ERROR = 2          #: a refusal of bad input (one line on stderr); also argparse's usage errors
EXIT_INTERNAL = 1       #: an unexpected exception, i.e. a bug (one line; the traceback with -v)
EXIT_INTERRUPTED = 130  #: Ctrl-C
EXIT_BROKEN_PIPE = 141  #: the reader of stdout went away (``dlproc ... | head``)


def _config(spec: str):
    from dlproc.processor.config import ProcessorConfig

    return ProcessorConfig.load(spec)


def _load_array(path: str, what: str, scale: float | None = None) -> np.ndarray:
    """Read a ``.npy`` or single-array ``.npz`` file; integer data only with a stated ``scale`` (divided out)."""
    p = Path(path)
    if p.is_dir():
        raise InputDataError(f"{what} file {p} is a directory; give a .npy or .npz file")
    if not p.is_file():
        raise InputDataError(f"{what} file {p} does not exist")
    try:
        data = np.load(p, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            names = list(data.files)
            if len(names) != 1:
                raise InputDataError(f"{what} file {p} holds {len(names)} arrays {names[:8]}; give a .npz with "
                                     "exactly one array, or a .npy")
            data = data[names[0]]
    except InputDataError:
        raise
    except Exception as exc:  # numpy raises ValueError, OSError, EOFError, zipfile errors, pickle refusals
        first = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise InputDataError(f"{what} file {p} ({p.stat().st_size:,} bytes) is not a readable .npy/.npz array "
                             f"({first})") from None
    arr = np.asarray(data)
    if arr.size == 0:
        raise InputDataError(f"{what} file {p} holds an empty array of shape {arr.shape}; give at least one frame")
    if scale is not None:
        if not (np.isfinite(scale) and scale > 0):
            raise InputDataError(f"--input-scale {scale} is not accepted; give a positive number (e.g. 255)")
        if arr.dtype.kind not in "iuf":
            raise InputDataError(f"{what} file {p} holds {arr.dtype} values; --input-scale needs numbers")
        return arr.astype(np.float32) / np.float32(scale)
    if arr.dtype.kind in "iu":
        raise InputDataError(f"{what} file {p} holds {arr.dtype} values ({arr.min()}..{arr.max()}): integer images "
                             "need their scale; pass --input-scale S to divide them by S (e.g. 255 for 8-bit "
                             "images), or save float32 data")
    if arr.dtype.kind != "f":
        raise InputDataError(f"{what} file {p} holds {arr.dtype} values; give float32 numbers")
    return arr


def _labels(path: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise InputDataError(f"labels file {p} does not exist" + (" (it is a directory)" if p.is_dir() else ""))
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as exc:
        raise InputDataError(f"labels file {p} is not a readable .npy array ({type(exc).__name__})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iu":
        raise InputDataError(f"labels file {p} must hold integer class indices [N]")
    return arr


def _no_hardware_note(net) -> str | None:
    """A note for a network that runs entirely on the host (no frames/s to report), else None."""
    if any(seg.kind == "hw" for seg in net.segments):
        return None
    return (f"note: every layer of {net.name!r} runs on the host; the processor does no work, so there is no "
            "frames/s or latency to report")


def cmd_presets(args: argparse.Namespace) -> int:
    from dlproc.processor.config import PRESETS, ProcessorConfig

    for name in PRESETS:
        print(f"{name:<14} {ProcessorConfig.preset(name).summary()}")
    return 0


def _calibrate(wf, args: argparse.Namespace):
    return wf.calibrate(_load_array(args.calibration, "calibration", args.input_scale), method=args.method,
                        percentile=args.percentile, per_channel=not args.per_tensor, scale_mode=args.scale_mode)


def cmd_compile(args: argparse.Namespace) -> int:
    from dlproc.runtime.workflow import Workflow

    check_output(args.output, overwrite=args.force, kind="dir", marker="manifest.json", what="bundle directory")
    wf = Workflow(args.network, processor=args.processor)
    if wf.config.dtype == "int8":
        if not args.calibration:
            raise InputDataError("the int8 processor needs calibration data: pass --calibration DATA.npy "
                                 "(float32 [N, *input shape])")
        report = _calibrate(wf, args)
        if args.verbose:
            print(report)
    elif args.calibration:
        print(f"(the {wf.config.dtype} processor computes in floating point: --calibration is not used)")
    compiled = wf.compile()
    print(compiled.report())
    note = _no_hardware_note(compiled)
    if note:
        print(note)
    out = compiled.save(args.output, overwrite=args.force)
    print(f"\nbundle written to {out}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from dlproc.compiler.network import CompiledNetwork
    from dlproc.runtime.driver import Driver, layer_outputs
    from dlproc.runtime.profile import profile_from_runs
    from dlproc.runtime.workflow import check_frames, open_device

    output = None
    if args.output:
        output = Path(args.output if args.output.endswith(".npz") else args.output + ".npz")
        check_output(output, overwrite=args.force, what="output file")
    if args.trace:
        if args.target != "sim":
            raise InputDataError("--trace records the RTL's waveform: use it with --target sim")
        check_output(args.trace, overwrite=args.force, what="waveform file")
    net = CompiledNetwork.load(args.bundle, config=_config(args.processor) if args.processor else None)
    shape = tuple(net.tensors[net.inputs[0]]["onnx_shape"][1:])
    x = check_frames(_load_array(args.input, "input", args.input_scale), shape, "input", input_name=net.inputs[0])
    options = _fpga_options(args)
    if args.trace:
        options["trace"] = args.trace
    if args.activations:
        check_output(args.activations, overwrite=args.force, kind="dir", marker="index.json",
                     what="activations directory")
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
    if output is not None:
        with atomic_file(output, overwrite=args.force, what="output file") as tmp:
            np.savez(tmp, **ys)
        print(f"outputs written to {output}")
    if args.profile or args.json or args.csv or args.perfetto or args.roofline:
        note = _no_hardware_note(net)
        if note:
            print(note)
        elif args.target == "ref":
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
            _calibrate(wf, args)
    try:
        result = wf.compare(_load_array(args.input, "input", args.input_scale), args.layers or None)
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
    from dlproc.progress import phase

    config = _config(args.processor)
    check_output(args.output, overwrite=args.force, kind="dir", marker="config.json", what="HDL directory")
    with phase(f"elaborating [{config.hardware_hash}] and writing its Verilog and RTLIL to {args.output}"):
        paths = generate(config, args.output, overwrite=args.force)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    from dlproc.runtime.workflow import Workflow

    wf = Workflow(args.network, processor=args.processor)
    if wf.config.dtype == "int8":
        if args.calibration:
            _calibrate(wf, args)
        else:
            shape = wf.input_shape
            rng = np.random.default_rng(0)
            wf.calibrate(rng.standard_normal((4, *shape)).astype(np.float32))
            print("(no --calibration given: quantized with random data; timing does not depend on values)")
    compiled = wf.compile()
    note = _no_hardware_note(compiled)
    if note:
        print(note)
        return 0
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
    s.add_argument("-v", "--verbose", action="store_true",
                   help="more output, and a traceback with errors (also DLPROC_DEBUG=1)")
    s.set_defaults(func=cmd_timing)


def cmd_build(args: argparse.Namespace) -> int:
    from dlproc.boards.vivado import BOARD_DESIGNS, write_build_plan

    config = _config(args.processor)
    if args.board not in BOARD_DESIGNS:
        raise InputDataError(f"no Vivado block design for board {args.board!r}; boards are {', '.join(BOARD_DESIGNS)}")
    check_output(args.output, overwrite=args.force, kind="dir", marker="config.json", what="build directory")
    plan = write_build_plan(config, args.output, board=args.board, overwrite=args.force)
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

    if args.report:
        check_output(args.report, overwrite=args.force, kind="dir", what="histogram directory")
    if args.qdq:
        check_output(args.qdq, overwrite=args.force, what="QDQ model")
    if args.labels and not args.validate:
        raise InputDataError("--labels are the classes of the --validate inputs: pass --validate DATA.npy too")
    validation = _load_array(args.validate, "validation", args.input_scale) if args.validate else None
    labels = _labels(args.labels) if args.labels else None
    wf = Workflow(args.network, processor=args.processor, target=args.target, device_options=_fpga_options(args))
    if wf.config.dtype != "int8":
        raise InputDataError(f"the processor {args.processor!r} computes in {wf.config.dtype}: there is nothing to "
                             "quantize; give an int8 processor (e.g. --processor tiny_int8)")
    if args.calibration:
        report = _calibrate(wf, args)
    elif wf.imported_scales:  # a QDQ model brings its scales
        from dlproc.compiler.report import QuantizationReport

        wf.compile()
        report = QuantizationReport(wf.graph, None, method="imported from the QDQ model")
    else:
        raise InputDataError("quantizing needs calibration data: pass --calibration DATA.npy (float32 "
                             "[N, *input shape]); only a QDQ model brings its own scales")
    print(report)
    if args.report and hasattr(report, "plot_histograms"):
        with atomic_dir(args.report, overwrite=args.force, what="histogram directory") as tmp:
            paths = report.plot_histograms(tmp)
        print(f"{len(paths)} histograms written to {args.report}")
    if args.qdq:
        wf.export_qdq(args.qdq, overwrite=args.force)
        print(f"QDQ model written to {args.qdq}")
    if validation is not None:
        print(wf.validate(validation, labels))
    wf.close()
    return 0


def cmd_explore(args: argparse.Namespace) -> int:
    """``dlproc explore``: the smallest configuration reaching ``--fps`` on every network; table, files, plot."""
    import json

    from dlproc.runtime.explore import DEFAULT_SPACE, explore

    space = dict(DEFAULT_SPACE)
    if args.space:
        text = Path(args.space).read_text() if Path(args.space).is_file() else args.space
        try:
            given = json.loads(text)
        except json.JSONDecodeError:
            given = None
        if not isinstance(given, dict) or not all(isinstance(v, list) and v for v in given.values()):
            raise ValueError(f"--space {args.space!r} is not a JSON object of field: [values] (text or file)")
        space.update({k: tuple(v) for k, v in given.items()})
    try:
        result = explore(args.networks, fps=args.fps, board=args.board, dtype=args.dtype, objective=args.objective,
                         margin=args.margin, base=args.base, space=space, workers=args.workers, address=args.address,
                         verify=args.verify, synthesize=args.synthesize, progress=True, timeout_s=args.timeout)
    except ImportError as exc:  # Ray missing: say how to get it, or to run in-process
        print(f"dlproc explore: error: {exc}", file=sys.stderr)
        return 2
    print(result.table())
    print()
    print(result.summary())
    paths = result.write(args.output)
    print("\nwritten: " + ", ".join(str(p) for p in paths.values()))
    if "processor" in paths:
        print(f"use it with: dlproc compile NET --processor {paths['processor']} ... / dlproc build --processor "
              f"{paths['processor']} ...")
    return 0


def _add_explore_parser(sub) -> None:
    from dlproc.runtime.explore import OBJECTIVES

    s = sub.add_parser("explore", help="search the processor configurations for the smallest reaching a frame rate")
    s.add_argument("networks", nargs="+", metavar="NET", help="ONNX models (the target holds for every one)")
    s.add_argument("--fps", type=float, required=True, help="target frames/s")
    s.add_argument("--board", default="zcu102",
                   help="zcu102, zcu104, kv260 (Kria K26) or a budget custom:dsp=N,lut=N,bram=N (default zcu102)")
    s.add_argument("--dtype", default="int8", choices=("int8", "fp32"))
    s.add_argument("--objective", default="dsp", choices=OBJECTIVES, help="what 'smallest' means (default dsp)")
    s.add_argument("--margin", type=float, default=0.10, help="required headroom over --fps (default 0.10)")
    s.add_argument("--base", help="preset or JSON giving the fields that are not swept (default zcu102_<dtype>)")
    s.add_argument("--space", help="JSON object (text or file) of field: [values] replacing the default sweep of "
                   "those fields, e.g. '{\"conv_ic_lanes\": [8, 16]}'")
    s.add_argument("--verify", type=int, default=0, metavar="K",
                   help="run the K best on the RTL (a Verilator build each) and report measured frames/s")
    s.add_argument("--synthesize", type=int, default=0, metavar="K", help="Yosys resource synthesis of the K best")
    s.add_argument("--workers", type=int, help="CPUs of the local Ray (default: all cores; 0: no Ray, in-process)")
    s.add_argument("--address", help="a Ray cluster to run on (default: RAY_ADDRESS, else a local Ray)")
    s.add_argument("--timeout", type=float, help="seconds to wait for the sweep's tasks")
    s.add_argument("-o", "--output", default="explore", help="directory for points.csv, explore.json, pareto.png, "
                   "processor.json (default ./explore)")
    s.add_argument("-v", "--verbose", action="store_true",
                   help="more output, and a traceback with errors (also DLPROC_DEBUG=1)")
    s.set_defaults(func=cmd_explore)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def _percentile(text: str) -> float:
    value = _positive_float(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentile in (0, 100]")
    return value


def _quant_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--calibration", help="calibration inputs, .npy float32 [N, *input shape]")
    s.add_argument("--input-scale", type=_positive_float, metavar="S",
                   help="divide the input data by S (required for integer images, e.g. 255 for uint8)")
    s.add_argument("--method", default="minmax", choices=("minmax", "percentile", "entropy"),
                   help="activation range method (default minmax)")
    s.add_argument("--percentile", type=_percentile, default=99.99, help="percentile of |x| for --method percentile")
    s.add_argument("--per-tensor", action="store_true", help="one weight scale per layer instead of per channel")
    s.add_argument("--scale-mode", default="fixed", choices=("fixed", "pow2"),
                   help="fixed-point multipliers, or power-of-two scales (shift-only requantization)")


def _force(s: argparse.ArgumentParser) -> None:
    s.add_argument("--force", action="store_true", help="replace existing outputs (a previous output of the same "
                   "kind only; never an unrelated directory)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dlproc`` command."""
    p = argparse.ArgumentParser(prog="dlproc", description="Open deep learning processor generator for FPGAs: "
                                "compile ONNX networks, run them on the golden model, the RTL or the board.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true",
                         help="more output, and a traceback with errors (also DLPROC_DEBUG=1)")

    s = sub.add_parser("presets", help="list the processor presets", parents=[verbose])
    s.set_defaults(func=cmd_presets)

    s = sub.add_parser("compile", help="compile an ONNX network into a bundle", parents=[verbose])
    s.add_argument("network", help="ONNX model")
    s.add_argument("--processor", default="zcu102_int8", help="preset name or JSON file (default zcu102_int8)")
    _quant_options(s)
    s.add_argument("-o", "--output", required=True, help="bundle directory to write")
    _force(s)
    s.set_defaults(func=cmd_compile)

    s = sub.add_parser("run", help="run a bundle on a target", parents=[verbose])
    s.add_argument("bundle", help="bundle directory")
    s.add_argument("--input", required=True, help="inputs, .npy float32 [N, *input shape]")
    s.add_argument("--input-scale", type=_positive_float, metavar="S",
                   help="divide the inputs by S (required for integer images, e.g. 255 for uint8)")
    s.add_argument("--target", default="ref", choices=("ref", "sim", "fpga"))
    s.add_argument("--processor", help="preset or JSON file of the processor that will run the bundle: refuse a "
                   "bundle compiled for another one (the fpga target also checks the processor's ID register)")
    s.add_argument("--profile", action="store_true", help="print the hardware profile (sim, fpga)")
    s.add_argument("--timeout", type=_positive_float, default=120.0,
                   help="seconds to wait for the processor per segment")
    s.add_argument("-o", "--output", help="write outputs to this .npz")
    s.add_argument("--trace", help="write an FST waveform of the RTL to this file (target sim)")
    _add_uio(s)
    s.add_argument("--activations", metavar="DIR", help="write every layer's output (float32, ONNX layout, "
                   "dequantized) as one .npy per layer to DIR")
    _add_profile_exports(s)
    _force(s)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("quantize", help="calibrate, report, validate and export the int8 quantization of a network",
                       parents=[verbose])
    s.add_argument("network", help="ONNX model (a QDQ model brings its own scales)")
    s.add_argument("--processor", default="zcu102_int8", help="preset name or JSON file (default zcu102_int8)")
    _quant_options(s)
    s.add_argument("--report", help="directory for the per-layer histogram PNGs")
    s.add_argument("--qdq", help="also export a QDQ ONNX model to this path")
    s.add_argument("--validate", help="validation inputs, .npy float32: compare int8 with float")
    s.add_argument("--labels", help="class labels of the validation inputs, .npy [N] (top-1 accuracy)")
    s.add_argument("--target", default="ref", choices=("ref", "sim", "fpga"), help="where --validate runs int8")
    _add_uio(s)
    _force(s)
    s.set_defaults(func=cmd_quantize)

    s = sub.add_parser("compare", help="per-layer error of the processor against the float network (where int8 "
                       "loses accuracy)", parents=[verbose])
    s.add_argument("network", help="ONNX model")
    s.add_argument("--processor", default="zcu102_int8", help="preset name or JSON file (default zcu102_int8)")
    _quant_options(s)
    s.add_argument("--input", required=True, help="inputs to compare on, .npy float32 [N, *input shape]")
    s.add_argument("--target", default="ref", choices=("ref", "sim", "fpga"), help="where the processor runs")
    s.add_argument("--layers", nargs="+", metavar="LAYER", help="only these layers (names or ONNX tensor names)")
    s.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the processor per segment")
    s.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("generate", help="write the processor's Verilog and RTLIL", parents=[verbose])
    s.add_argument("--processor", default="zcu102_int8")
    s.add_argument("-o", "--output", required=True)
    _force(s)
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("estimate", help="estimate per-layer cycles, latency and frames/s without simulating",
                       parents=[verbose])
    s.add_argument("network")
    s.add_argument("--processor", default="zcu102_int8")
    _quant_options(s)
    _add_profile_exports(s)
    s.set_defaults(func=cmd_estimate)

    s = sub.add_parser("resources", help="estimate LUT/FF/DSP/BRAM of a processor configuration", parents=[verbose])
    s.add_argument("--processor", default="zcu102_int8")
    s.add_argument("--board", default="zcu102")
    s.add_argument("--model", action="store_true", help="use the analytical model instead of synthesis")
    s.set_defaults(func=cmd_resources)

    from dlproc.boards.zynqmp import UDMABUF_NAME

    s = sub.add_parser("board", help="on the board: check every step from the loaded bitstream to a network",
                       parents=[verbose])
    board = s.add_subparsers(dest="board_command", required=True, metavar="BOARD_COMMAND")
    c = board.add_parser("check", help="kernel arguments, FPGA manager, UIO, interrupt, u-dma-buf, PL clock, "
                         "registers, a one-instruction program and a tiny network against the golden model",
                         parents=[verbose])
    c.add_argument("--bundle", help="check against this compiled bundle and run it as the network")
    c.add_argument("--processor", default="zcu102_int8",
                   help="configuration of the bitstream (preset or the build's config.json) without --bundle")
    _add_uio(c)
    c.add_argument("--udmabuf", default=UDMABUF_NAME, help=f"u-dma-buf device name (default {UDMABUF_NAME})")
    c.add_argument("--poll", action="store_true", help="poll STATUS instead of waiting for the interrupt")
    c.add_argument("--root", help=argparse.SUPPRESS)   # a copied or fake /sys, /proc, /dev tree (tests)
    c.set_defaults(func=cmd_board_check, target="fpga")
    _add_timing_parser(sub)

    s = sub.add_parser("build", help="write (and run, if Vivado is available) the bitstream build plan",
                       parents=[verbose])
    s.add_argument("--board", default="zcu102")
    s.add_argument("--processor", default="zcu102_int8")
    s.add_argument("-o", "--output", required=True)
    _force(s)
    s.set_defaults(func=cmd_build)

    _add_explore_parser(sub)
    return p


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are refusals of the user's input (one line, exit 2), beyond :class:`DlprocError`."""
    from dlproc.boards.vivado import VivadoError
    from dlproc.runtime.driver import DeviceMismatch, ProcessorError, ProcessorTimeout
    from dlproc.runtime.fpga import FpgaSetupError

    return (DlprocError, ProcessorError, ProcessorTimeout, DeviceMismatch, FpgaSetupError, VivadoError, OSError,
            ValueError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, DlprocError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dlproc`` console script: run one command, turn every failure into one line.

    Returns the exit status: 0, :data:`EXIT_ERROR` (2) for refused input, :data:`EXIT_INTERNAL` (1) for an
    unexpected exception, :data:`EXIT_INTERRUPTED` (130) for Ctrl-C, :data:`EXIT_BROKEN_PIPE` (141) when stdout
    was closed.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) and usage errors (2): argparse has printed its message
        return int(exc.code or 0)
    debug = bool(getattr(args, "verbose", False)) or os.environ.get("DLPROC_DEBUG", "") not in ("", "0")
    prefix = f"dlproc {args.command}: "
    try:
        try:
            return args.func(args)
        finally:
            sys.stdout.flush()
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{prefix}interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        try:  # later writes to the closed pipe (at interpreter exit) must not raise again
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        if debug:
            traceback.print_exc()
        if isinstance(exc, _user_errors()):
            print(f"{prefix}error: {_describe(exc)}", file=sys.stderr)
            return EXIT_ERROR
        print(f"{prefix}internal error: {type(exc).__name__}: {_describe(exc)} (a bug in dlproc; run with -v or "
              "DLPROC_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
