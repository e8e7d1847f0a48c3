"""Draw a labelled grid of example network inputs (both parts x good + every defect) to ``samples.png``.

Usage (from the repository root)::

    python examples/defect_detection/samples.py [--out PATH] [--size 96] [--seed 7]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import dataset  # noqa: E402


def sample_grid(size: int = 96, seed: int = 7, zoom: int = 2) -> Image.Image:
    """Render a grid: one row per part, columns ``none`` then each of :data:`dataset.DEFECTS`.

    Parameters
    ----------
    size : int
        Network input size of each tile.
    seed : int
        Seed of the frames.
    zoom : int
        Nearest-neighbour magnification of each tile.

    Returns
    -------
    PIL.Image.Image
        The RGB grid with a caption on each tile.
    """
    kinds = ("none", *dataset.DEFECTS)
    tile = size * zoom
    grid = Image.new("RGB", (tile * len(kinds), tile * len(dataset.PARTS)))
    for r, part in enumerate(dataset.PARTS):
        for c, kind in enumerate(kinds):
            frame, _ = dataset.render_frame(np.random.default_rng([seed, r, c]), part, kind)
            x = dataset.preprocess(frame, size)
            im = Image.fromarray((x.transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8))
            im = im.resize((tile, tile), Image.NEAREST)
            ImageDraw.Draw(im).text((3, 2), f"{part}: {'ok' if kind == 'none' else kind}", fill=(255, 255, 0))
            grid.paste(im, (c * tile, r * tile))
    return grid


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=HERE / "samples.png")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    sample_grid(args.size, args.seed).save(args.out, optimize=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
