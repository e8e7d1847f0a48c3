"""The compiled network: program, DDR image, memory map and report; saved as a bundle (JSON manifest + blobs).

A bundle directory holds ``manifest.json`` (configuration, layers, tensors, segments, memory map),
``image.bin`` (parameters and instructions, loaded at ``image_offset`` of the DDR window) and one
``host_<i>.onnx`` per layer that runs on the host. It is written to a temporary directory and renamed into
place, so a failed save never leaves a partial bundle.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dlproc.compiler.codegen import CodeGenerator, LayerCode, lower_fp32
from dlproc.compiler.errors import CompileError
from dlproc.compiler.graph import Graph, Layer
from dlproc.compiler.memory import Region, TensorView, align, plan_activations
from dlproc.processor.config import INSTRUCTION_BYTES, ISA_VERSION, ProcessorConfig
from dlproc.processor.isa import END_MARK, InstructionSet
from dlproc.sim.golden import HazardError, IllegalProgram, verify_program

__all__ = ["CompiledNetwork", "BundleError", "compile_graph", "BUNDLE_FORMAT"]

BUNDLE_FORMAT = 1


class BundleError(ValueError):
    """A bundle that cannot be loaded or does not match the processor."""


@dataclass
class Segment:
    """A piece of the network run by one party: ``hw`` (instructions ``start .. start+count``) or ``host``."""

    kind: str
    start: int = 0
    count: int = 0
    layer: int = -1
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


@dataclass
class CompiledNetwork:
    """A network compiled for one processor configuration.

    Attributes
    ----------
    config : ProcessorConfig
        The configuration it was compiled for (the runtime refuses a processor with another hash).
    name : str
        Network name.
    inputs, outputs : list of str
        Network input and output tensor names (ONNX order).
    tensors : dict
        Per tensor: ``shape`` (C, H, W), ``onnx_shape``, ``scale`` (int8 activation scale).
    views : dict of str to TensorView
        DDR placement of every activation tensor.
    regions : list of Region
        The DDR memory map.
    layers : list of LayerCode
        Per layer: where it runs, its instruction range, MACs, parameter bytes, tiling.
    segments : list of Segment
        Execution order of hardware programs and host layers.
    image_offset : int
        DDR offset of :attr:`image`.
    image : bytes
        Parameters followed by instructions.
    instr_offset : int
        DDR offset of instruction 0.
    instr_count : int
        Number of instructions.
    host_models : dict of int to bytes
        Serialized one-layer ONNX models for host layers, by layer index.
    """

    config: ProcessorConfig
    name: str
    inputs: list[str]
    outputs: list[str]
    tensors: dict[str, dict]
    views: dict[str, TensorView]
    regions: list[Region]
    layers: list[LayerCode]
    segments: list[Segment]
    image_offset: int
    image: bytes
    instr_offset: int
    instr_count: int
    host_models: dict[int, bytes] = field(default_factory=dict)

    # ------------------------------------------------------------------ derived figures
    @property
    def weight_bytes(self) -> int:
        """Bytes of weights in DDR (1 byte per weight for int8, 4 for fp32, padded to the lanes)."""
        return sum(layer.weight_bytes for layer in self.layers)

    @property
    def weight_count(self) -> int:
        """Weights of the hardware layers (before padding to the lanes)."""
        return sum(layer.weight_count for layer in self.layers)

    @property
    def param_bytes(self) -> int:
        """Bytes of per-channel parameters (bias, requantization, clamps)."""
        return sum(layer.param_bytes for layer in self.layers)

    @property
    def ddr_bytes(self) -> int:
        """End of the used part of the DDR window."""
        return self.image_offset + len(self.image)

    @property
    def total_macs(self) -> int:
        """Multiply-accumulates of the hardware layers per frame."""
        return sum(layer.macs for layer in self.layers if layer.target == "hw")

    def instructions(self) -> list[int]:
        """The instruction words."""
        start = self.instr_offset - self.image_offset
        return InstructionSet.from_bytes(self.image[start:start + self.instr_count * INSTRUCTION_BYTES])

    def disassemble(self) -> str:
        """A listing of the program."""
        return InstructionSet(self.config).disassemble(self.instructions())

    # ------------------------------------------------------------------ report
    def report(self) -> str:
        """The compile report: layer mapping and DDR memory map."""
        c = self.config
        lines = [f"Network {self.name!r} compiled for the processor {c.summary()}", ""]
        hdr = f"{'#':>3}  {'layer':<28} {'type':<8} {'runs on':<8} {'output':<14} {'tile (h x w x c)':<18} " \
              f"{'MACs':>12} {'weights':>10} {'instr':>7}"
        lines += [hdr, "-" * len(hdr)]
        for layer in self.layers:
            out = "x".join(map(str, layer.output_shape)) if layer.output_shape else ""
            where = "FPGA" if layer.target == "hw" else "host"
            tile = layer.tile if layer.target == "hw" else (layer.note[:18] if layer.note else "")
            lines.append(f"{layer.index:>3}  {layer.name[:28]:<28} {layer.op:<8} {where:<8} {out:<14} {tile[:18]:<18} "
                         f"{layer.macs:>12,} {_fmt_bytes(layer.weight_bytes):>10} {layer.instr_count:>7}")
            if layer.target == "host" and layer.note:
                lines.append(f"{'':>5}host: {layer.note}")
        lines += ["", f"DDR memory map (window base {c.ddr_base:#x}, size {_fmt_bytes(c.ddr_size)}):",
                  f"  {'region':<32} {'kind':<13} {'offset':>12} {'size':>11}"]
        for r in self.regions:
            lines.append(f"  {r.name[:32]:<32} {r.kind:<13} {r.offset:>#12x} {_fmt_bytes(r.size):>11}")
        total = _fmt_bytes(self.weight_bytes + self.param_bytes)
        lines += ["", f"Total parameter memory: {total} (weights {_fmt_bytes(self.weight_bytes)}, "
                      f"per-channel parameters {_fmt_bytes(self.param_bytes)})"]
        if c.dtype == "fp32":
            lines.append(f"  binary32 weights, 4 bytes each; as int8 the {self.weight_count:,} weights would take "
                         f"{_fmt_bytes(self.weight_count)} (1 byte each, before lane padding)")
        lines.append(f"Instructions: {self.instr_count} ({_fmt_bytes(self.instr_count * INSTRUCTION_BYTES)}); "
                     f"DDR used: {_fmt_bytes(self.ddr_bytes)}; MACs per frame: {self.total_macs:,}")
        lines.append(f"Clock: {_timing_status(c)}")
        host = [layer for layer in self.layers if layer.target == "host"]
        if host:
            lines.append(f"Layers on the host: {len(host)} ({', '.join(layer.name for layer in host)})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the bundle directory atomically (temporary directory, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            manifest = {
                "format": BUNDLE_FORMAT, "isa_version": ISA_VERSION, "hardware_hash": self.config.hardware_hash,
                "config": self.config.to_dict(), "name": self.name, "inputs": self.inputs, "outputs": self.outputs,
                "tensors": self.tensors, "views": {k: v.to_dict() for k, v in self.views.items()},
                "regions": [asdict(r) for r in self.regions], "layers": [asdict(layer) for layer in self.layers],
                "segments": [asdict(s) for s in self.segments], "image_offset": self.image_offset,
                "instr_offset": self.instr_offset, "instr_count": self.instr_count,
                "host_models": sorted(self.host_models),
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
            (tmp / "image.bin").write_bytes(self.image)
            for idx, blob in self.host_models.items():
                (tmp / f"host_{idx}.onnx").write_bytes(blob)
            old = None
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                if old.exists():
                    shutil.rmtree(old)
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path, *, config: ProcessorConfig | None = None) -> CompiledNetwork:
        """Read a bundle; with ``config``, refuse a bundle compiled for another processor configuration."""
        path = Path(path)
        mf = path / "manifest.json"
        if not mf.is_file():
            raise BundleError(f"{path} is not a dlproc bundle (no manifest.json)")
        try:
            m = json.loads(mf.read_text())
        except json.JSONDecodeError as exc:
            raise BundleError(f"{mf} is corrupt: {exc}") from None
        if m.get("format") != BUNDLE_FORMAT or m.get("isa_version") != ISA_VERSION:
            raise BundleError(f"{path} was written by an incompatible dlproc (bundle format {m.get('format')}, "
                              f"ISA {m.get('isa_version')}; this dlproc reads format {BUNDLE_FORMAT}, "
                              f"ISA {ISA_VERSION})")
        cfg = ProcessorConfig.from_dict(m["config"])
        if config is not None and config.hardware_hash != cfg.hardware_hash:
            raise BundleError(f"{path} was compiled for processor [{cfg.hardware_hash}] ({cfg.summary()}), "
                              f"not for [{config.hardware_hash}] ({config.summary()}); recompile it")
        image = (path / "image.bin").read_bytes()
        host = {int(i): (path / f"host_{i}.onnx").read_bytes() for i in m["host_models"]}
        layers = [LayerCode(**{**d, "input_shape": tuple(d["input_shape"]), "output_shape": tuple(d["output_shape"])})
                  for d in m["layers"]]
        return cls(config=cfg, name=m["name"], inputs=m["inputs"], outputs=m["outputs"], tensors=m["tensors"],
                   views={k: TensorView(**v) for k, v in m["views"].items()},
                   regions=[Region(**r) for r in m["regions"]], layers=layers,
                   segments=[Segment(**s) for s in m["segments"]], image_offset=m["image_offset"], image=image,
                   instr_offset=m["instr_offset"], instr_count=m["instr_count"], host_models=host)


def _fmt_bytes(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.2f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n} B"


def _host_model(graph: Graph, layer: Layer) -> bytes:
    inits, seen = [], set()
    for node in layer.onnx_nodes:
        for name in node.input:
            if name in graph.initializers and name not in seen:
                seen.add(name)
                inits.append(numpy_helper.from_array(np.asarray(graph.initializers[name]), name))
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(graph.tensors[n].onnx_shape))
           for n in layer.inputs if n in graph.tensors]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(graph.tensors[n].onnx_shape))
            for n in layer.outputs]
    g = helper.make_graph(list(layer.onnx_nodes), f"host_{layer.name}", ins, outs, initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", graph.opset)])
    model.ir_version = min(model.ir_version, 10)
    return model.SerializeToString()


def compile_graph(graph: Graph, config: ProcessorConfig) -> CompiledNetwork:
    """Map a graph onto a processor configuration.

    Parameters
    ----------
    graph : Graph
        int8 processor: fused and quantized (every hardware layer has ``quant``; every tensor a ``scale``).
        fp32 processor: the fused float graph (:func:`~.fusion.fuse`), no quantization; its parameters become
        binary32 (:func:`~.codegen.lower_fp32`).
    config : ProcessorConfig
        Target processor.

    Returns
    -------
    CompiledNetwork
    """
    if config.dtype == "fp32":
        graph = lower_fp32(graph)
    for layer in graph.layers:
        if layer.target == "hw" and layer.op in ("conv", "fc", "avgpool", "gap", "add", "maxpool") \
                and layer.quant is None:
            raise CompileError(f"layer {layer.name!r} ({layer.op}) is not quantized: calibrate before compiling")
    graph = _host_unaligned_concats(graph, config)
    views, regions, end = plan_activations(graph, config)
    param_base = align(end)
    gen = CodeGenerator(config, graph, views, param_base)
    layers: list[LayerCode] = []
    segments: list[Segment] = []
    host_models: dict[int, bytes] = {}
    seg_start = None
    for idx, layer in enumerate(graph.layers):
        in_shape = graph.tensors[layer.inputs[0]].shape if layer.inputs and layer.inputs[0] in graph.tensors else ()
        out_shape = graph.tensors[layer.outputs[0]].shape if layer.outputs else ()
        if layer.target == "hw":
            if seg_start is None:
                seg_start = len(gen.words)
            gen.emit(gen.isa.Sync(), gen.isa.Mark(layer=idx))
            try:
                rec = gen.generate([layer])[0]
            except (ValueError, KeyError) as exc:
                raise CompileError(f"layer {layer.name!r} ({layer.op}) cannot be mapped onto processor "
                                   f"[{config.hardware_hash}]: {exc}") from exc
            rec.instr_start -= 2
            rec.instr_count += 2
        else:
            if seg_start is not None:
                _close_segment(gen, segments, seg_start)
                seg_start = None
            rec = LayerCode(index=idx, name=layer.name, op=layer.attrs.get("op_type", layer.op), target="host",
                            note=layer.host_reason)
            host_models[idx] = _host_model(graph, layer)
            segments.append(Segment("host", layer=idx, inputs=list(layer.inputs), outputs=list(layer.outputs)))
        rec.index = idx
        rec.input_shape, rec.output_shape = tuple(in_shape), tuple(out_shape)
        rec.outputs = list(layer.outputs)
        layers.append(rec)
    if seg_start is not None:
        _close_segment(gen, segments, seg_start)
    try:   # the program must be legal and free of cross-engine races on every target, not only on "ref"
        verify_program(config, gen.words)
    except (IllegalProgram, HazardError) as exc:
        raise CompileError(f"the code generator emitted an invalid program for processor [{config.hardware_hash}]: "
                           f"{exc}") from exc
    instr_offset = align(param_base + len(gen.blob))
    image = bytes(gen.blob) + b"\0" * (instr_offset - param_base - len(gen.blob)) + InstructionSet.to_bytes(gen.words)
    regions = regions + [Region("parameters", "parameters", param_base, len(gen.blob)),
                         Region("instructions", "instructions", instr_offset, len(gen.words) * INSTRUCTION_BYTES)]
    end = param_base + len(image)
    if end > config.ddr_size:
        raise CompileError(f"the network needs {end:,} bytes of DDR but the processor's window holds "
                           f"{config.ddr_size:,} (ProcessorConfig.ddr_size)")
    tensors = {name: {"shape": list(t.shape), "onnx_shape": list(t.onnx_shape), "scale": t.scale}
               for name, t in graph.tensors.items() if name not in graph.initializers}
    return CompiledNetwork(config=config, name=graph.name, inputs=list(graph.inputs[:1]), outputs=list(graph.outputs),
                           tensors=tensors, views=views, regions=regions, layers=layers, segments=segments,
                           image_offset=param_base, image=image, instr_offset=instr_offset,
                           instr_count=len(gen.words), host_models=host_models)


def _host_unaligned_concats(graph: Graph, config: ProcessorConfig) -> Graph:
    """Concats the processor cannot do in place become host layers.

    In-place concatenation writes each input into the concat's region at a channel-block offset, so every input but
    the last must have a multiple of ``channel_block`` channels, and no tensor may belong to two concats.
    """
    B = config.channel_block
    owned: set[str] = set()
    layers = []
    for layer in graph.layers:
        if layer.op == "concat" and layer.target == "hw":
            counts = [graph.tensors[n].channels for n in layer.inputs]
            reason = ""
            if any(c % B for c in counts[:-1]):
                reason = (f"inputs with {counts} channels: in-place concatenation needs every input but the last to "
                          f"have a multiple of {B} channels (the channel block)")
            elif owned & set(layer.inputs) or len(set(layer.inputs)) < len(layer.inputs):
                reason = "an input is already part of another concatenation"
            if reason:
                node = helper.make_node("Concat", list(layer.inputs), list(layer.outputs), name=layer.name, axis=1)
                layer = dataclasses.replace(layer, op="host", target="host", host_reason=reason,
                                            attrs={"op_type": "Concat"}, onnx_nodes=[node])
            else:
                owned.update(layer.inputs)
        layers.append(layer)
    return dataclasses.replace(graph, layers=layers)


def _close_segment(gen: CodeGenerator, segments: list[Segment], start: int) -> None:
    gen.emit(gen.isa.Sync(), gen.isa.Mark(layer=END_MARK), gen.isa.End())
    segments.append(Segment("hw", start=start, count=len(gen.words) - start))


_ = onnx  # onnx is imported for its helper submodules


def _timing_status(config) -> str:
    from dlproc.boards.timing import timing_status  # the timing check's recorded verdict (boards/timing.py)

    return timing_status(config)
