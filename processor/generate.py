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
             rtlil_output: bool = True, overwrite: bool = False) -> dict[str, Path]:
    """Write the HDL of one processor configuration.

    Parameters
    ----------
    config : ProcessorConfig, str or Path
        The configuration, a preset name or a JSON file (see :meth:`ProcessorConfig.load`).
    out_dir : str or Path
        Output directory (created if missing; an existing empty one is used). It appears complete or not at all
        (written to a temporary sibling, then renamed, see :mod:`dlproc.outputs`).
    verilog_output, rtlil_output : bool
        Whether to write ``dlproc_top.v`` and ``dlproc_top.il``.
    overwrite : bool
        Replace a previous HDL directory (one holding ``config.json``) at ``out_dir``.

    Returns
    -------
    dict of str to Path
        ``"verilog"``, ``"rtlil"`` (when written) and ``"config"`` (``config.json``).
    """
    from dlproc.outputs import atomic_dir, check_output

    from .top import DLProcessor  # imported here: the top pulls in every gateware module

    config = ProcessorConfig.load(config)
    if config.has_nonlinear_unit:
        raise ConfigError("ProcessorConfig.has_nonlinear_unit = True: the gateware has no nonlinear unit yet (the "
                          "golden model and the compiler have); generate hardware with has_nonlinear_unit=False")
    out = check_output(out_dir, overwrite=overwrite, kind="dir", marker="config.json", what="HDL directory")
    files: dict[str, str] = {}
    if verilog_output:
        files["verilog"] = verilog.convert(DLProcessor(config=config), name=TOP_NAME)
    if rtlil_output:
        files["rtlil"] = rtlil.convert(DLProcessor(config=config), name=TOP_NAME)
    names = {"verilog": f"{TOP_NAME}.v", "rtlil": f"{TOP_NAME}.il", "config": "config.json"}
    files["config"] = config.to_json() + "\n"
    with atomic_dir(out, overwrite=overwrite, marker="config.json", what="HDL directory") as tmp:
        for kind, text in files.items():
            (tmp / names[kind]).write_text(text)
    return {kind: out / names[kind] for kind in files}
