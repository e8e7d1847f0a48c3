"""The user's workflow: calibrate, compile, deploy, predict (with profile) on one of three targets.

Targets:

``"ref"``
    the golden instruction-level model (numpy, bit-exact, no timing),
``"sim"``
    the processor's RTL simulated by Verilator with a DDR model (bit-exact, cycle counts from the hardware),
``"fpga"``
    a processor on the board, through the Linux user-space driver (see ``docs/board.md``).

All three run the same register-level :class:`~dlproc.runtime.driver.Driver`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dlproc.compiler.errors import CompileError, ShapeError
from dlproc.compiler.network import CompiledNetwork, compile_graph
from dlproc.errors import CalibrationError, InputDataError
from dlproc.processor.config import ProcessorConfig
from dlproc.runtime.driver import Driver
from dlproc.runtime.profile import Profile, profile_from_runs

__all__ = ["Workflow", "TARGETS", "check_frames"]

TARGETS = ("ref", "sim", "fpga")


def check_target(config: ProcessorConfig, target: str) -> None:
    """Refuse a configuration the target's hardware cannot run: the nonlinear unit exists only in the golden model
    (target ``"ref"``) so far."""
    if config.has_nonlinear_unit and target != "ref":
        raise ValueError(f"target {target!r} runs the RTL, which has no nonlinear unit yet: a processor with "
                         "has_nonlinear_unit=True runs only on target 'ref'")


def open_device(config: ProcessorConfig, target: str, **options: Any):
    """Open the device of a target (``"ref"``, ``"sim"`` or ``"fpga"``)."""
    check_target(config, target)
    if target == "ref":
        from dlproc.sim.golden import GoldenDevice

        return GoldenDevice(config, **options)
    if target == "sim":
        from dlproc.sim.verilator.device import VerilatorDevice

        return VerilatorDevice(config, **options)
    if target == "fpga":
        from dlproc.runtime.fpga import FpgaDevice

        return FpgaDevice(config, **options)
    raise ValueError(f"unknown target {target!r}; targets are {', '.join(TARGETS)}")


def check_frames(x: Any, shape: tuple[int, ...], what: str, *, input_name: str = "input",
                 error: type[InputDataError] = InputDataError) -> np.ndarray:
    """Check network input frames and return them as float32 ``[N, *shape]``.

    Parameters
    ----------
    x : array_like
        ``[N, *shape]`` or one frame of ``shape``; a floating-point type.
    shape : tuple of int
        The shape of one frame.
    what : str
        The data's name in messages ("input", "calibration data", ...).
    input_name : str
        The network input's name (for messages).
    error : type
        The class raised for NaN/Inf values (:class:`~dlproc.errors.CalibrationError` for calibration data).

    Raises
    ------
    InputDataError
        Integer or non-numeric data (its scale is unknown: divide by it first, or pass ``--input-scale`` on the
        command line), no frames, NaN/Inf values (the message names the first frame holding one).
    ShapeError
        Frames of another shape.
    """
    raw = np.asarray(x)
    if raw.dtype.kind in "iub":
        raise InputDataError(f"{what} holds {raw.dtype} values: integer images need their scale; convert them to "
                             "float32 in the range the network was trained on (e.g. x.astype(np.float32) / 255), or "
                             "on the command line pass --input-scale 255")
    if raw.dtype.kind != "f":
        raise InputDataError(f"{what} holds {raw.dtype} values; the network takes float32 numbers")
    with np.errstate(over="ignore"):
        arr = raw.astype(np.float32)
    if arr.shape == shape:
        arr = arr[None]
    if arr.ndim != len(shape) + 1 or tuple(arr.shape[1:]) != shape:
        raise ShapeError(f"{what} has shape {tuple(np.shape(x))}; expected [N, {', '.join(map(str, shape))}] "
                         f"(input {input_name!r} of the network) or one frame of shape {shape}")
    if arr.shape[0] == 0:
        raise InputDataError(f"{what} holds no frames (shape {tuple(arr.shape)}); give at least one")
    bad = ~np.isfinite(arr).reshape(arr.shape[0], -1)
    if bad.any():
        frame = int(np.flatnonzero(bad.any(axis=1))[0])
        unit = "sample" if issubclass(error, CalibrationError) else "frame"
        raise error(f"{what}: {unit} {frame} holds {int(bad[frame].sum())} NaN/Inf value(s) "
                    f"({int(bad.any(axis=1).sum())} of {arr.shape[0]} {unit}s are affected); only finite values are "
                    "accepted")
    return arr


def _check_model_size(network: Any, config: ProcessorConfig) -> None:
    """Refuse a model whose weights cannot fit the processor's DDR window, before the compiler spends memory on it.

    For a file, an early bound from its size (float32 weights, 4 bytes each, become ``element_bytes`` each); for a
    graph, the count of its initializer elements.
    """
    from dlproc.compiler.errors import ModelError

    window = config.ddr_size
    if isinstance(network, (str, Path)) and Path(network).is_file():
        size = Path(network).stat().st_size
        need = size // 4 * config.element_bytes
        what = f"the file {str(network)!r} ({size / 2**20:,.1f} MiB) holds about {size // 4:,} float32 weights"
    elif hasattr(network, "initializers"):
        count = sum(int(np.asarray(v).size) for v in network.initializers.values())
        need = count * config.element_bytes
        what = f"the network {network.name!r} has {count:,} parameters"
    else:
        return
    if need > window:
        raise ModelError(f"{what}, {need / 2**20:,.1f} MiB as {config.dtype}; the processor's DDR window holds "
                         f"{window / 2**20:,.1f} MiB (ProcessorConfig.ddr_size): it cannot fit")


class Workflow:
    """Take an ONNX network to a processor.

    Parameters
    ----------
    network : str, Path or onnx.ModelProto
        The trained network.
    processor : ProcessorConfig or str
        A configuration, a preset name (``"zcu102_int8"``, ...) or a JSON file.
    target : {"ref", "sim", "fpga"}
        Where :meth:`predict` runs.
    timeout_s : float
        Longest wait for the processor to finish one hardware segment.
    device_options : dict, optional
        Passed to the target's device (e.g. ``trace="run.fst"`` for "sim", ``dma_buffer="/dev/udmabuf1"`` for
        "fpga").
    uio : str, optional
        Target "fpga": the processor's UIO device, by name (default ``"dlproc"``, the name the overlay gives it,
        looked up in ``/sys/class/uio``) or path (``"/dev/uio1"``). Same as ``device_options={"uio": ...}``.

    Examples
    --------
    >>> wf = Workflow("net.onnx", processor="zcu102_int8", target="sim")    # doctest: +SKIP
    >>> wf.calibrate(images[:64])
    >>> print(wf.compile())
    >>> y, profile = wf.predict(images[64:72], profile=True)
    """

    def __init__(self, network: Any, *, processor: ProcessorConfig | str = "zcu102_int8", target: str = "ref",
                 timeout_s: float = 120.0, device_options: dict | None = None, uio: str | None = None):
        from dlproc.compiler.frontend import load_onnx
        from dlproc.compiler.fusion import fuse

        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; targets are {', '.join(TARGETS)}")
        self.config = ProcessorConfig.load(processor)
        check_target(self.config, target)
        self.target = target
        self.timeout_s = timeout_s
        self.device_options = dict(device_options or {})
        if uio is not None:
            if target != "fpga":
                raise ValueError(f"uio={uio!r} names the board's UIO device: it needs target 'fpga', not {target!r}")
            self.device_options["uio"] = uio
        self.source = network
        _check_model_size(network, self.config)
        self.float_graph = fuse(load_onnx(network, fuse=False), nonlinear_unit=self.config.has_nonlinear_unit)
        _check_model_size(self.float_graph, self.config)
        if isinstance(network, (str, Path)):  # exporters name every graph alike ("main_graph", "torch_jit")
            self.float_graph.name = Path(network).stem
        self.graph = None
        self.calibration = None
        self.compiled: CompiledNetwork | None = None
        self._driver: Driver | None = None

    # ------------------------------------------------------------------ shapes
    @property
    def input_name(self) -> str:
        return self.float_graph.inputs[0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input frame (the ONNX input shape without the batch axis)."""
        return tuple(self.float_graph.tensors[self.input_name].onnx_shape[1:])

    def _frames(self, x: Any, what: str, error: type[InputDataError] = InputDataError) -> np.ndarray:
        return check_frames(x, self.input_shape, what, input_name=self.input_name, error=error)

    # ------------------------------------------------------------------ steps
    def calibrate(self, samples: Any, *, method: str = "minmax", percentile: float = 99.99, per_channel: bool = True,
                  scale_mode: str = "fixed", progress: bool | None = None, **options: Any):
        """Observe activation ranges on representative inputs and quantize the network to int8.

        Parameters
        ----------
        samples : array_like
            float32 ``[N, *input_shape]``.
        method : {"minmax", "percentile", "entropy"}
            Activation range selection (see ``docs/quantization.md``).
        percentile : float
            The percentile of ``|x|`` for ``method="percentile"``.
        per_channel : bool
            One weight scale per output channel (else one per layer).
        scale_mode : {"fixed", "pow2"}
            Fixed-point requantization multipliers, or power-of-two scales (shift-only requantization).
        progress : bool, optional
            Progress bar over the samples (default: when there are more than 256).

        Returns
        -------
        QuantizationReport
            ``print`` it for the per-layer table; ``plot_histograms(directory)`` draws the histograms.

        Notes
        -----
        A QDQ model (quantized elsewhere) keeps its own scales: calibration only measures the tensors it has no scale
        for, and is skipped (with a warning) when it has them all.
        """
        import warnings

        from dlproc.compiler.calibrate import calibrate
        from dlproc.compiler.quantize import quantize

        if self.config.dtype != "int8":
            # Deliberately an error, not a silent no-op: calibration data passed here would be ignored.
            raise CompileError(f"the {self.config.dtype} processor computes in floating point: no calibration is "
                               "needed, call Workflow.compile() directly")
        frames = self._frames(samples, "calibration data", CalibrationError)
        stats = None
        if self.imported_scales and not self._missing_scales():
            warnings.warn(f"{self.float_graph.name!r} is a QDQ model with a scale for every tensor: it keeps them and "
                          "calibration is skipped", UserWarning, stacklevel=2)
        else:
            stats = calibrate(self.float_graph, frames, method=method, percentile=percentile, progress=progress,
                              **options)
        self.graph = quantize(copy.deepcopy(self.float_graph), stats or {}, per_channel=per_channel,
                              scale_mode=scale_mode)
        self.calibration = stats
        self.compiled = None
        report_cls = _report_class()
        if report_cls is None:
            return stats
        return report_cls(self.graph, stats, method=None if stats else "imported from the QDQ model",
                          per_channel=per_channel, scale_mode=scale_mode)

    @property
    def imported_scales(self) -> bool:
        """Whether the network is a QDQ model that brought its own activation scales."""
        return any(t.scale is not None for t in self.float_graph.tensors.values())

    def _missing_scales(self) -> list[str]:
        return [name for name, t in self.float_graph.tensors.items() if t.scale is None]

    def compile(self) -> CompiledNetwork:
        """Map the network onto the processor: returns the :class:`CompiledNetwork` (``print`` it for the report)."""
        if self.config.dtype == "int8" and self.graph is None:
            if self.imported_scales and not self._missing_scales():
                from dlproc.compiler.quantize import quantize

                self.graph = quantize(self.float_graph, {})
            elif self.imported_scales:
                raise CompileError(f"the QDQ model has no scale for the tensors {self._missing_scales()}: call "
                                   "Workflow.calibrate(samples) to measure them")
            else:
                raise CompileError("the int8 processor needs a quantized network: call Workflow.calibrate(samples) "
                                   "before compile()")
        graph = self.graph if self.config.dtype == "int8" else self.float_graph  # fp32 compiles the float graph
        self.compiled = compile_graph(graph, self.config)
        return self.compiled

    def deploy(self) -> Driver:
        """Open the target device and load the compiled network (compiles first if needed)."""
        if self.compiled is None:
            self.compile()
        if self._driver is None:
            device = open_device(self.config, self.target, **self.device_options)
            self._driver = Driver(device, timeout_s=self.timeout_s)
        self._driver.load(self.compiled)
        return self._driver

    def predict(self, x: Any, *, profile: bool = False, progress: bool = False):
        """Run frames on the target.

        Parameters
        ----------
        x : array_like
            ``[N, *input_shape]`` float32 (or one frame).
        profile : bool
            Also return a :class:`~dlproc.runtime.profile.Profile` from the processor's cycle counters and the host
            layers' measured time (targets "sim" and "fpga"; the golden model has no timing: use
            :meth:`estimate_performance`). It prints as a table and writes JSON, CSV, a Perfetto trace and a
            roofline plot (``docs/profile.md``).
        progress : bool
            Show a progress bar over the frames.

        Returns
        -------
        ndarray or list of ndarray
            Float outputs in ONNX order, batch axis first (one array when the network has one output).
        Profile
            Only with ``profile=True``.
        """
        frames = self._frames(x, "input")
        if profile and self.target == "ref":
            raise ValueError("the 'ref' target (golden model) has no timing; profile on target 'sim' or 'fpga', "
                             "or call Workflow.estimate_performance()")
        if self._driver is None or self._driver.network is not self.compiled:
            self.deploy()
        assert self.compiled is not None and self._driver is not None
        outs: dict[str, list[np.ndarray]] = {name: [] for name in self.compiled.outputs}
        runs, host_seconds = [], []
        it = frames
        if progress:
            from tqdm import tqdm

            it = tqdm(frames, desc=f"{self.compiled.name} on {self.target}", unit="frame")
        for frame in it:
            result, seg_runs, _ = self._driver.infer(frame)
            runs.append(seg_runs)
            host_seconds.append(dict(self._driver.host_seconds))
            for name in outs:
                outs[name].append(result[name])
        arrays = [np.concatenate(v, axis=0) for v in outs.values()]
        y = arrays[0] if len(arrays) == 1 else arrays
        if profile:
            return y, profile_from_runs(self.compiled, runs, host_seconds=host_seconds, target=self.target)
        return y

    def activations(self, x: Any, layers: list[str] | str | None = None) -> dict[str, np.ndarray]:
        """Run frames and read each requested layer's output from the processor's DDR.

        Parameters
        ----------
        x : array_like
            ``[N, *input_shape]`` float32 (or one frame).
        layers : list of str or str, optional
            Layer names (as in the compile report) or the ONNX tensor names of their outputs; default every layer.

        Returns
        -------
        dict of str to ndarray
            Layer name to float32 ``[N, ...]`` in the tensor's ONNX shape, in network order. On the int8 processor
            a processor layer's values are its int8 output dequantized with the tensor's scale, so ``value / scale``
            gives back the stored integers exactly; a host layer's values are the floats the host computed. They
            are identical on every target.
        """
        from dlproc.runtime.driver import layer_outputs

        frames = self._frames(x, "input")
        if self._driver is None or self._driver.network is not self.compiled:
            self.deploy()
        assert self.compiled is not None and self._driver is not None
        wanted = layer_outputs(self.compiled, layers)
        per_frame = []
        for frame in frames:
            self._driver.infer(frame)
            per_frame.append(self._driver.read_activations(wanted))
        return {key: np.concatenate([f[key] for f in per_frame], axis=0) for key in wanted}

    def compare(self, x: Any, layers: list[str] | str | None = None):
        """Each layer's output on the target against the float network on the same input.

        Parameters
        ----------
        x : array_like
            ``[N, *input_shape]`` float32 (or one frame).
        layers : list of str or str, optional
            Layer names or ONNX tensor names of their outputs; default every layer.

        Returns
        -------
        Comparison
            Per layer in network order: cosine similarity, SQNR (dB), max abs error and the share of float values
            outside the tensor's int8 range; ``print`` it for the table with the worst layers marked, ``to_dict()``
            for programs.

        Notes
        -----
        The float values come from :func:`~dlproc.compiler.float_ref.run_float` on the original network (processor
        layers in float64 with ONNX semantics, host layers in ``onnx.reference``); a fused layer is compared at the
        ONNX tensor of its output (e.g. the ReLU after a Conv).
        """
        from dlproc.compiler.float_ref import run_float
        from dlproc.runtime.compare import Comparison
        from dlproc.runtime.driver import layer_outputs

        frames = self._frames(x, "input")
        got = self.activations(frames, layers)
        assert self.compiled is not None
        reference = run_float(self.float_graph, frames)
        return Comparison.of(self.compiled, got, reference, layer_outputs(self.compiled, list(got)), self.target)
    def _predict_on_workers(self, frames: np.ndarray, workers: int, address: str | None):
        """:meth:`predict` with the frames split into ``max(1, workers)`` Ray tasks, one device each."""
        from dlproc.runtime.distributed import run_tasks

        if self.target == "fpga":
            raise ValueError("workers= spreads frames over simulated devices: the 'fpga' target is one board")
        if self.compiled is None:
            self.compile()
        chunks = [c for c in np.array_split(frames, max(1, workers)) if len(c)]
        shared = {"network": self.compiled, "target": self.target, "options": self.device_options,
                  "timeout_s": self.timeout_s}
        results = run_tasks(_predict_chunk, chunks, shared=shared, workers=workers, address=address)
        failed = [f"frames {sum(len(c) for c in chunks[:r.index])}..: {r.error}" for r in results if not r.ok]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(chunks)} validation task(s) failed: " + "; ".join(failed))
        names = list(self.compiled.outputs)
        arrays = [np.concatenate([r.value[name] for r in results], axis=0) for name in names]
        return arrays[0] if len(arrays) == 1 else arrays

    def run_int(self, frame: Any) -> dict[str, np.ndarray]:
        """Run one frame and return every int8 tensor the processor wrote (for bit-exactness checks)."""
        frames = self._frames(frame, "input")
        if self._driver is None or self._driver.network is not self.compiled:
            self.deploy()
        return self._driver.infer(frames[0], keep_int=True)[2]

    def validate(self, x: Any, labels: Any = None, metric: Callable | None = None, *, batch_size: int = 64,
                 progress: bool = False, workers: int | None = None, address: str | None = None):
        """Compare the quantized network on this workflow's target with the float network.

        The float network is the original ONNX model evaluated by the project's float evaluator
        (:func:`~dlproc.compiler.float_ref.float_evaluator`: ``onnx.reference`` with corrections; for a QDQ model, that
        is its own simulated quantization).

        Parameters
        ----------
        x : array_like
            ``[N, *input_shape]`` float32 inputs.
        labels : array_like, optional
            ``[N]`` class indices: top-1 accuracy (argmax of the first output) of both networks.
        metric : callable, optional
            ``metric(outputs, labels) -> float`` with ``outputs`` as :meth:`predict` returns them; evaluated for both
            networks.
        batch_size : int
            Frames per float evaluator call when the model's batch axis is not fixed.
        progress : bool
            Progress bar over the frames on the target.
        workers : int, optional
            Spread the frames over this many Ray tasks (target "ref" or "sim": each task opens its own device, e.g.
            one Verilator simulation each; see :mod:`dlproc.runtime.distributed`). ``None`` runs them here.
        address : str, optional
            With ``workers``: a Ray cluster (default ``RAY_ADDRESS``, else a local Ray with ``workers`` CPUs).

        Returns
        -------
        ValidationResult
            ``print`` it for the table: accuracies, top-1 agreement, and per output the max/mean absolute error,
            cosine similarity and SQNR.
        """
        from dlproc.compiler.report import ValidationResult

        frames = self._frames(x, "validation data")
        if labels is not None:
            labels = np.asarray(labels).reshape(-1)
            if labels.shape[0] != frames.shape[0]:
                raise ShapeError(f"{labels.shape[0]} labels for {frames.shape[0]} validation frames")
        reference = self._float_outputs(frames, batch_size)
        if workers is None:
            quantized = self.predict(frames, progress=progress)
        else:
            quantized = self._predict_on_workers(frames, workers, address)
        quantized = [quantized] if isinstance(quantized, np.ndarray) else list(quantized)
        names = list(self.float_graph.outputs)
        return ValidationResult.compare(dict(zip(names, reference, strict=True)),
                                        dict(zip(names, quantized, strict=True)), labels=labels, metric=metric,
                                        target=self.target)

    def _float_outputs(self, frames: np.ndarray, batch_size: int) -> list[np.ndarray]:
        """The original model's outputs under :func:`~dlproc.compiler.float_ref.float_evaluator`, in output order."""
        import onnx

        from dlproc.compiler.float_ref import float_evaluator

        model = self.source if isinstance(self.source, onnx.ModelProto) else onnx.load(str(self.source))
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 19)
        if opset < 19 and any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
            import onnx.version_converter  # onnx.reference implements QuantizeLinear/DequantizeLinear from opset 19

            model = onnx.version_converter.convert_version(model, 19)
        session = float_evaluator(model)
        dims = model.graph.input[[vi.name for vi in model.graph.input].index(self.input_name)]
        batch_dim = dims.type.tensor_type.shape.dim[0]
        step = 1 if batch_dim.HasField("dim_value") and batch_dim.dim_value == 1 else max(1, batch_size)
        outs: list[list[np.ndarray]] = []
        for i in range(0, frames.shape[0], step):
            result = session.run(None, {self.input_name: frames[i:i + step]})
            outs.append([np.asarray(r) for r in result])
        return [np.concatenate([o[j] for o in outs]) for j in range(len(outs[0]))]

    def export_qdq(self, path: str | Path | None = None, *, batch: int | str = 1, overwrite: bool = False):
        """Write the quantized network as a QDQ ONNX model that reproduces the processor's int8 results under
        ``onnx.reference`` (see ``docs/quantization.md``).

        Parameters
        ----------
        path : str or Path, optional
            Where to save it.
        batch : int or str
            The model's batch axis (a name makes it symbolic).
        overwrite : bool
            Replace an existing file at ``path`` (it is written whole or not at all).

        Returns
        -------
        onnx.ModelProto
        """
        from dlproc.compiler.qdq import export_qdq

        if self.graph is None:
            if self.imported_scales and not self._missing_scales():
                from dlproc.compiler.quantize import quantize

                self.graph = quantize(self.float_graph, {})
            else:
                raise CompileError("nothing to export yet: call Workflow.calibrate(samples) first")
        if path is None:
            return export_qdq(self.graph, None, batch=batch)
        from dlproc.outputs import atomic_file

        with atomic_file(path, overwrite=overwrite, what="QDQ model") as tmp:
            return export_qdq(self.graph, tmp, batch=batch)

    def estimate_performance(self) -> Profile:
        """Predict per-layer cycles, latency and frames/s without simulating (see ``dlproc.runtime.estimate``)."""
        from dlproc.runtime.estimate import estimate_performance

        if self.compiled is None:
            self.compile()
        return estimate_performance(self.compiled)

    def close(self) -> None:
        """Release the device."""
        if self._driver is not None:
            self._driver.device.close()
            self._driver = None

    def __enter__(self) -> Workflow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _report_class():
    try:
        from dlproc.compiler.report import QuantizationReport
    except ImportError:
        return None
    return QuantizationReport


def _predict_chunk(frames: np.ndarray, shared: dict) -> dict[str, np.ndarray]:
    """Ray task of ``Workflow.validate(..., workers=N)``: run some frames on a device of its own."""
    net = shared["network"]
    device = open_device(net.config, shared["target"], **shared["options"])
    try:
        driver = Driver(device, timeout_s=shared["timeout_s"])
        driver.load(net)
        outs: dict[str, list[np.ndarray]] = {name: [] for name in net.outputs}
        for frame in frames:
            result, _, _ = driver.infer(frame)
            for name in outs:
                outs[name].append(result[name])
    finally:
        device.close()
    return {name: np.concatenate(v, axis=0) for name, v in outs.items()}
