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
from pathlib import Path
from typing import Any

import numpy as np

from dlproc.compiler.errors import CompileError, ShapeError
from dlproc.compiler.network import CompiledNetwork, compile_graph
from dlproc.processor.config import ProcessorConfig
from dlproc.runtime.driver import Driver
from dlproc.runtime.profile import Profile, profile_from_runs

__all__ = ["Workflow", "TARGETS"]

TARGETS = ("ref", "sim", "fpga")


def open_device(config: ProcessorConfig, target: str, **options: Any):
    """Open the device of a target (``"ref"``, ``"sim"`` or ``"fpga"``)."""
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
        Passed to the target's device (e.g. ``trace="run.fst"`` for "sim", ``uio="/dev/uio0"`` for "fpga").

    Examples
    --------
    >>> wf = Workflow("net.onnx", processor="zcu102_int8", target="sim")    # doctest: +SKIP
    >>> wf.calibrate(images[:64])
    >>> print(wf.compile())
    >>> y, profile = wf.predict(images[64:72], profile=True)
    """

    def __init__(self, network: Any, *, processor: ProcessorConfig | str = "zcu102_int8", target: str = "ref",
                 timeout_s: float = 120.0, device_options: dict | None = None):
        from dlproc.compiler.frontend import load_onnx
        from dlproc.compiler.fusion import fuse

        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; targets are {', '.join(TARGETS)}")
        self.config = ProcessorConfig.load(processor)
        self.target = target
        self.timeout_s = timeout_s
        self.device_options = dict(device_options or {})
        self.source = network
        self.float_graph = fuse(load_onnx(network))
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

    def _frames(self, x: Any, what: str) -> np.ndarray:
        arr = np.asarray(x, dtype=np.float32)
        shape = self.input_shape
        if arr.shape == shape:
            arr = arr[None]
        if arr.ndim != len(shape) + 1 or tuple(arr.shape[1:]) != shape:
            raise ShapeError(f"{what} has shape {tuple(np.shape(x))}; expected [N, {', '.join(map(str, shape))}] "
                             f"(input {self.input_name!r} of the network) or one frame of shape {shape}")
        return arr

    # ------------------------------------------------------------------ steps
    def calibrate(self, samples: Any, *, method: str = "minmax", percentile: float = 99.99, **options: Any):
        """Observe activation ranges on representative inputs and quantize the network to int8.

        Parameters
        ----------
        samples : array_like
            float32 ``[N, *input_shape]``.
        method : {"minmax", "percentile", "entropy"}
            Activation range selection.

        Returns
        -------
        QuantizationReport
        """
        from dlproc.compiler.calibrate import calibrate
        from dlproc.compiler.quantize import quantize

        if self.config.dtype != "int8":
            # Deliberately an error, not a silent no-op: calibration data passed here would be ignored.
            raise CompileError(f"the {self.config.dtype} processor computes in floating point: no calibration is "
                               "needed, call Workflow.compile() directly")
        frames = self._frames(samples, "calibration data")
        stats = calibrate(self.float_graph, frames, method=method, percentile=percentile, **options)
        self.graph = quantize(copy.deepcopy(self.float_graph), stats)
        self.calibration = stats
        self.compiled = None
        report_cls = _report_class()
        return report_cls(self.graph, stats) if report_cls else stats

    def compile(self) -> CompiledNetwork:
        """Map the network onto the processor: returns the :class:`CompiledNetwork` (``print`` it for the report)."""
        if self.config.dtype == "int8" and self.graph is None:
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
            Also return a :class:`~dlproc.runtime.profile.Profile` from the processor's cycle counters
            (targets "sim" and "fpga"; the golden model has no timing: use :meth:`estimate_performance`).
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
        runs = []
        it = frames
        if progress:
            from tqdm import tqdm

            it = tqdm(frames, desc=f"{self.compiled.name} on {self.target}", unit="frame")
        for frame in it:
            result, seg_runs, _ = self._driver.infer(frame)
            runs.append(seg_runs)
            for name in outs:
                outs[name].append(result[name])
        arrays = [np.concatenate(v, axis=0) for v in outs.values()]
        y = arrays[0] if len(arrays) == 1 else arrays
        if profile:
            return y, profile_from_runs(self.compiled, runs)
        return y

    def run_int(self, frame: Any) -> dict[str, np.ndarray]:
        """Run one frame and return every int8 tensor the processor wrote (for bit-exactness checks)."""
        frames = self._frames(frame, "input")
        if self._driver is None or self._driver.network is not self.compiled:
            self.deploy()
        return self._driver.infer(frames[0], keep_int=True)[2]

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


_ = Path
