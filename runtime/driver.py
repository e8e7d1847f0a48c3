"""The register-level driver: one piece of code for every target.

It talks to a *device* that offers 32-bit register access on the processor's AXI4-Lite slave and byte access to
its DDR window (the golden model's :class:`~dlproc.sim.golden.GoldenDevice`, the Verilator model's
:class:`~dlproc.sim.verilator.device.VerilatorDevice`, or the board's
:class:`~dlproc.runtime.fpga.FpgaDevice`). Loading a bundle, running its hardware segments, executing host
layers between them and reading the hardware's cycle counters and event log happen here, identically for all.

Tensors in DDR are int8 on the int8 processor (the driver quantizes the input and the outputs of host layers with
each tensor's scale, and dequantizes what it reads) and float32 on the fp32 processor (written and read as they
are).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from dlproc.compiler.memory import from_blocked, span_bytes, to_blocked
from dlproc.compiler.network import CompiledNetwork, Segment
from dlproc.processor.config import INSTRUCTION_BYTES, ISA_VERSION, ProcessorConfig
from dlproc.processor.isa import (
    CTRL_CLEAR,
    CTRL_IRQ_EN,
    CTRL_START,
    MAGIC,
    STATUS_BUSY,
    STATUS_DONE,
    STATUS_ERROR,
    ErrorCode,
    Reg,
)

__all__ = ["Device", "Driver", "ProcessorError", "ProcessorTimeout", "DeviceMismatch", "SegmentRun",
           "quantize_input", "layer_outputs"]


class Device(Protocol):
    """What the driver needs from a target."""

    config: ProcessorConfig
    ddr_phys_base: int
    ddr_size: int

    def read_reg(self, offset: int) -> int: ...
    def write_reg(self, offset: int, value: int) -> None: ...
    def write_ddr(self, offset: int, data: Any) -> None: ...
    def read_ddr(self, offset: int, length: int) -> np.ndarray: ...
    def wait_irq(self, timeout_s: float) -> bool: ...
    def close(self) -> None: ...


class ProcessorError(RuntimeError):
    """The processor stopped with an error code.

    Attributes
    ----------
    code : ErrorCode
    pc : int
        Index of the failing instruction.
    layer : str
        Layer whose instructions contain ``pc`` (if known).
    """

    def __init__(self, code: ErrorCode, pc: int, layer: str = ""):
        where = f" in layer {layer!r}" if layer else ""
        super().__init__(f"processor error {code.name} at instruction {pc}{where}")
        self.code, self.pc, self.layer = code, pc, layer


class ProcessorTimeout(TimeoutError):
    """The processor did not finish within the driver's timeout."""


class DeviceMismatch(RuntimeError):
    """The device is not a dlproc processor, or not the configuration the bundle was compiled for."""


@dataclass
class SegmentRun:
    """Hardware counters of one hardware segment run."""

    cycles: int
    mac_busy: int
    events: list[tuple[int, int]] = field(default_factory=list)  # (layer id, cycle)
    rd_beats: int = 0
    wr_beats: int = 0


def quantize_input(x: np.ndarray, scale: float) -> np.ndarray:
    """Float to int8 as the host does it: ``clip(round_half_even(x / scale), -128, 127)``."""
    return np.clip(np.round(np.asarray(x, np.float64) / scale), -128, 127).astype(np.int8)


def layer_outputs(network: CompiledNetwork, layers: list[str] | str | None = None) -> dict[str, str]:
    """Which tensor holds each requested layer's output.

    Parameters
    ----------
    network : CompiledNetwork
    layers : list of str, str, optional
        Layer names (as in the compile report) or ONNX tensor names of layer outputs (a fused layer's output is the
        ONNX tensor of its last fused node, e.g. the ReLU after a Conv); default every layer.

    Returns
    -------
    dict of str to str
        Layer name to output tensor name, in network order (a layer with several outputs is listed once per output
        as ``"layer:tensor"``).
    """
    if network.layers and not any(layer.outputs for layer in network.layers):
        raise ValueError(f"bundle {network.name!r} does not name its layers' output tensors (compiled by an older "
                         "dlproc): recompile it to read activations")
    by_layer: dict[str, str] = {}
    for layer in network.layers:
        outs = list(layer.outputs)
        if len(outs) == 1:
            by_layer[layer.name] = outs[0]
        else:
            by_layer.update({f"{layer.name}:{t}": t for t in outs})
    if layers is None:
        return by_layer
    by_tensor = {t: name for name, t in by_layer.items()}
    chosen: dict[str, str] = {}
    for req in [layers] if isinstance(layers, str) else list(layers):
        if req in by_layer:
            chosen[req] = by_layer[req]
        elif req in by_tensor:
            chosen[by_tensor[req]] = req
        else:
            known = ", ".join(list(by_layer)[:12]) + (", ..." if len(by_layer) > 12 else "")
            raise ValueError(f"{req!r} is neither a layer of {network.name!r} nor the output tensor of one; "
                             f"layers are: {known}")
    order = list(by_layer)
    return dict(sorted(chosen.items(), key=lambda kv: order.index(kv[0])))


class Driver:
    """Loads compiled networks onto a device and runs them.

    Parameters
    ----------
    device : Device
        The target.
    timeout_s : float
        Longest wait for one hardware segment; a processor that does not finish raises
        :class:`ProcessorTimeout`.
    """

    def __init__(self, device: Device, *, timeout_s: float = 120.0):
        self.device = device
        self.timeout_s = timeout_s
        self.network: CompiledNetwork | None = None
        self._host_sessions: dict[int, Any] = {}
        #: Wall-clock seconds of each host layer (by layer index) in the last :meth:`infer`.
        self.host_seconds: dict[int, float] = {}
        #: Float values the host computed in the last :meth:`infer` (host layers' outputs), by tensor name.
        self.host_values: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ identity
    def identify(self) -> dict[str, int]:
        """Read MAGIC, ISA_VERSION and CONFIG_HASH; raise :class:`DeviceMismatch` if this is no dlproc processor."""
        d = self.device
        magic = d.read_reg(Reg.MAGIC)
        if magic != MAGIC:
            raise DeviceMismatch(f"no dlproc processor answers at this device (MAGIC {magic:#010x}, "
                                 f"expected {MAGIC:#010x})")
        info = {"isa_version": d.read_reg(Reg.ISA_VERSION), "config_hash": d.read_reg(Reg.CONFIG_HASH)}
        if info["isa_version"] != ISA_VERSION:
            raise DeviceMismatch(f"the processor implements ISA version {info['isa_version']}, this runtime "
                                 f"speaks version {ISA_VERSION}")
        return info

    # ------------------------------------------------------------------ loading
    def load(self, network: CompiledNetwork) -> None:
        """Check the processor matches the bundle, then write parameters and instructions and zero activations."""
        info = self.identify()
        want = network.config.hardware_hash_int
        if info["config_hash"] != want:
            raise DeviceMismatch(f"bundle {network.name!r} was compiled for processor [{network.config.hardware_hash}] "
                                 f"but the device is [{info['config_hash']:08x}]; recompile for this processor")
        if network.ddr_bytes > self.device.ddr_size:
            raise DeviceMismatch(f"bundle needs {network.ddr_bytes:,} bytes of DDR; the device window has "
                                 f"{self.device.ddr_size:,}")
        d = self.device
        d.write_reg(Reg.CTRL, CTRL_CLEAR)
        d.write_reg(Reg.DDR_BASE_LO, d.ddr_phys_base & 0xFFFFFFFF)
        d.write_reg(Reg.DDR_BASE_HI, d.ddr_phys_base >> 32)
        d.write_reg(Reg.DDR_SIZE, d.ddr_size & 0xFFFFFFFF if d.ddr_size < (1 << 32) else 0xFFFFF000)
        for region in network.regions:  # zero halos and padding of every activation region
            if region.kind in ("input", "output", "activation"):
                d.write_ddr(region.offset, np.zeros(region.size, np.uint8))
        d.write_ddr(network.image_offset, np.frombuffer(network.image, np.uint8))
        self.network = network
        self._host_sessions = {}

    # ------------------------------------------------------------------ execution
    def run_segment(self, segment: Segment) -> SegmentRun:
        """Start one hardware segment and wait for it; raise on error or timeout."""
        net, d = self._net(), self.device
        d.write_reg(Reg.CTRL, CTRL_CLEAR | CTRL_IRQ_EN)
        d.write_reg(Reg.INSTR_ADDR, net.instr_offset + segment.start * INSTRUCTION_BYTES)
        d.write_reg(Reg.INSTR_COUNT, segment.start + segment.count - segment.start)
        d.write_reg(Reg.CTRL, CTRL_START | CTRL_IRQ_EN)
        deadline = time.monotonic() + self.timeout_s
        while True:
            status = d.read_reg(Reg.STATUS)
            if status & (STATUS_DONE | STATUS_ERROR) and not status & STATUS_BUSY:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProcessorTimeout(f"processor did not finish {net.name!r} within {self.timeout_s:g} s "
                                       f"(PC {d.read_reg(Reg.PC)}, STATUS {status:#x})")
            d.wait_irq(min(remaining, 5.0))
        if status & STATUS_ERROR:
            code = ErrorCode(d.read_reg(Reg.ERROR_CODE))
            pc = d.read_reg(Reg.ERROR_PC)
            raise ProcessorError(code, pc, self._layer_at(segment.start + pc))
        cycles = d.read_reg(Reg.CYCLES_LO) | d.read_reg(Reg.CYCLES_HI) << 32
        mac = d.read_reg(Reg.MAC_BUSY_LO) | d.read_reg(Reg.MAC_BUSY_HI) << 32
        events = []
        for i in range(d.read_reg(Reg.EVENT_COUNT)):
            d.write_reg(Reg.EVENT_INDEX, i)
            events.append((d.read_reg(Reg.EVENT_ID),
                           d.read_reg(Reg.EVENT_CYCLE_LO) | d.read_reg(Reg.EVENT_CYCLE_HI) << 32))
        return SegmentRun(cycles, mac, events, d.read_reg(Reg.DMA_RD_BEATS), d.read_reg(Reg.DMA_WR_BEATS))

    def infer(self, x: np.ndarray, *, keep_int: bool = False) -> tuple[dict[str, np.ndarray], list[SegmentRun],
                                                                       dict[str, np.ndarray]]:
        """Run one frame.

        Parameters
        ----------
        x : ndarray
            One input frame in the ONNX input shape without batch (e.g. ``(3, H, W)``), float32.
        keep_int : bool
            Also return every tensor the hardware wrote, as stored (int8, or float32 on the fp32 processor), for
            bit-exactness checks.

        Returns
        -------
        outputs : dict of str to ndarray
            Float outputs in their ONNX shapes (with batch axis 1).
        runs : list of SegmentRun
            Counters per hardware segment.
        ints : dict of str to ndarray
            ``(C, H, W)`` tensors read back as stored (only with ``keep_int``).
        """
        net = self._net()
        floats: dict[str, np.ndarray] = {}
        in_name = net.inputs[0]
        shape = tuple(net.tensors[in_name]["shape"])
        x = np.asarray(x, np.float32).reshape(shape)
        self._write_tensor(in_name, self._to_device(in_name, x))
        runs = []
        self.host_seconds = {}
        for seg in net.segments:
            if seg.kind == "hw":
                runs.append(self.run_segment(seg))
            else:
                self._host_session(seg.layer)  # built once per bundle: not part of the layer's time
                t0 = time.perf_counter()
                feeds = {}
                for name in seg.inputs:
                    feeds[name] = floats[name] if name in floats else self._from_device(name, self._read_tensor(name))
                results = self._run_host(seg.layer, feeds)
                for name, value in results.items():
                    floats[name] = value
                    if name in net.views and (self._fp32 or net.tensors[name].get("scale")):  # hardware may read it
                        self._write_tensor(name, self._to_device(name, value.reshape(net.tensors[name]["shape"])))
                self.host_seconds[seg.layer] = time.perf_counter() - t0
        self.host_values = floats
        outputs = {}
        for name in net.outputs:
            value = floats[name] if name in floats else self._from_device(name, self._read_tensor(name))
            outputs[name] = value.reshape(net.tensors[name]["onnx_shape"])
        ints = {}
        if keep_int:
            host_made = {n for s in net.segments if s.kind == "host" for n in s.outputs}
            for name in net.views:
                if name not in host_made:
                    ints[name] = self._read_tensor(name)
        return outputs, runs, ints

    def read_activations(self, tensors: dict[str, str]) -> dict[str, np.ndarray]:
        """Read layer outputs of the last :meth:`infer` from DDR as float32 in their ONNX shapes (batch axis 1).

        Parameters
        ----------
        tensors : dict of str to str
            Key to tensor name, as :func:`layer_outputs` returns.

        Returns
        -------
        dict of str to ndarray
            Processor layers: int8 tensors dequantized with their scale (``float32(q) * float32(scale)``), fp32
            tensors as stored. Host layers: the float values the host computed (what :meth:`infer` returns for a
            network output; a processor layer that consumes them reads them quantized).
        """
        net = self._net()
        out = {}
        for key, name in tensors.items():
            if name in self.host_values:
                value = self.host_values[name]
            elif name in net.views:
                value = self._from_device(name, self._read_tensor(name))
            else:
                raise ValueError(f"tensor {name!r} of {key!r} is not in DDR and was not computed on the host")
            out[key] = np.asarray(value, np.float32).reshape(net.tensors[name]["onnx_shape"])
        return out

    # ------------------------------------------------------------------ helpers
    def _net(self) -> CompiledNetwork:
        if self.network is None:
            raise RuntimeError("no network loaded: call Driver.load(compiled) first")
        return self.network

    @property
    def _fp32(self) -> bool:
        return self._net().config.dtype == "fp32"

    def _to_device(self, name: str, x: np.ndarray) -> np.ndarray:
        """A float tensor as stored in DDR: float32 as it is, or quantized to int8 with the tensor's scale."""
        if self._fp32:
            return np.asarray(x, np.float32)
        return quantize_input(x, self._net().tensors[name]["scale"])

    def _from_device(self, name: str, stored: np.ndarray) -> np.ndarray:
        """A tensor read from DDR as float32 (int8 tensors dequantized with their scale)."""
        if self._fp32:
            return stored
        return stored.astype(np.float32) * np.float32(self._net().tensors[name]["scale"])

    def _write_tensor(self, name: str, q: np.ndarray) -> None:
        view = self._net().views[name]
        offset, raw = to_blocked(q, view)
        self.device.write_ddr(offset, raw)

    def _read_tensor(self, name: str) -> np.ndarray:
        view = self._net().views[name]
        raw = self.device.read_ddr(view.addr(0, -view.halo, -view.halo), span_bytes(view))
        return from_blocked(raw, view, np.float32 if self._fp32 else np.int8)

    def _layer_at(self, pc: int) -> str:
        for layer in self._net().layers:
            if layer.target == "hw" and layer.instr_start <= pc < layer.instr_start + layer.instr_count:
                return layer.name
        return ""

    def _host_session(self, index: int) -> Any:
        """The float evaluator of host layer ``index`` (created on first use)."""
        from dlproc.compiler.float_ref import float_evaluator

        sess = self._host_sessions.get(index)
        if sess is None:
            sess = self._host_sessions[index] = float_evaluator(self._net().host_models[index])
        return sess

    def _run_host(self, index: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        net = self._net()
        sess = self._host_session(index)
        seg = next(s for s in net.segments if s.kind == "host" and s.layer == index)
        shaped = {k: v.reshape(net.tensors[k]["onnx_shape"]).astype(np.float32) for k, v in feeds.items()}
        values = sess.run(None, shaped)
        return {name: np.asarray(v, np.float32) for name, v in zip(seg.outputs, values, strict=True)}
