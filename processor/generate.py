"""Generate the processor's HDL: Verilog (module ``dlproc_top``), RTLIL and the configuration it was built from.

Used by ``dlproc generate`` and by the simulation builds. RTLIL is what Yosys should read for synthesis of large
configurations (the Verilog back end spells out every memory word).
"""

from __future__ import annotations

from pathlib import Path

from amaranth.back import rtlil, verilog

from .config import ConfigError, ProcessorConfig

__all__ = ["generate", "TOP_NAME"]

#: Module name of the generated top level.
TOP_NAME = "dlproc_top"


def generate(config: ProcessorConfig | str | Path, out_dir: str | Path, *, verilog_output: bool = True,
             rtlil_output: bool = True) -> dict[str, Path]:
    """Write the HDL of one processor configuration.

    Parameters
    ----------
    config : ProcessorConfig, str or Path
        The configuration, a preset name or a JSON file (see :meth:`ProcessorConfig.load`).
    out_dir : str or Path
        Output directory (created if missing).
    verilog_output, rtlil_output : bool
        Whether to write ``dlproc_top.v`` and ``dlproc_top.il``.

    Returns
    -------
    dict of str to Path
        ``"verilog"``, ``"rtlil"`` (when written) and ``"config"`` (``config.json``).
    """
    from .top import DLProcessor  # imported here: the top pulls in every gateware module

    config = ProcessorConfig.load(config)
    if config.has_nonlinear_unit:
        raise ConfigError("ProcessorConfig.has_nonlinear_unit = True: the gateware has no nonlinear unit yet (the "
                          "golden model and the compiler have); generate hardware with has_nonlinear_unit=False")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if verilog_output:
        paths["verilog"] = out / f"{TOP_NAME}.v"
        paths["verilog"].write_text(verilog.convert(DLProcessor(config=config), name=TOP_NAME))
    if rtlil_output:
        paths["rtlil"] = out / f"{TOP_NAME}.il"
        paths["rtlil"].write_text(rtlil.convert(DLProcessor(config=config), name=TOP_NAME))
    paths["config"] = out / "config.json"
    config.save(paths["config"])
    return paths
