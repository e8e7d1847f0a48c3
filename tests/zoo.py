"""The ONNX model zoo architectures shipped in the onnx wheel (``onnx/backend/test/data/light``), made compilable.

The light models carry no trained weights: their weights come from ``ConstantOfShape`` nodes. :func:`zoo_model`
replaces each by a seeded random initializer (He-scaled, so activations keep a sensible range) and converts the
model from opset 9 to 13 with ``onnx.version_converter``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, version_converter

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
ZOO = sorted(p.stem.removeprefix("light_") for p in LIGHT.glob("light_*.onnx"))


def zoo_model(name: str, *, seed: int = 0, opset: int = 13) -> onnx.ModelProto:
    """Load ``light_<name>.onnx`` with seeded random weights in place of its ConstantOfShape nodes."""
    model = onnx.load(LIGHT / f"light_{name}.onnx")
    rng = np.random.default_rng(seed)
    inits = {i.name: i for i in model.graph.initializer}
    keep = []
    new_inits = []
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            shape = [int(d) for d in numpy_helper.to_array(inits[node.input[0]])]
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            if len(shape) == 1:  # biases and BN parameters: positive, so BN variances are valid
                value = rng.uniform(0.5, 1.5, shape)
            else:
                value = rng.normal(0, np.sqrt(2.0 / fan_in), shape)
            new_inits.append(numpy_helper.from_array(value.astype(np.float32), node.output[0]))
        else:
            keep.append(node)
    used = {n for node in keep for n in node.input}
    graph = model.graph
    del graph.node[:]
    graph.node.extend(keep)
    old = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(old + new_inits)
    names = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in names and i.name in used | {o.name for o in graph.output}]
    del graph.input[:]
    graph.input.extend(inputs)
    model.ir_version = max(model.ir_version, 7)  # IR < 4 required initializers to be graph inputs too
    return version_converter.convert_version(model, opset)
