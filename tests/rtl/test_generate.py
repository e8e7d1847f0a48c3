"""``generate``: Verilog and RTLIL of the top level plus the configuration, for one small preset."""

from __future__ import annotations

import json

from dlproc.processor.config import ProcessorConfig
from dlproc.processor.generate import TOP_NAME, generate


def test_generate_tiny(tmp_path):
    paths = generate("tiny_int8", tmp_path / "hdl")
    assert set(paths) == {"verilog", "rtlil", "config"}
    verilog = paths["verilog"].read_text()
    assert f"module {TOP_NAME}(" in verilog
    for port in ("s_axil__awaddr", "m_axi__araddr", "m_axi__rid", "m_axi__wlast", "irq", "clk", "rst"):
        assert port in verilog, port
    assert f"module \\{TOP_NAME}\n" in paths["rtlil"].read_text()
    config = ProcessorConfig.from_dict(json.loads(paths["config"].read_text()))
    assert config == ProcessorConfig.preset("tiny_int8")


def test_generate_verilog_only(tmp_path):
    paths = generate(ProcessorConfig.preset("tiny_int8"), tmp_path, rtlil_output=False)
    assert set(paths) == {"verilog", "config"} and not (tmp_path / f"{TOP_NAME}.il").exists()
