"""Train the two AlexNet-style defect classifiers of the demo and export them to ONNX.

Usage (from the repository root)::

    python examples/defect_detection/train.py

needs PyTorch (CPU build) next to numpy, Pillow and onnx; PyTorch is not a dependency of dlproc itself,
only of this script. It writes, under ``examples/defect_detection/models/``:

* ``defect_full.onnx`` -- AlexNet-style: five convolutions (the first 7x7 stride 2) with ReLU, three
  max-pools, two hidden fully connected layers with ReLU and dropout, a 2-class output;
* ``defect_trimmed.onnx`` -- the same network with conv4/conv5 trimmed away, fewer channels and one
  hidden fully connected layer, retrained from scratch;
* ``metadata.json`` -- input size, classes, normalisation, seeds, data set sizes, accuracies, parameter
  counts, timings and the regeneration command.

Training uses batch normalisation; it is folded into the convolution weights before export, so the
ONNX graphs contain only Conv, Relu, MaxPool, Flatten and Gemm. Inputs are RGB in [0, 1] without
further normalisation. All seeds are fixed, PyTorch runs in deterministic mode with a fixed number of
threads, so rerunning the script on the same machine reproduces the same files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from dlproc.compiler.float_ref import float_evaluator

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import dataset  # noqa: E402  (the generator lives next to this script)

INPUT_SIZE = 96
TRAIN_SEED = 1001  # data seed of the training set
TEST_SEED = 2002  # data seed of the held-out test set (never trained on)
TORCH_SEED = 7
THREADS = 1
LR = 1e-3
ALLOWED_OPS = {"Conv", "Relu", "MaxPool", "Flatten", "Gemm"}
REGENERATE = "python examples/defect_detection/train.py"

# (name, channels of the convolutions, hidden fully connected widths)
ARCHITECTURES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "defect_full": ((24, 48, 64, 64, 48), (256, 128)),
    "defect_trimmed": ((16, 32, 48), (128,)),
}


class AlexNetStyle(nn.Module):
    """AlexNet-style classifier for small inputs.

    conv1 7x7/2 -> pool 3/2 -> conv2 5x5 -> pool 3/2 -> conv3..convN 3x3 -> pool 5/3 -> fc... -> 2 logits.
    At 96x96 the feature maps are 48 -> 23 -> 23 -> 11 -> 11 ... -> 3.
    Every convolution is followed by batch normalisation (folded away at export) and ReLU.

    Parameters
    ----------
    channels : sequence of int
        Output channels of the convolutions; at least three (conv1, conv2, conv3).
    hidden : sequence of int
        Widths of the hidden fully connected layers (each followed by ReLU and dropout).
    input_size : int
        Side of the square RGB input.
    dropout : float
        Dropout probability after each hidden fully connected layer.
    """

    def __init__(self, channels: Sequence[int], hidden: Sequence[int], input_size: int = INPUT_SIZE,
                 dropout: float = 0.3) -> None:
        super().__init__()
        if len(channels) < 3:
            raise ValueError("need at least three convolutions")
        layers: list[nn.Module] = []
        prev = 3
        for i, ch in enumerate(channels):
            k, s = (7, 2) if i == 0 else (5, 1) if i == 1 else (3, 1)
            layers += [nn.Conv2d(prev, ch, k, s, k // 2, bias=False), nn.BatchNorm2d(ch), nn.ReLU()]
            if i in (0, 1):
                layers.append(nn.MaxPool2d(3, 2))
            elif i == len(channels) - 1:  # coarse last pool: defects may sit anywhere on the part
                layers.append(nn.MaxPool2d(5, 3))
            prev = ch
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            n = self.features(torch.zeros(1, 3, input_size, input_size)).numel()
        head: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            head += [nn.Linear(n, width), nn.ReLU(), nn.Dropout(dropout)]
            n = width
        head.append(nn.Linear(n, len(dataset.CLASSES)))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the class logits ``[N, 2]`` of a batch ``[N, 3, H, W]``."""
        return self.classifier(self.features(x))

    def folded(self) -> nn.Sequential:
        """An equivalent inference network with batch norm folded into the convolutions, no dropout.

        Returns
        -------
        torch.nn.Sequential
            Conv2d (with bias) / ReLU / MaxPool2d / Flatten / Linear / ReLU layers only, in eval mode.
        """
        out: list[nn.Module] = []
        mods = list(self.features)
        i = 0
        while i < len(mods):
            m = mods[i]
            if isinstance(m, nn.Conv2d):
                bn = mods[i + 1]
                assert isinstance(bn, nn.BatchNorm2d)
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                conv = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, bias=True)
                conv.weight.data = (m.weight * scale[:, None, None, None]).detach().clone()
                conv.bias.data = (bn.bias - bn.running_mean * scale).detach().clone()
                out.append(conv)
                i += 2
                continue
            out.append(m)
            i += 1
        out += [m for m in self.classifier if not isinstance(m, nn.Dropout)]
        return nn.Sequential(*out).eval()


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flips and quarter turns (parts lie in any orientation) plus brightness jitter."""
    if torch.rand((), generator=gen) < 0.5:
        x = x.flip(3)
    k = int(torch.randint(0, 4, (), generator=gen))
    x = torch.rot90(x, k, (2, 3))
    gain = 1.0 + 0.15 * (torch.rand(x.shape[0], 1, 1, 1, generator=gen) - 0.5)
    return (x * gain).clamp(0.0, 1.0)


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch: int = 250) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on ``images``."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, len(images), batch):
            logits = model(torch.from_numpy(images[s:s + batch]))
            correct += int((logits.argmax(1).numpy() == labels[s:s + batch]).sum())
    return correct / len(images)


def train(name: str, images: np.ndarray, labels: np.ndarray, epochs: int, log_every: int = 1) -> AlexNetStyle:
    """Train one architecture from :data:`ARCHITECTURES` with fixed seeds.

    Parameters
    ----------
    name : str
        Key of :data:`ARCHITECTURES`.
    images, labels : numpy.ndarray
        Training data ``[N, 3, S, S]`` float32 and ``[N]`` int64.
    epochs : int
        Number of passes over the data.
    log_every : int
        Print the running loss every this many epochs.

    Returns
    -------
    AlexNetStyle
        The trained model (eval mode).
    """
    torch.manual_seed(TORCH_SEED)
    gen = torch.Generator().manual_seed(TORCH_SEED)
    channels, hidden = ARCHITECTURES[name]
    model = AlexNetStyle(channels, hidden, images.shape[-1])
    batch = 64
    steps = epochs * ((len(images) + batch - 1) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.15)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(images), generator=gen)
        total, t0 = 0.0, time.time()
        for s in range(0, len(images), batch):
            idx = order[s:s + batch]
            x = _augment(x_all[idx], gen)
            loss = nn.functional.cross_entropy(model(x), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if (epoch + 1) % log_every == 0:
            print(f"  {name} epoch {epoch + 1}/{epochs}: loss {total / len(images):.4f} ({time.time() - t0:.1f} s)",
                  flush=True)
    return model.eval()


def export(model: AlexNetStyle, path: Path, check_images: np.ndarray) -> float:
    """Fold batch norm, export to ONNX (opset 17) and check the file.

    Parameters
    ----------
    model : AlexNetStyle
        Trained model.
    path : pathlib.Path
        Output ``.onnx`` file.
    check_images : numpy.ndarray
        A few images ``[n, 3, S, S]`` on which onnx.reference must agree with PyTorch.

    Returns
    -------
    float
        Largest absolute difference of the logits between PyTorch (un-folded model) and
        onnx.reference (exported file); must be below 1e-4.
    """
    plain = model.folded()
    size = check_images.shape[-1]
    torch.onnx.export(plain, (torch.zeros(1, 3, size, size),), str(path), input_names=["image"],
                      output_names=["logits"], opset_version=17, dynamo=False, do_constant_folding=True,
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load(str(path))
    proto.doc_string = "dlproc defect-detection demo: RGB [N,3,H,W] in [0,1] -> logits [N,2] (ok, defective)"
    proto.producer_name = "dlproc examples/defect_detection/train.py"
    onnx.save(proto, str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = {n.op_type for n in proto.graph.node}
    if not ops <= ALLOWED_OPS:
        raise RuntimeError(f"{path.name}: unexpected operators {sorted(ops - ALLOWED_OPS)}")
    ref = float_evaluator(proto).run(None, {"image": check_images})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(check_images)).numpy()
    diff = float(np.abs(ref - want).max())
    if diff >= 1e-4:
        raise RuntimeError(f"{path.name}: onnx.reference differs from PyTorch by {diff}")
    return diff


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: generate data, train both models, export, write metadata.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (defaults to ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=HERE / "models", help="output folder (default: %(default)s)")
    p.add_argument("--train-size", type=int, default=4000)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--epochs-full", type=int, default=28)
    p.add_argument("--epochs-trimmed", type=int, default=36)
    args = p.parse_args(argv)

    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    t_start = time.time()

    print(f"generating {args.train_size} training images (seed {TRAIN_SEED}) ...", flush=True)
    t0 = time.time()
    x_train, y_train, _ = dataset.generate(args.train_size, seed=TRAIN_SEED, size=INPUT_SIZE)
    print(f"generating {args.test_size} held-out test images (seed {TEST_SEED}) ...", flush=True)
    x_test, y_test, meta_test = dataset.generate(args.test_size, seed=TEST_SEED, size=INPUT_SIZE)
    t_data = time.time() - t0
    print(f"  data: {t_data:.1f} s", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    epochs = {"defect_full": args.epochs_full, "defect_trimmed": args.epochs_trimmed}
    models: dict[str, dict] = {}
    for name in ARCHITECTURES:
        t0 = time.time()
        model = train(name, x_train, y_train, epochs[name])
        t_train = time.time() - t0
        acc = evaluate(model, x_test, y_test)
        path = args.out / f"{name}.onnx"
        diff = export(model, path, x_test[:8])
        with torch.no_grad():
            pred = model(torch.from_numpy(x_test)).argmax(1).numpy()
        per_kind: dict[str, float] = {}
        for kind in ("none", *dataset.DEFECTS):
            sel = np.array([m["defect"] == kind for m in meta_test])
            per_kind[kind] = round(float((pred[sel] == y_test[sel]).mean()), 4)
        per_part: dict[str, float] = {}
        for part in dataset.PARTS:
            sel = np.array([m["part"] == part for m in meta_test])
            per_part[part] = round(float((pred[sel] == y_test[sel]).mean()), 4)
        n_params = sum(int(q.numel()) for q in model.folded().parameters())
        macs = _count_macs(model.folded(), INPUT_SIZE)
        models[name] = {
            "file": path.name,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "bytes": path.stat().st_size,
            "parameters": n_params,
            "macs_per_image": macs,
            "conv_channels": list(ARCHITECTURES[name][0]),
            "fc_hidden": list(ARCHITECTURES[name][1]),
            "epochs": epochs[name],
            "float_top1_accuracy": round(acc, 4),
            "accuracy_by_defect": per_kind,
            "accuracy_by_part": per_part,
            "onnx_reference_max_abs_diff": diff,
            "train_seconds": round(t_train, 1),
        }
        print(f"{name}: {n_params} parameters, {path.stat().st_size} bytes, {macs / 1e6:.1f} M MAC/image, "
              f"held-out top-1 {acc:.4f} ({t_train:.0f} s); by defect {per_kind}", flush=True)

    meta = {
        "task": "classify pre-processed frames of nuts and bolts as ok or defective",
        "input": {"name": "image", "shape": [1, 3, INPUT_SIZE, INPUT_SIZE], "layout": "NCHW",
                  "color": "RGB", "range": [0.0, 1.0], "dynamic_batch": True},
        "output": {"name": "logits", "shape": [1, len(dataset.CLASSES)], "softmax": False},
        "classes": list(dataset.CLASSES),
        "normalization": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
                          "note": "none: pixels divided by 255 only"},
        "preprocess": {"frame_shape": list(dataset.FRAME_SHAPE), "roi_top_left_height_width": list(dataset.ROI),
                       "resize": "bilinear (Pillow, antialiased) to input size"},
        "onnx": {"opset": 17, "operators": sorted(ALLOWED_OPS), "batch_norm": "folded into Conv"},
        "data": {"generator": "examples/defect_detection/dataset.py", "train_seed": TRAIN_SEED,
                 "train_size": args.train_size, "test_seed": TEST_SEED, "test_size": args.test_size,
                 "defect_fraction": 0.5, "parts": list(dataset.PARTS), "defects": list(dataset.DEFECTS)},
        "training": {"framework": f"torch {torch.__version__}", "torch_seed": TORCH_SEED, "threads": THREADS,
                     "deterministic": True, "optimizer": f"AdamW lr {LR} wd 5e-4, one-cycle", "batch": 64,
                     "augmentation": "flips, quarter turns, +-7.5% brightness",
                     "python": platform.python_version(), "numpy": np.__version__, "onnx": onnx.__version__,
                     "data_seconds": round(t_data, 1), "total_seconds": round(time.time() - t_start, 1)},
        "models": models,
        "regenerate": REGENERATE,
    }
    (args.out / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.out} in {time.time() - t_start:.0f} s", flush=True)
    return 0


def _count_macs(model: nn.Sequential, size: int) -> int:
    """Multiply-accumulates per image of the convolutions and fully connected layers."""
    macs = 0
    x = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        for m in model:
            y = m(x)
            if isinstance(m, nn.Conv2d):
                macs += y.numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            elif isinstance(m, nn.Linear):
                macs += m.in_features * m.out_features
            x = y
    return int(macs)


if __name__ == "__main__":
    sys.exit(main())
