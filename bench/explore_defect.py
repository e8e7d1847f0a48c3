"""Wall time of the design-space search of docs/explore.md: the defect-detection networks at 120 frames/s.

Prints the points, compilations, rejections, the recommended configuration and the seconds taken, in this process
(``--workers 0``) and on a local Ray with N workers. Run: ``.venv/bin/python bench/explore_defect.py [N]``.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

from dlproc.runtime.explore import explore

MODELS = Path(__file__).resolve().parents[1] / "examples" / "defect_detection" / "models"


def main() -> None:
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else (os.cpu_count() or 1)
    nets = [str(MODELS / "defect_trimmed.onnx"), str(MODELS / "defect_full.onnx")]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for w in (0, workers):
        start = time.monotonic()
        result = explore(nets, fps=120, board="zcu102", workers=w)
        seconds = time.monotonic() - start
        where = "in this process" if w == 0 else f"Ray, {w} workers (including Ray's start)"
        rec = result.recommended.label() if result.recommended else "none"
        print(f"{where:<45} {seconds:7.1f} s  {len(result.points)} points, {result.compilations} compilations, "
              f"rejected {result.rejected}, recommended {rec}")


if __name__ == "__main__":
    main()
