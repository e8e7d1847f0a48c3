"""The defect-detection demo: its image generator and the two shipped ONNX classifiers.

Needs only numpy, Pillow and onnx (no PyTorch): the models are run with onnx.reference.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from dlproc.compiler.float_ref import float_evaluator

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "defect_detection"
MODELS = EXAMPLE / "models"
MODEL_NAMES = ("defect_full", "defect_trimmed")
ALLOWED_OPS = {"Conv", "Relu", "MaxPool", "Flatten", "Gemm", "MatMul", "Add", "Reshape", "BatchNormalization"}
HELD_OUT_SEED = 424242  # used neither for training (1001) nor for the reported test set (2002)
HELD_OUT_N = 64
# Accuracy required on the fresh 64-image batch. train.py measured 96.3 % (full) and 94.5 % (trimmed) on
# its 1000 held-out images (models/metadata.json); on this particular batch the shipped models score
# 92.2 % and 90.6 %. 64 samples are noisy (one image = 1.6 %), hence the margin.
MIN_ACCURACY = {"defect_full": 0.89, "defect_trimmed": 0.86}


def _load_dataset():
    spec = importlib.util.spec_from_file_location("defect_dataset", EXAMPLE / "dataset.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


dataset = _load_dataset()


@pytest.fixture(scope="module")
def metadata() -> dict:
    return json.loads((MODELS / "metadata.json").read_text())


@pytest.fixture(scope="module")
def held_out(metadata: dict) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    size = metadata["input"]["shape"][-1]
    return dataset.generate(HELD_OUT_N, seed=HELD_OUT_SEED, size=size)


# ------------------------------------------------------------------------------------------ generator


def test_generator_is_deterministic() -> None:
    a = dataset.generate(6, seed=11, size=64)
    b = dataset.generate(6, seed=11, size=64)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert [(m["part"], m["defect"]) for m in a[2]] == [(m["part"], m["defect"]) for m in b[2]]
    c = dataset.generate(6, seed=12, size=64)
    assert not np.array_equal(a[0], c[0])


def test_generator_shapes_dtypes_ranges() -> None:
    images, labels, meta = dataset.generate(5, seed=3, size=80)
    assert images.shape == (5, 3, 80, 80) and images.dtype == np.float32
    assert labels.shape == (5,) and labels.dtype == np.int64
    assert len(meta) == 5
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.std() > 0.05  # not blank
    assert set(labels.tolist()) <= {0, 1}
    default, _, _ = dataset.generate(1, seed=3)
    assert default.shape == (1, 3, 128, 128)
    assert dataset.CLASSES == ("ok", "defective")


def test_generator_covers_classes_parts_and_defects() -> None:
    _, labels, meta = dataset.generate(16, seed=5, size=32)
    assert set(labels.tolist()) == {0, 1}
    assert {m["part"] for m in meta} == {"nut", "bolt"}
    assert {m["defect"] for m in meta} == {"none", *dataset.DEFECTS}
    for label, m in zip(labels, meta, strict=True):
        assert (label == 0) == (m["defect"] == "none")
        assert m["part"] in dataset.PARTS
    _, labels, _ = dataset.generate(10, seed=5, size=32, defect_fraction=0.3)
    assert labels.sum() == 3


def test_preprocess_crops_and_resizes() -> None:
    frames, labels, _ = dataset.generate_frames(2, seed=8)
    assert frames.shape == (2, *dataset.FRAME_SHAPE, 3) and frames.dtype == np.uint8
    x = dataset.preprocess(frames[0], 96)
    assert x.shape == (3, 96, 96) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    # channel-first float input gives the same result as the camera's uint8 HWC frame
    y = dataset.preprocess(frames[0].transpose(2, 0, 1).astype(np.float32) / 255.0, 96)
    np.testing.assert_allclose(x, y, atol=1e-6)
    # at the ROI's own size pre-processing is a pure crop
    top, left, h, w = dataset.ROI
    z = dataset.preprocess(frames[1], h)
    np.testing.assert_allclose(z, frames[1, top:top + h, left:left + w].transpose(2, 0, 1) / 255.0, atol=1e-6)
    images, _, _ = dataset.generate(2, seed=8, size=96)
    np.testing.assert_array_equal(images[0], x)


def test_render_frame_rejects_unknown_kinds() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        dataset.render_frame(rng, "washer")
    with pytest.raises(ValueError):
        dataset.render_frame(rng, "nut", "rust")


# ------------------------------------------------------------------------------------------ models


def test_metadata(metadata: dict) -> None:
    assert metadata["classes"] == ["ok", "defective"]
    assert metadata["data"]["train_seed"] != metadata["data"]["test_seed"]
    assert HELD_OUT_SEED not in (metadata["data"]["train_seed"], metadata["data"]["test_seed"])
    assert metadata["regenerate"] == "python examples/defect_detection/train.py"
    full, trimmed = (metadata["models"][n] for n in MODEL_NAMES)
    assert full["float_top1_accuracy"] >= MIN_ACCURACY["defect_full"]
    assert trimmed["float_top1_accuracy"] >= MIN_ACCURACY["defect_trimmed"]
    assert trimmed["parameters"] < full["parameters"]
    assert trimmed["macs_per_image"] < full["macs_per_image"]
    total = sum((MODELS / f"{n}.onnx").stat().st_size for n in MODEL_NAMES)
    assert total <= 10 * 1024 * 1024


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_is_valid_onnx(name: str, metadata: dict) -> None:
    model = onnx.load(str(MODELS / f"{name}.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain or "ai.onnx": o.version for o in model.opset_import}.get("ai.onnx") == 17
    ops = {n.op_type for n in model.graph.node}
    assert ops <= ALLOWED_OPS, ops - ALLOWED_OPS
    assert "Softmax" not in ops
    convs = sum(n.op_type == "Conv" for n in model.graph.node)
    assert convs == (5 if name == "defect_full" else 3)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "image" and out.name == "logits"
    dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    size = metadata["input"]["shape"][-1]
    assert dims[1:] == [3, size, size]
    assert dims[0] in (1, "batch")
    assert metadata["models"][name]["sha256"]  # recorded by train.py


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_classifies_held_out_batch(name: str, held_out: tuple) -> None:
    images, labels, meta = held_out
    session = float_evaluator(str(MODELS / f"{name}.onnx"))
    (logits,) = session.run(None, {"image": images})
    assert logits.shape == (len(images), 2) and logits.dtype == np.float32
    assert np.isfinite(logits).all()
    pred = logits.argmax(axis=1)
    accuracy = float((pred == labels).mean())
    wrong = [f"{m['part']}/{m['defect']}" for m, p, y in zip(meta, pred, labels, strict=True) if p != y]
    assert accuracy >= MIN_ACCURACY[name], f"{name}: accuracy {accuracy:.3f}, misclassified {wrong}"
    # a single image (batch 1) gives the same logits as inside the batch
    (single,) = session.run(None, {"image": images[:1]})
    np.testing.assert_allclose(single, logits[:1], rtol=1e-5, atol=1e-5)
