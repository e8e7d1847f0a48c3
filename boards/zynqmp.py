"""How the processor is attached to the Zynq UltraScale+ PS: the one owner of what the Vivado Tcl, the device-tree
overlay, the runtime and ``dlproc board check`` share.

A bitstream loaded from Linux does not carry the PS-side settings of its block design: the PL clock rate, the
data widths of the PS-PL AXI ports (the AFI registers ``FPD_SLCR.AFI_FS`` and the HP port ``AFIFM`` widths) and
the PL resets are programmed by the FSBL's ``psu_init`` from the XSA the *boot image* was built from. PYNQ says so
("Overlays ... will not reconfigure the Zynq PS", Xilinx/PYNQ ``docs/source/16_creating_overlays.rst``). Xilinx's
device-tree generator therefore emits, for every ZynqMP PL overlay (``xsct createdts -overlay``; Xilinx/device-tree-xlnx
``device_tree/data/common_proc.tcl``, ``add_or_get_bus_node`` and ``get_afi_val``/``get_max_afi_val``):

* ``resets = <&zynqmp_reset 116>`` (one per fabric reset in use) in the ``&fpga_full`` fragment,
* ``clocking0`` (``compatible = "xlnx,fclk"``, ``clocks``/``assigned-clocks = <&zynqmp_clk 71>`` = PL0_REF,
  ``assigned-clock-rates`` = the PS's ``PL0_REF_CTRL__ACT_FREQMHZ`` in Hz),
* ``afi0`` (``compatible = "xlnx,afi-fpga"``) with ``config-afi``: pairs ``<2n w>, <2n+1 w>`` (read, write) for
  each S_AXI_GPn (n = 0..6: HPC0, HPC1, HP0..HP3, LPD) with ``w`` = 0 (128 bit), 1 (64), 2 (32); ``<14 v>`` with
  ``v`` = M_AXI_HPM0_FPD width code << 8 | M_AXI_HPM1_FPD width code << 10 (code 0 = 32, 1 = 64, 2 = 128 bit, the
  ``afi_fs`` field of ``psu_init.c``); ``<15 v>`` for M_AXI_HPM0_LPD (0x000 / 0x100 / 0x200); and
  ``resets = <&zynqmp_reset 116>, ... <&zynqmp_reset 119>``.

The same nodes appear in the Kria-PYNQ overlays (Xilinx/Kria-PYNQ ``dts/pynq.dts``), in ikwzm's ZynqMP examples
(``traffic_checker_hp_128_uio_250MHz.dts``) and in the Xilinx wiki page "Solution ZynqMP PL Programming"; the
kernel drivers are ``CONFIG_XILINX_AFI_FPGA`` and ``CONFIG_XILINX_FCLK`` (both ``=y`` in linux-xlnx
``xilinx_defconfig``).

:class:`PsAttachment` holds those settings once. :mod:`dlproc.boards.vivado` writes its
:meth:`~PsAttachment.tcl_properties` into ``build.tcl`` and its :meth:`~PsAttachment.overlay` as ``dlproc.dtso``;
:mod:`dlproc.runtime.fpga` imports :data:`REGS_BASE`, :data:`UIO_NAME` and :data:`UDMABUF_NAME`;
:mod:`dlproc.runtime.board_check` checks the clock, the interrupt, the buffer and the boot arguments against it.
This module imports neither Amaranth nor the gateware.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from dlproc.processor.config import ProcessorConfig

__all__ = ["PsAttachment", "REGS_BASE", "REGS_SIZE", "UIO_NAME", "UDMABUF_NAME", "IRQ_SPI", "BOOT_ARGS",
           "UIO_MODULE_COMMAND", "cma_megabytes"]

#: Physical address of the processor's register page: the start of the M_AXI_HPM0_FPD window.
REGS_BASE = 0xA000_0000
#: Bytes of the register page (12-bit AXI4-Lite address).
REGS_SIZE = 0x1000
#: Name of the overlay's generic-uio node; the kernel names the UIO device after it (``/sys/class/uio/uioN/name``).
UIO_NAME = "dlproc"
#: ``device-name`` of the overlay's u-dma-buf node (``/dev/udmabuf0``, ``/sys/class/u-dma-buf/udmabuf0``).
UDMABUF_NAME = "udmabuf0"
#: GIC SPI of ``pl_ps_irq0[0]`` (IRQ 121 = 32 + 89), the processor's level-high interrupt.
IRQ_SPI = 89
#: ``zynqmp_clk`` index of PL0_REF (``include/dt-bindings/clock/xlnx-zynqmp-clk.h``: PL0_REF = 71).
PL0_REF_CLOCK = 71
#: ``zynqmp_reset`` index of the first PS-to-PL fabric reset (``ZYNQMP_RESET_PS_PL0`` = 116; 117..119 follow).
PL_RESET0 = 116
#: How the UIO driver is told to bind ``generic-uio`` nodes when it is a module (uio_pdrv_genirq has no of_match
#: table of its own: ``of_id`` is its only way to match, torvalds/linux ``drivers/uio/uio_pdrv_genirq.c``).
UIO_MODULE_COMMAND = "modprobe uio_pdrv_genirq of_id=generic-uio"
#: Kernel command-line arguments the board needs, besides ``cma=`` (:func:`cma_megabytes`):
#: ``clk_ignore_unused`` keeps Linux from gating pl0_ref at boot before the overlay's fclk node claims it, and
#: ``uio_pdrv_genirq.of_id=generic-uio`` binds the overlay's UIO node when the driver is built in.
BOOT_ARGS = ("clk_ignore_unused", "uio_pdrv_genirq.of_id=generic-uio")

# AFI data-width codes (common_proc.tcl get_afi_val: S_AXI ports; get_max_afi_val: M_AXI_HPM0/1_FPD).
_SAXI_CODE = {128: 0, 64: 1, 32: 2}
_MAXI_CODE = {32: 0, 64: 1, 128: 2}
_LPD_CODE = {32: 0x000, 64: 0x100, 128: 0x200}
#: Names of the PS's slave ports by S_AXI_GPn index (PSU__USE__S_AXI_GPn, CONFIG.PSU__SAXIGPn__DATA_WIDTH).
SAXI_PORTS = ("S_AXI_HPC0_FPD", "S_AXI_HPC1_FPD", "S_AXI_HP0_FPD", "S_AXI_HP1_FPD", "S_AXI_HP2_FPD",
              "S_AXI_HP3_FPD", "S_AXI_LPD")


def cma_megabytes(ddr_size: int) -> int:
    """The CMA pool (``cma=<N>M``) a DDR window of ``ddr_size`` bytes needs: the window plus 256 MiB.

    ``xilinx_defconfig`` reserves 256 MiB (``CONFIG_CMA_SIZE_MBYTES=256``), which DRM/DisplayPort and other drivers
    also draw from, so a window as large as the default pool cannot be allocated in one piece. The extra 256 MiB
    keeps the default pool for them; for the 256 MiB window this is the ``cma=512M`` the Vitis-AI DPU-TRD
    recommends (Xilinx/Vitis-AI ``dsa/DPU-TRD/prj/Vivado/README.md``). Rounded up to a multiple of 64 MiB.
    """
    return int(math.ceil((ddr_size / 2**20 + 256) / 64) * 64)


@dataclass(frozen=True)
class PsAttachment:
    """The PS-side settings of the processor's block design, derived from its configuration.

    Parameters
    ----------
    clock_mhz : float
        ``pl_clk0``: the processor's clock (``ProcessorConfig.clock_mhz``).
    hp_port : int
        Which S_AXI_HPn_FPD port (0..3) carries the processor's DDR master. HP1 by default: HP0 shares its DDR
        path with the DisplayPort controller (Vitis-AI DPU-TRD "Known issues: DDR QOS").
    hp_width : int
        Data width of that port (32, 64 or 128; the processor's master is adapted by a SmartConnect).
    hpm0_width, hpm1_width : int
        M_AXI_HPM0_FPD (the register page) and M_AXI_HPM1_FPD widths. 128 like every board-preset boot image
        (``AFI_FS = 0xA00``), so a boot image that is not from this XSA and a kernel without the AFI driver still
        agree with the bitstream; the SmartConnect converts to the 32-bit AXI4-Lite slave.
    hpm0_lpd_width : int
        M_AXI_HPM0_LPD width (unused; 32 as the PS IP's default).
    ddr_size : int
        Bytes of the processor's DDR window: the u-dma-buf size.
    """

    clock_mhz: float
    hp_port: int = 1
    hp_width: int = 128
    hpm0_width: int = 128
    hpm1_width: int = 128
    hpm0_lpd_width: int = 32
    ddr_size: int = 0x1000_0000

    def __post_init__(self) -> None:
        if self.hp_port not in (0, 1, 2, 3):
            raise ValueError(f"hp_port must be 0, 1, 2 or 3 (S_AXI_HPn_FPD), not {self.hp_port!r}")
        for name in ("hp_width", "hpm0_width", "hpm1_width", "hpm0_lpd_width"):
            if getattr(self, name) not in (32, 64, 128):
                raise ValueError(f"{name} must be 32, 64 or 128 bits, not {getattr(self, name)!r}")

    @classmethod
    def from_config(cls, config: ProcessorConfig, **overrides) -> PsAttachment:
        """The attachment of a processor configuration (HP port as wide as its master, at most 128 bits)."""
        values = {"clock_mhz": float(config.clock_mhz), "hp_width": min(128, max(32, config.axi_data_width)),
                  "ddr_size": int(config.ddr_size)}
        values.update(overrides)
        return cls(**values)

    # ------------------------------------------------------------------ derived names
    @property
    def saxigp(self) -> int:
        """S_AXI_GPn index of the DDR port (HPn_FPD = S_AXI_GP(n + 2))."""
        return self.hp_port + 2

    @property
    def hp_name(self) -> str:
        """``S_AXI_HP1_FPD``: the port's interface name on the PS block."""
        return SAXI_PORTS[self.saxigp]

    @property
    def hp_aclk_pin(self) -> str:
        """The port's clock pin on the PS block (``saxihp1_fpd_aclk``)."""
        return f"saxihp{self.hp_port}_fpd_aclk"

    @property
    def hp_segments_prefix(self) -> str:
        """``SAXIGP3/HP1``: the PS address segments of the port are ``<prefix>_DDR_LOW`` and ``_DDR_HIGH``."""
        return f"SAXIGP{self.saxigp}/HP{self.hp_port}"

    @property
    def pl_clk0_hz(self) -> int:
        """Requested pl_clk0 in Hz (the PS's dividers may give slightly less; see :meth:`clock_tolerance_hz`)."""
        return int(round(self.clock_mhz * 1e6))

    def clock_tolerance_hz(self) -> int:
        """How far the delivered pl_clk0 may be from the request: the PS divides IOPLL/RPLL by integers, and
        Vivado reports e.g. 249.9975 MHz for 250 from the 33.333 MHz reference (0.01 %). 0.5 % is allowed."""
        return int(self.pl_clk0_hz * 0.005)

    @property
    def cma_mib(self) -> int:
        """The CMA pool the DDR window needs (:func:`cma_megabytes`)."""
        return cma_megabytes(self.ddr_size)

    def boot_args(self) -> tuple[str, ...]:
        """Every kernel command-line argument the board needs, ``cma=`` included."""
        return (*BOOT_ARGS, f"cma={self.cma_mib}M")

    # ------------------------------------------------------------------ Vivado
    def tcl_properties(self) -> list[tuple[str, str]]:
        """``CONFIG.PSU__*`` values of the PS block, in the order ``build.tcl`` sets them.

        The widths of disabled ports (HPM1, HPM0_LPD, the other slave ports) are left at the PS IP's defaults, which
        :attr:`hpm1_width`, :attr:`hpm0_lpd_width` and :meth:`config_afi` state.
        """
        props = [
            ("PSU__USE__M_AXI_GP0", "1"), ("PSU__MAXIGP0__DATA_WIDTH", str(self.hpm0_width)),
            ("PSU__USE__M_AXI_GP1", "0"), ("PSU__USE__M_AXI_GP2", "0"),
        ]
        for n in range(len(SAXI_PORTS)):          # the board preset may enable slave ports; only ours stays on
            if n != self.saxigp:
                props.append((f"PSU__USE__S_AXI_GP{n}", "0"))
        props += [
            (f"PSU__USE__S_AXI_GP{self.saxigp}", "1"), (f"PSU__SAXIGP{self.saxigp}__DATA_WIDTH", str(self.hp_width)),
            ("PSU__USE__IRQ0", "1"), ("PSU__FPGA_PL0_ENABLE", "1"),
            ("PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ", f"{self.clock_mhz:g}"),
            ("PSU__USE__FABRIC__RST", "1"), ("PSU__NUM_FABRIC_RESETS", "1"),
        ]
        return props

    # ------------------------------------------------------------------ device tree
    def config_afi(self) -> list[tuple[int, int]]:
        """The ``config-afi`` pairs of the overlay's ``afi0`` node, as ``createdts -overlay`` computes them.

        Unused slave ports get 128 bits (code 0), the PS IP's default width, as in the XSA of this design.
        """
        pairs: list[tuple[int, int]] = []
        for n in range(len(SAXI_PORTS)):
            code = _SAXI_CODE[self.hp_width if n == self.saxigp else 128]
            pairs += [(2 * n, code), (2 * n + 1, code)]
        pairs.append((14, _MAXI_CODE[self.hpm0_width] << 8 | _MAXI_CODE[self.hpm1_width] << 10))
        pairs.append((15, _LPD_CODE[self.hpm0_lpd_width]))
        return pairs

    def overlay(self, *, firmware_name: str, description: str = "") -> str:
        """The device-tree overlay source (``dlproc.dtso``) that loads the bitstream with its PS settings.

        Parameters
        ----------
        firmware_name : str
            The ``.bit.bin`` in ``/lib/firmware``.
        description : str
            First comment line (e.g. which processor).
        """
        afi = ", ".join(f"<{reg} 0x{val:03x}>" if reg >= 14 else f"<{reg} {val}>" for reg, val in self.config_afi())
        resets = ", ".join(f"<&zynqmp_reset {PL_RESET0 + i}>" for i in range(4))
        size = self.ddr_size
        return f"""\
// {description or "Device-tree overlay of a dlproc processor"}
// Generated by dlproc (dlproc.boards.zynqmp.PsAttachment.overlay); regenerate instead of editing.
//
// Compile (on the PC: PetaLinux images often lack dtc):  dtc -@ -I dts -O dtb -o dlproc.dtbo dlproc.dtso
// Load with the bitstream (root):                       fpgautil -b {firmware_name} -o dlproc.dtbo
//
// A bitstream loaded from Linux keeps the PS settings of the boot image, so this overlay carries the ones the
// design needs, as Xilinx's `createdts -overlay` does (device-tree-xlnx common_proc.tcl, add_or_get_bus_node):
//  * resets: PS-to-PL reset 0 (pl_resetn0 -> proc_sys_reset), pulsed around programming;
//  * clocking0 (xlnx,fclk): pl_clk0 = PL0_REF at {self.pl_clk0_hz} Hz, enabled and claimed;
//  * afi0 (xlnx,afi-fpga): PS-side port widths: {self.hp_name} {self.hp_width} bit (config-afi
//    {2 * self.saxigp}/{2 * self.saxigp + 1}), M_AXI_HPM0_FPD {self.hpm0_width} bit and HPM1 {self.hpm1_width} bit
//    (config-afi 14), HPM0_LPD {self.hpm0_lpd_width} bit (15), every other slave port at the PS default of 128 bit;
//  * {UIO_NAME}@{REGS_BASE:x} (generic-uio): /dev/uioN named "{UIO_NAME}", the 4 KiB register page at
//    {REGS_BASE:#x} and pl_ps_irq0[0] = GIC SPI {IRQ_SPI}, level high. Needs `{UIO_MODULE_COMMAND}` (or, built in, the
//    boot argument uio_pdrv_genirq.of_id=generic-uio);
//  * {UDMABUF_NAME} (ikwzm,u-dma-buf): a {size / 2**20:g} MiB physically contiguous buffer from CMA, the
//    processor's DDR window. Required boot arguments: {" ".join(self.boot_args())}
//    (cma: the window plus the default 256 MiB pool; clk_ignore_unused keeps pl0_ref running until clocking0
//    claims it). sync-mode 2: an O_SYNC mapping is write-combined (Normal non-cacheable on arm64), because
//    {self.hp_name} does not snoop the CPU caches; the runtime orders it with sync_for_device/sync_for_cpu.
/dts-v1/;
/plugin/;

/ {{
    fragment@0 {{
        target = <&fpga_full>;
        __overlay__ {{
            #address-cells = <2>;
            #size-cells = <2>;
            firmware-name = "{firmware_name}";
            resets = <&zynqmp_reset {PL_RESET0}>;
        }};
    }};

    fragment@1 {{
        target = <&amba>;
        __overlay__ {{
            #address-cells = <2>;
            #size-cells = <2>;

            clocking0: clocking0 {{
                compatible = "xlnx,fclk";
                clocks = <&zynqmp_clk {PL0_REF_CLOCK}>;
                clock-output-names = "fabric_clk";
                #clock-cells = <0>;
                assigned-clocks = <&zynqmp_clk {PL0_REF_CLOCK}>;
                assigned-clock-rates = <{self.pl_clk0_hz}>;
            }};

            afi0: afi0 {{
                compatible = "xlnx,afi-fpga";
                config-afi = {afi};
                resets = {resets};
            }};

            {UIO_NAME}@{REGS_BASE:x} {{
                compatible = "generic-uio";
                reg = <0x0 0x{REGS_BASE:08X} 0x0 {REGS_SIZE:#x}>;
                interrupt-parent = <&gic>;
                interrupts = <0 {IRQ_SPI} 4>;
            }};

            {UDMABUF_NAME} {{
                compatible = "ikwzm,u-dma-buf";
                device-name = "{UDMABUF_NAME}";
                size = <{size:#010x}>;
                sync-mode = <2>;
                dma-mask = <32>;
            }};
        }};
    }};
}};
"""
