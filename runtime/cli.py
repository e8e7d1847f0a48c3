"""The ``dlproc`` command line: thin glue over the Python API.

Subcommands: ``presets``, ``compile``, ``run``, ``quantize``, ``generate``, ``estimate``, ``resources``, ``build``.
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
    from dlproc.runtime.driver import Driver
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
    options = {"trace": args.trace} if args.trace else {}
    device = open_device(net.config, args.target, **options)
    try:
        driver = Driver(device, timeout_s=args.timeout)
        driver.load(net)
        outs, runs = [], []
        for frame in x:
            result, seg_runs, _ = driver.infer(frame)
            outs.append(result)
            runs.append(seg_runs)
    finally:
        device.close()
    ys = {name: np.concatenate([o[name] for o in outs]) for name in net.outputs}
    for name, y in ys.items():
        print(f"{name}: shape {y.shape}")
        if y.ndim == 2:
            print(f"  argmax per frame: {y.argmax(axis=1).tolist()}")
    if output is not None:
        with atomic_file(output, overwrite=args.force, what="output file") as tmp:
            np.savez(tmp, **ys)
        print(f"outputs written to {output}")
    if args.profile:
        note = _no_hardware_note(net)
        if note:
            print(note)
        elif args.target == "ref":
            print("(the 'ref' target has no timing: use --target sim, or `dlproc estimate`)")
        else:
            print(profile_from_runs(net, runs))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from dlproc.processor.generate import generate

    config = _config(args.processor)
    check_output(args.output, overwrite=args.force, kind="dir", marker="config.json", what="HDL directory")
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
    print(note if note else wf.estimate_performance())
    return 0


def cmd_resources(args: argparse.Namespace) -> int:
    from dlproc.boards.resources import estimate_resources

    print(estimate_resources(_config(args.processor), board=args.board, synthesize=not args.model))
    return 0


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
    wf = Workflow(args.network, processor=args.processor, target=args.target)
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
    _force(s)
    s.set_defaults(func=cmd_quantize)

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
    s.set_defaults(func=cmd_estimate)

    s = sub.add_parser("resources", help="estimate LUT/FF/DSP/BRAM of a processor configuration", parents=[verbose])
    s.add_argument("--processor", default="zcu102_int8")
    s.add_argument("--board", default="zcu102")
    s.add_argument("--model", action="store_true", help="use the analytical model instead of synthesis")
    s.set_defaults(func=cmd_resources)

    s = sub.add_parser("build", help="write (and run, if Vivado is available) the bitstream build plan",
                       parents=[verbose])
    s.add_argument("--board", default="zcu102")
    s.add_argument("--processor", default="zcu102_int8")
    s.add_argument("-o", "--output", required=True)
    _force(s)
    s.set_defaults(func=cmd_build)
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
