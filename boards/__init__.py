"""Board support: platforms, bitstream builds, resource estimates.

* :mod:`dlproc.boards.zcu102` -- the ZCU102 as an Amaranth ``XilinxPlatform`` (clocks, reset, LEDs, buttons).
* :mod:`dlproc.boards.vivado` -- :func:`~dlproc.boards.vivado.write_build_plan`: the Vivado project of the processor
  next to the Zynq UltraScale+ PS (block design, constraints, bitstream, XSA, device-tree overlay); runs Vivado
  when it is installed (``dlproc build``).
* :mod:`dlproc.boards.resources` -- :func:`~dlproc.boards.resources.estimate_resources`: LUT/FF/DSP/BRAM of a
  configuration from Yosys synthesis (cached) or an analytical model, and whether it fits (``dlproc resources``).
* :mod:`dlproc.boards.ecp5` -- the open-toolchain proof: a small processor built to an ECP5 bitstream with
  Yosys and nextpnr only.

The modules are imported on demand (the Vivado and ECP5 flows pull in the whole gateware).
"""
