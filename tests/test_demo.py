"""The demo flow end to end on the tiny configurations (small sizes): compile, run on the RTL, profile, report."""

from pathlib import Path

import pytest

from dlproc.runtime.demo import EXAMPLE, run_demo

pytestmark = pytest.mark.skipif(not (EXAMPLE / "models" / "defect_trimmed.onnx").exists(),
                                reason="the example models are not generated")


@pytest.mark.slow  # end to end: four networks compiled and run on two RTL configurations
def test_demo_flow_on_tiny_configurations(tmp_path):
    result = run_demo(processor="tiny_int8", fp32_processor="tiny_fp32", frames=1, test_images=12,
                      calibration_images=8, out_dir=tmp_path, target="sim", quiet=True)
    names = [(v.network, v.precision) for v in result.variants]
    assert names == [("defect_full", "float32"), ("defect_full", "int8"), ("defect_trimmed", "float32"),
                     ("defect_trimmed", "int8")]
    for v in result.variants:
        assert v.accuracy is not None and 0.0 <= v.accuracy <= 1.0
        assert v.parameter_bytes > 0
        if v.precision == "int8":
            assert v.profile is not None and v.profile.source == "hardware counters" and v.profile.fps > 0
    full_f, full_q, trim_f, trim_q = result.variants
    assert trim_q.parameter_bytes < full_q.parameter_bytes < full_f.parameter_bytes
    assert trim_q.profile.total_cycles < full_q.profile.total_cycles  # trimming makes it faster
    for path in result.files:
        assert Path(path).is_file() and Path(path).stat().st_size > 0
    report = (tmp_path / "report.md").read_text()
    assert "frames/s" in report and "defect_trimmed" in report
    assert not list(tmp_path.glob("*.tmp*")), "no half-written outputs"
