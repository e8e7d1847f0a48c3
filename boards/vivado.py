"""The Vivado build of a processor for a board: a complete project plan, and running it when Vivado is there.

:func:`write_build_plan` writes into one directory everything Vivado needs to turn a processor configuration into
a bitstream for the ZCU102, with the processor attached to the Zynq UltraScale+ PS:

================================  =====================================================================
``dlproc_top.v``                  the processor (:func:`dlproc.processor.generate.generate`)
``dlproc_bd.v``                   a wrapper with Vivado interface attributes, so the block design sees
                                  ``s_axil`` (AXI4-Lite), ``m_axi`` (AXI4), ``clk``, ``rst`` and ``irq``
``build.tcl``                     project, block design (PS with the ZCU102 preset, pl_clk0 at
                                  ``config.clock_mhz``, proc_sys_reset, SmartConnects, HP1 / HPM0 / IRQ0,
                                  addresses), synthesis, implementation, timing gate, then bitstream,
                                  XSA, ``.bit.bin``
``dlproc_zcu102.xdc``             constraints beyond what the PS IP brings
``build.sh``                      ``vivado -mode batch -source build.tcl``
``dlproc.dtso``                   device-tree overlay: the PS settings (AFI port widths, pl_clk0, PL
                                  reset), UIO for registers + interrupt, u-dma-buf for DDR
``shell.json``                    lets dfx-mgr / ``xmutil loadapp`` load the bitstream as an app firmware
``config.json``                   the processor configuration
``README.md``                     part, PS, clock, addresses, and how to load the bitstream on the board
================================  =====================================================================

The artifacts are named after the configuration's hardware hash: ``dlproc_<hash>_zcu102.bit``, ``.bit.bin``
and ``.xsa``, so a bitstream always says which processor it holds (the runtime checks the same hash in the
CONFIG_HASH register). The PS-side settings (port widths, clock, reset) have one owner,
:class:`dlproc.boards.zynqmp.PsAttachment`, which writes them both into ``build.tcl`` and into ``dlproc.dtso``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from importlib import resources as importlib_resources
from pathlib import Path

from amaranth.hdl import Shape
from amaranth.lib import wiring

from dlproc.processor.config import ProcessorConfig

from .zcu102 import ZCU102_BOARD_PART, ZCU102_PART
from .zynqmp import REGS_BASE, UDMABUF_NAME, PsAttachment

__all__ = ["BuildPlan", "write_build_plan", "BOARD_DESIGNS", "REGS_BASE", "VivadoError", "wrapper_verilog"]

#: Boards with a block design template.
BOARD_DESIGNS = ("zcu102",)
#: One-line command that runs the plan.
VIVADO_COMMAND = "vivado -mode batch -source build.tcl"


class VivadoError(RuntimeError):
    """Vivado was asked to run but is missing, or the build failed (the message points at the log)."""


@dataclass
class BuildPlan:
    """The files of a Vivado build and, if Vivado ran, its outcome.

    Attributes
    ----------
    config : ProcessorConfig
    board : str
    out_dir : Path
    files : list of Path
        Every file written.
    paths : dict of str to Path
        The same files by role (``verilog``, ``wrapper``, ``tcl``, ``xdc``, ``script``, ``overlay``, ``readme``,
        ``config``, ``shell``).
    command : str
        The one-line command that runs the build in :attr:`out_dir`.
    ran : bool
        Whether Vivado was run.
    returncode : int or None
        Vivado's exit status when it ran.
    bitstream, bitstream_bin, xsa : Path
        Where the build puts its products (they exist only after a successful run).
    log : Path or None
        Vivado's log when it ran.
    """

    config: ProcessorConfig
    board: str
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)
    command: str = VIVADO_COMMAND
    ran: bool = False
    returncode: int | None = None
    bitstream: Path | None = None
    bitstream_bin: Path | None = None
    xsa: Path | None = None
    log: Path | None = None

    @property
    def artifact_name(self) -> str:
        """Base name of the bitstream, ``dlproc_<hash>_<board>``."""
        return artifact_name(self.config, self.board)

    @property
    def succeeded(self) -> bool:
        """Vivado ran and the bitstream exists."""
        return self.ran and self.returncode == 0 and self.bitstream is not None and self.bitstream.exists()

    def __str__(self) -> str:
        lines = [f"Vivado build plan for [{self.config.hardware_hash}] on {self.board} in {self.out_dir}:"]
        lines += [f"  {p.relative_to(self.out_dir)}" for p in self.files]
        if self.ran:
            state = "succeeded" if self.succeeded else f"FAILED (exit {self.returncode}, log {self.log})"
            lines.append(f"Vivado ran: {state}")
            if self.succeeded:
                lines.append(f"  bitstream {self.bitstream}\n  XSA       {self.xsa}")
        else:
            lines.append(f"Vivado did not run; run the build on a machine with Vivado:\n  cd {self.out_dir} && "
                         f"{self.command}")
        return "\n".join(lines)


def artifact_name(config: ProcessorConfig, board: str) -> str:
    """``dlproc_<hardware hash>_<board>``: the base name of the bitstream, XSA and ``.bit.bin``."""
    return f"dlproc_{config.hardware_hash}_{board}"


# ---------------------------------------------------------------------------------------------------- the wrapper
def _top_component(config: ProcessorConfig) -> wiring.Component:
    from dlproc.processor.top import DLProcessor

    return DLProcessor(config=config)


def wrapper_verilog(component: wiring.Component, *, module: str = "dlproc_bd", inner: str = "dlproc_top") -> str:
    """A Verilog wrapper of ``inner`` whose ports carry Vivado ``X_INTERFACE_INFO`` attributes.

    Amaranth names the flattened interface ports ``s_axil__awaddr``; Vivado's automatic interface inference
    for module references does not recognize that spelling, so the wrapper renames them ``s_axil_awaddr`` and
    declares the interfaces (AXI4-Lite slave, AXI4 master, clock with its bus interfaces and reset, reset,
    level-high interrupt) explicitly.

    Parameters
    ----------
    component : wiring.Component
        The processor top (only its signature is used): members ``s_axil``, ``m_axi``, ``irq``.
    module, inner : str
        Names of the wrapper and of the wrapped module.
    """
    members = component.signature.members
    for needed in ("s_axil", "m_axi", "irq"):
        if needed not in members:
            raise ValueError(f"{type(component).__name__} lacks the top-level port {needed!r}")
    ports: list[tuple[str, str, int, str | None, str | None]] = []  # (direction, name, width, bus, bus port)
    ports.append(("input", "clk", 1, None, None))
    ports.append(("input", "rst", 1, None, None))
    for path, member in members.flatten():
        if not member.is_port:
            continue
        width = Shape.cast(member.shape).width
        direction = "input" if member.flow == wiring.In else "output"
        bus = path[0] if len(path) > 1 else None
        ports.append((direction, "_".join(path), width, bus, path[-1].upper() if bus else None))

    axi = members["m_axi"].signature.members
    lite = members["s_axil"].signature.members

    def width_of(bus_members, name: str) -> int:
        return Shape.cast(bus_members[name].shape).width

    bus_params = {
        "s_axil": "PROTOCOL AXI4LITE, DATA_WIDTH 32, ADDR_WIDTH "
                  f"{width_of(lite, 'awaddr')}, HAS_BURST 0, HAS_LOCK 0, "
                  "HAS_PROT 0, HAS_CACHE 0, HAS_QOS 0, HAS_REGION 0",
        "m_axi": f"PROTOCOL AXI4, DATA_WIDTH {width_of(axi, 'wdata')}, "
                 f"ADDR_WIDTH {width_of(axi, 'awaddr')}, ID_WIDTH {width_of(axi, 'awid')}, "
                 "HAS_BURST 1, HAS_CACHE 1, HAS_PROT 1, HAS_LOCK 0, HAS_QOS 0, HAS_REGION 0, "
                 "SUPPORTS_NARROW_BURST 0, MAX_BURST_LENGTH 256",
    }
    lines = [
        "// Vivado block-design wrapper of the dlproc processor: renames the ports and declares the interfaces.",
        "// Generated by dlproc.boards.vivado.wrapper_verilog; regenerate instead of editing.",
        "`timescale 1ns / 1ps",
        f"module {module} (",
    ]
    decls = []
    seen_bus: set[str] = set()
    for direction, name, width, bus, bus_port in ports:
        attrs = []
        if name == "clk":
            attrs.append('(* X_INTERFACE_PARAMETER = "ASSOCIATED_BUSIF s_axil:m_axi, ASSOCIATED_RESET rst" *)')
            attrs.append('(* X_INTERFACE_INFO = "xilinx.com:signal:clock:1.0 clk CLK" *)')
        elif name == "rst":
            attrs.append('(* X_INTERFACE_PARAMETER = "POLARITY ACTIVE_HIGH" *)')
            attrs.append('(* X_INTERFACE_INFO = "xilinx.com:signal:reset:1.0 rst RST" *)')
        elif name == "irq":
            attrs.append('(* X_INTERFACE_PARAMETER = "SENSITIVITY LEVEL_HIGH" *)')
            attrs.append('(* X_INTERFACE_INFO = "xilinx.com:signal:interrupt:1.0 irq INTERRUPT" *)')
        elif bus is not None:
            if bus not in seen_bus and bus in bus_params:
                attrs.append(f'(* X_INTERFACE_PARAMETER = "{bus_params[bus]}" *)')
                seen_bus.add(bus)
            attrs.append(f'(* X_INTERFACE_INFO = "xilinx.com:interface:aximm:1.0 {bus} {bus_port}" *)')
        rng = f"[{width - 1}:0] " if width > 1 else ""
        prefix = "".join(f"    {a}\n" for a in attrs)
        decls.append(f"{prefix}    {direction} wire {rng}{name}")
    lines.append(",\n".join(decls))
    lines.append(");")
    conns = []
    for _direction, name, _width, bus, bus_port in ports:
        inner_name = f"{bus}__{bus_port.lower()}" if bus else name
        conns.append(f"        .{inner_name}({name})")
    lines.append(f"    {inner} core (\n" + ",\n".join(conns) + "\n    );")
    lines.append("endmodule")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- the plan
def _template(name: str) -> str:
    return importlib_resources.files("dlproc.boards").joinpath("templates", name).read_text()


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    if "@@" in text.replace("@@@", ""):
        leftover = text[text.index("@@"):][:40]
        raise AssertionError(f"unfilled template placeholder near {leftover!r}")
    return text


def _dlproc_version() -> str:
    try:
        import importlib.metadata as md

        return md.version("dlproc")
    except Exception:  # pragma: no cover
        return "dev"


def write_build_plan(config: ProcessorConfig | str, out_dir: str | Path, board: str = "zcu102",
                     run: bool | None = None, *, verilog: str | None = None, overwrite: bool = False) -> BuildPlan:
    """Write the Vivado project plan of a processor for a board, and run it if Vivado is available.

    Parameters
    ----------
    config : ProcessorConfig or str
        The configuration, a preset name or a JSON file.
    out_dir : str or Path
        Output directory (created; an existing empty one is used). The plan appears complete or not at all
        (written to a temporary sibling, then renamed, see :mod:`dlproc.outputs`); Vivado then runs in it.
    board : str
        Only ``"zcu102"`` has a block design so far.
    run : bool, optional
        ``None`` (default): run Vivado when ``vivado`` is on PATH. ``True``: run it, fail if it is missing.
        ``False``: only write the plan.
    verilog : str, optional
        Verilog text of ``dlproc_top`` to use instead of generating it (tests with a stand-in top).
    overwrite : bool
        Replace a previous build directory (one holding ``config.json``) at ``out_dir``.

    Returns
    -------
    BuildPlan
        ``.files``, ``.command`` and ``.ran``; after a run also ``.returncode``, ``.bitstream``, ``.xsa``.

    Raises
    ------
    VivadoError
        ``run=True`` without Vivado on PATH.
    """
    config = ProcessorConfig.load(config)
    if board not in BOARD_DESIGNS:
        raise ValueError(f"no Vivado block design for board {board!r}; boards are {', '.join(BOARD_DESIGNS)}")
    vivado = shutil.which("vivado")
    if run and vivado is None:
        raise VivadoError(f"vivado is not on PATH: source Vivado's settings64.sh, or run `{VIVADO_COMMAND}` in "
                          f"{out_dir} on a machine that has it")
    from dlproc.outputs import atomic_dir, check_output

    out = check_output(out_dir, overwrite=overwrite, kind="dir", marker="config.json", what="build directory")
    stage: dict[str, tuple[str, bool]] = {}  # written into place at the end, whole or not at all
    name = artifact_name(config, board)
    plan = BuildPlan(config=config, board=board, out_dir=out, bitstream=out / f"{name}.bit",
                     bitstream_bin=out / f"{name}.bit.bin", xsa=out / f"{name}.xsa")

    def put(role: str, filename: str, text: str, *, executable: bool = False) -> None:
        path = out / filename
        stage[filename] = (text, executable)
        plan.files.append(path)
        plan.paths[role] = path

    # The processor's Verilog and its block-design wrapper.
    if verilog is None:
        from dlproc.processor.generate import TOP_NAME, generate

        with tempfile.TemporaryDirectory(prefix="dlproc-hdl-") as tmp:
            verilog = generate(config, tmp, verilog_output=True, rtlil_output=False)["verilog"].read_text()
            assert TOP_NAME == "dlproc_top"
    put("verilog", "dlproc_top.v", verilog)
    top = _top_component(config)
    put("wrapper", "dlproc_bd.v", wrapper_verilog(top))
    top._MustUse__silence = True  # only its signature was needed; no elaboration intended

    ps = PsAttachment.from_config(config)
    ddr_segments = ["DDR_LOW"]
    if config.axi_addr_width >= 36:   # DDR_HIGH starts at 0x8_0000_0000: reachable with 36+ address bits
        ddr_segments.append("DDR_HIGH")
    ps_properties = " \\\n".join(f"    CONFIG.{name} {{{value}}}" for name, value in ps.tcl_properties()) + " \\"
    values = {
        "HASH": config.hardware_hash, "PART": ZCU102_PART, "BOARD_PART": ZCU102_BOARD_PART,
        "CLOCK_MHZ": f"{config.clock_mhz:g}", "ARTIFACT": name, "VERSION": _dlproc_version(),
        "REGS_BASE": f"0x{REGS_BASE:08X}", "AXI_DATA_WIDTH": str(config.axi_data_width),
        "HP_NAME": ps.hp_name, "HP_WIDTH": str(ps.hp_width), "HP_ACLK": ps.hp_aclk_pin,
        "HP_SEG_PREFIX": ps.hp_segments_prefix, "HPM0_WIDTH": str(ps.hpm0_width), "PS_PROPERTIES": ps_properties,
        "DDR_SEGMENTS": " ".join(ddr_segments), "UDMABUF": UDMABUF_NAME,
        "DDR_SIZE_MIB": f"{config.ddr_size / 2**20:g}", "BOOT_ARGS": " ".join(ps.boot_args()),
    }
    put("tcl", "build.tcl", _fill(_template("zcu102_build.tcl.in"), values))
    put("xdc", "dlproc_zcu102.xdc", _fill(_template("zcu102.xdc.in"), values))
    put("script", "build.sh", "#!/bin/sh\n# Vivado build of the dlproc processor; needs vivado on PATH "
        "(source <Vivado>/settings64.sh).\ncd \"$(dirname \"$0\")\" && exec " + VIVADO_COMMAND + "\n",
        executable=True)
    put("overlay", "dlproc.dtso", ps.overlay(firmware_name=f"{name}.bit.bin",
                                             description=f"dlproc processor [{config.hardware_hash}] on the ZCU102"))
    put("shell", "shell.json", _template("shell.json.in"))
    put("config", "config.json", config.to_json() + "\n")
    put("readme", "README.md", _readme(config, name, values, ddr_segments))
    with atomic_dir(out, overwrite=overwrite, marker="config.json", what="build directory") as tmp:
        (tmp / "reports").mkdir()
        for filename, (text, executable) in stage.items():
            (tmp / filename).write_text(text)
            if executable:
                (tmp / filename).chmod(0o755)

    if run is None:
        run = vivado is not None
    if run:
        plan.log = out / "vivado.log"
        result = subprocess.run([vivado, "-mode", "batch", "-source", "build.tcl", "-nojournal", "-log", "vivado.log"],
                                cwd=out, stdin=subprocess.DEVNULL, check=False)
        plan.ran, plan.returncode = True, result.returncode
    return plan


def _readme(config: ProcessorConfig, name: str, values: dict[str, str], ddr_segments: list[str]) -> str:
    extra = {"SUMMARY": config.summary(), "ARTIFACT": name, "COMMAND": VIVADO_COMMAND,
             "AXI_ADDR_WIDTH": str(config.axi_addr_width),
             "SEGMENTS": ", ".join(f"{values['HP_SEG_PREFIX'].split('/')[1]}_{seg}" for seg in ddr_segments)}
    return _fill(_template("README.md.in"), {**values, **extra})
