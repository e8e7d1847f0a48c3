"""The Xilinx ZCU102 evaluation board (xczu9eg-ffvb1156-2-e) as an Amaranth platform.

Pin locations are those of the ZCU102 user guide (UG1182, "FPGA pin assignments" and the board's master XDC):

===========  ==================================  =============  ==================================
resource     pins                                I/O standard   board net / bank
===========  ==================================  =============  ==================================
clk125       G21 (P) / F21 (N)                   LVDS_25        CLK_125_P/N, Si5341 output, bank 47
clk300       AL8 (P) / AL7 (N)                   DIFF_SSTL12    USER_SI570_P/N (300 MHz default),
                                                                bank 64 (VCCO 1.2 V)
rst          AM13                                LVCMOS33       CPU_RESET push button SW20, active
                                                                high
led 0..7     AG14 AF13 AE13 AJ14 AJ15 AH13 AH14  LVCMOS33       GPIO_LED_0..7, bank 44
             AL12
button_*     N AG15, W AF15, S AE15, E AE14,     LVCMOS33       GPIO_SW_N/W/S/E/C (SW14..SW18)
             C AG13
switch 0..7  AN14 AP14 AM14 AN13 AN12 AP12 AL13  LVCMOS33       GPIO_DIP_SW0..7 (SW13)
             AK13
===========  ==================================  =============  ==================================

The processor itself does not use this platform: on the ZCU102 it sits next to the Zynq UltraScale+ PS, which
gives it its clock, reset, DDR and interrupt, and that system is built from a Vivado block design
(:func:`dlproc.boards.vivado.write_build_plan`). The platform serves stand-alone PL designs (a board smoke test
such as :class:`Blinky`) and lets Amaranth write a complete Vivado project (Tcl, XDC, Verilog, build script)
without Vivado installed: ``ZCU102Platform().build(design, do_build=False)`` or ``.prepare(design)``.
"""

from __future__ import annotations

from amaranth.build import Attrs, Clock, DiffPairs, Pins, Resource
from amaranth.hdl import Cat, ClockDomain, ClockSignal, Module, Signal
from amaranth.lib import io, wiring
from amaranth.vendor import XilinxPlatform

__all__ = ["ZCU102Platform", "Blinky", "ZCU102_PART", "ZCU102_BOARD_PART", "ZCU102_RESOURCES"]

#: Vivado part name of the ZCU102's programmable logic.
ZCU102_PART = "xczu9eg-ffvb1156-2-e"
#: Vivado board part (board files shipped with Vivado); selects the PS preset of the board (DDR4, MIO, clocks).
ZCU102_BOARD_PART = "xilinx.com:zcu102:part0:3.4"

#: Programmable-logic capacity of xczu9eg (DS891): the denominators of every utilization figure in dlproc.
ZCU102_RESOURCES = {"LUT": 274_080, "FF": 548_160, "DSP": 2_520, "BRAM36": 912, "URAM": 0}

_LVCMOS33 = Attrs(IOSTANDARD="LVCMOS33")


class ZCU102Platform(XilinxPlatform):
    """Amaranth platform of the ZCU102: the two user clocks, the CPU_RESET button, LEDs, push buttons, DIP switches.

    The default clock is the 125 MHz LVDS clock and the default reset the CPU_RESET button, so a design that
    uses the ``sync`` domain without defining it runs at 125 MHz. The 300 MHz clock (``clk300``) is the
    USER_SI570 oscillator at its power-on frequency; it can be reprogrammed over I2C, so a design relying on it
    should say so.

    Examples
    --------
    >>> plan = ZCU102Platform().prepare(Blinky())   # Vivado project files, no Vivado needed  # doctest: +SKIP
    >>> ZCU102Platform().build(Blinky(), do_build=False, build_dir="build/blinky")    # doctest: +SKIP
    """

    device = "xczu9eg"
    package = "ffvb1156"
    speed = "2-e"
    default_clk = "clk125"
    default_rst = "rst"

    resources = [
        Resource("clk125", 0, DiffPairs("G21", "F21", dir="i"), Clock(125e6), Attrs(IOSTANDARD="LVDS_25")),
        Resource("clk300", 0, DiffPairs("AL8", "AL7", dir="i"), Clock(300e6), Attrs(IOSTANDARD="DIFF_SSTL12")),
        Resource("rst", 0, Pins("AM13", dir="i"), _LVCMOS33),
        *[Resource("led", i, Pins(pin, dir="o"), Attrs(IOSTANDARD="LVCMOS33", SLEW="SLOW", DRIVE="8"))
          for i, pin in enumerate("AG14 AF13 AE13 AJ14 AJ15 AH13 AH14 AL12".split())],
        Resource("button_n", 0, Pins("AG15", dir="i"), _LVCMOS33),
        Resource("button_w", 0, Pins("AF15", dir="i"), _LVCMOS33),
        Resource("button_s", 0, Pins("AE15", dir="i"), _LVCMOS33),
        Resource("button_e", 0, Pins("AE14", dir="i"), _LVCMOS33),
        Resource("button_c", 0, Pins("AG13", dir="i"), _LVCMOS33),
        *[Resource("switch", i, Pins(pin, dir="i"), _LVCMOS33)
          for i, pin in enumerate("AN14 AP14 AM14 AN13 AN12 AP12 AL13 AK13".split())],
    ]
    connectors = []

    #: Names of the push-button resources, in the order N, W, S, E, C.
    BUTTONS = ("button_n", "button_w", "button_s", "button_e", "button_c")

    def toolchain_prepare(self, fragment, name, **kwargs):
        """Add the bitstream compression setting of the ZCU102 XDC to every generated project."""
        overrides = dict(kwargs)
        extra = overrides.get("add_constraints", "")
        overrides["add_constraints"] = extra + "\nset_property BITSTREAM.GENERAL.COMPRESS true [current_design]\n"
        return super().toolchain_prepare(fragment, name, **overrides)


class Blinky(wiring.Component):
    """Board smoke test: LEDs 0-5 count at about 1 Hz, LED 6 blinks from the 300 MHz clock, LED 7 shows button C.

    It proves the pins, clocks and reset of :class:`ZCU102Platform`; it is not needed for the processor.
    """

    def __init__(self):
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        led_bufs = [io.Buffer("o", platform.request("led", i, dir="-")) for i in range(8)]
        button = io.Buffer("i", platform.request("button_c", 0, dir="-"))
        clk300 = io.Buffer("i", platform.request("clk300", 0, dir="-"))
        m.submodules += [*led_bufs, button, clk300]

        m.domains.fast = ClockDomain("fast", reset_less=True)
        m.d.comb += ClockSignal("fast").eq(clk300.i)
        fast = Signal(28)                      # 300 MHz / 2**28: about 1.1 Hz on LED 6
        m.d.fast += fast.eq(fast + 1)
        count = Signal(33)                     # 125 MHz / 2**27: about 0.93 Hz on LED 0
        m.d.sync += count.eq(count + 1)
        m.d.comb += Cat(buf.o for buf in led_bufs).eq(Cat(count[27:33], fast[-1], button.i))
        return m
