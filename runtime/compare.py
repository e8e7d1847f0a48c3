"""Per-layer comparison of the processor's outputs with the float network: where int8 loses accuracy.

:meth:`Workflow.compare <dlproc.runtime.workflow.Workflow.compare>` reads every layer's output from the processor's
DDR (:meth:`~dlproc.runtime.workflow.Workflow.activations`) and puts it next to the same tensor of the float network
on the same input (:func:`~dlproc.compiler.float_ref.run_float`). The errors accumulate along the network: a layer's
row shows how far its output is from float after everything before it, so the layer where the SQNR falls is where
int8 hurts.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlproc.compiler.network import CompiledNetwork
from dlproc.compiler.report import OutputError

__all__ = ["LayerComparison", "Comparison"]

#: How many of the lowest-SQNR layers the table marks.
WORST_MARKED = 3


@dataclass
class LayerComparison:
    """One layer's output on the processor against float.

    Attributes
    ----------
    name, op, target : str
        Layer name, kind and where it runs (``"hw"`` or ``"host"``).
    tensor : str
        The ONNX tensor holding the layer's output.
    cosine : float
        Cosine similarity of the flattened outputs (all frames).
    sqnr_db : float
        ``10 log10(sum(float**2) / sum((processor - float)**2))`` (inf when equal).
    max_abs : float
        Largest absolute difference.
    clipped : float
        Share of the float values outside the int8 range of the tensor's scale (``round(x / scale)`` beyond
        -128..127); 0 on the fp32 processor.
    scale : float or None
        The tensor's int8 scale.
    """

    name: str
    op: str
    target: str
    tensor: str
    cosine: float
    sqnr_db: float
    max_abs: float
    clipped: float
    scale: float | None


class Comparison:
    """Per-layer errors of the processor against the float network, in network order.

    ``print`` it for the table (the :data:`WORST_MARKED` layers with the lowest SQNR are marked); :meth:`to_dict`
    for programs.
    """

    def __init__(self, network: str, target: str, frames: int, layers: list[LayerComparison], notes: list[str]):
        self.network, self.target, self.frames, self.layers, self.notes = network, target, frames, layers, notes

    @classmethod
    def of(cls, compiled: CompiledNetwork, processor: dict[str, np.ndarray], reference: dict[str, np.ndarray],
           tensors: dict[str, str], target: str) -> Comparison:
        """Compare ``processor[layer]`` with ``reference[tensors[layer]]`` for every layer of ``tensors``."""
        by_name = {layer.name: layer for layer in compiled.layers}
        rows, notes, frames = [], [], 0
        for key, tensor in tensors.items():
            if tensor not in reference:
                notes.append(f"{key}: the float network has no tensor {tensor!r}; not compared")
                continue
            got, want = processor[key], np.asarray(reference[tensor])
            frames = got.shape[0]
            err = OutputError.of(want, got.reshape(want.shape))
            scale = compiled.tensors[tensor].get("scale")
            clipped = 0.0
            if scale:
                q = np.round(want.astype(np.float64) / scale)
                clipped = float(np.mean((q > 127) | (q < -128))) if q.size else 0.0
            layer = by_name.get(key) or by_name.get(key.rsplit(":", 1)[0])
            rows.append(LayerComparison(key, layer.op if layer else "", layer.target if layer else "", tensor,
                                        err.cosine, err.sqnr_db, err.max_abs, clipped, scale))
        return cls(compiled.name, target, frames, rows, notes)

    def worst(self, n: int = WORST_MARKED) -> list[LayerComparison]:
        """The ``n`` layers with the lowest SQNR (layers equal to float excluded), lowest first."""
        finite = [row for row in self.layers if row.sqnr_db != math.inf]
        return sorted(finite, key=lambda row: row.sqnr_db)[:n]

    def to_dict(self) -> dict[str, Any]:
        """``{"network", "target", "frames", "layers": [...], "worst": [names], "notes"}``; the SQNR of a layer
        equal to float is ``inf`` (:meth:`to_json` writes ``null``)."""
        return {"network": self.network, "target": self.target, "frames": self.frames,
                "layers": [asdict(row) for row in self.layers], "worst": [row.name for row in self.worst()],
                "notes": list(self.notes)}

    def to_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as strict JSON: an infinite SQNR (a layer equal to float) becomes ``null``."""
        d = self.to_dict()
        for row in d["layers"]:
            if not math.isfinite(row["sqnr_db"]):
                row["sqnr_db"] = None
        path = Path(path)
        path.write_text(json.dumps(d, indent=1, allow_nan=False) + "\n")
        return path

    def __str__(self) -> str:
        worst = {row.name: i + 1 for i, row in enumerate(self.worst())}
        head = (f"{'layer':<30} {'type':<8} {'runs on':<7} {'cosine':>9} {'SQNR dB':>8} {'max |err|':>10} "
                f"{'clipped':>8}")
        lines = [f"Per-layer error of {self.network!r} on {self.target!r} against the float network "
                 f"({self.frames} frame{'s' if self.frames != 1 else ''})", head, "-" * len(head)]
        for row in self.layers:
            mark = f"  <- worst {worst[row.name]}" if row.name in worst else ""
            where = "FPGA" if row.target == "hw" else row.target
            lines.append(f"{row.name[:30]:<30} {row.op[:8]:<8} {where:<7} {row.cosine:>9.5f} {row.sqnr_db:>8.2f} "
                         f"{row.max_abs:>10.4g} {row.clipped:>8.2%}{mark}")
        lines.append("* Errors accumulate along the network: the layer where the SQNR falls is where int8 loses "
                     "accuracy; 'clipped' is the share of float values outside the tensor's int8 range.")
        lines.extend(f"* {note}" for note in self.notes)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Comparison of {self.network!r} on {self.target!r}: {len(self.layers)} layers>"
