"""The five on-chip buffers: their geometry, their entry layouts, and the memories built from them.

Every buffer entry is little-endian and byte-for-byte identical to the golden model's numpy views
(``dlproc.sim.golden.GoldenModel``):

* input: ``input_entry_bytes*8`` bits x ``input_entries``; lane ``i`` (int8) is bits ``[8i+7 : 8i]`` (fp32: the
  binary32 word in bits ``[32i+31 : 32i]``; every element below is 4 bytes wide likewise in the fp32 processor).
* weight: ``weight_entry_bytes*8`` bits x ``weight_entries``; byte ``co*ic_lanes + ci`` is ``w[co][ci]``.
* param: ``param_entry_bytes*8`` bits x ``param_buffer_entries``; four 32-bit words per lane stored word-major,
  word ``w`` of lane ``c`` is bits ``[32(w*oc+c)+31 : 32(w*oc+c)]`` (bias, mult_pos, mult_neg, control).
* acc: ``oc_lanes*32`` bits x ``acc_buffer_entries``; lane ``c`` (int32 or binary32) is bits ``[32c+31 : 32c]``.
* output: ``output_entry_bytes*8`` bits x ``acc_buffer_entries``; lane ``c`` (int8) is bits ``[8c+7 : 8c]``.

The write ports used by the DMA engine (input, weight, param) have a granularity of one AXI beat
(``axi_data_width`` bits); the accumulator write port has a granularity of one 32-bit lane, so the fc unit can
write single lanes. The output buffer is written whole.

Memories are plain ``unsigned(width)`` rows; the gateware views a row through the layouts below with
``data.View(layout, port.data)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import signed, unsigned
from amaranth.lib import data
from amaranth.lib.memory import Memory, ReadPort, WritePort

from .config import ProcessorConfig

__all__ = [
    "BufferGeometry", "buffer_geometry", "OnChipBuffers", "BUFFER_NAMES",
    "input_entry_layout", "weight_entry_layout", "param_entry_layout", "acc_entry_layout", "output_entry_layout",
    "MULT_WORD_LAYOUT", "CONTROL_WORD_LAYOUT", "entries_from_bytes", "bytes_from_entries", "pack_fields",
    "unpack_field",
]

#: Names of the on-chip buffers, in the order of :func:`buffer_geometry`.
BUFFER_NAMES = ("input", "weight", "param", "acc", "output")

#: A multiplier word of the parameter buffer: int16 in bits 15:0.
MULT_WORD_LAYOUT = data.StructLayout({"value": signed(16), "_unused": unsigned(16)})

#: The control word of the parameter buffer: shift in bits 5:0, lo (int8) in bits 15:8, hi (int8) in bits 23:16.
CONTROL_WORD_LAYOUT = data.StructLayout({
    "shift": unsigned(6), "_unused0": unsigned(2), "lo": signed(8), "hi": signed(8), "_unused1": unsigned(8),
})


def _field_range(layout: data.StructLayout, name: str) -> tuple[int, int, int, int]:
    field = layout[name]
    width, is_signed = field.shape.width, field.shape.signed
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if is_signed else (0, (1 << width) - 1)
    return field.offset, width, lo, hi


def pack_fields(layout: data.StructLayout, **values) -> np.ndarray:
    """Pack per-lane field values into words of ``layout`` (the software side of the gateware's views).

    Parameters
    ----------
    layout : StructLayout
        A word layout such as :data:`CONTROL_WORD_LAYOUT` (at most 64 bits).
    **values : array_like of int
        One array (or scalar) per field, broadcast together; fields not given are zero.

    Returns
    -------
    ndarray of uint64
        The packed words. A value outside its field's range raises ``ValueError`` naming the field.
    """
    arrays = {name: np.asarray(value, np.int64) for name, value in values.items()}
    word = np.zeros(np.broadcast_shapes(*(a.shape for a in arrays.values())), np.uint64)
    for name, value in arrays.items():
        offset, width, lo, hi = _field_range(layout, name)
        if value.size and (value.min() < lo or value.max() > hi):
            raise ValueError(f"parameter field {name} = {value.min() if value.min() < lo else value.max()} does not "
                             f"fit in {width} bits ({lo}..{hi})")
        word |= (value.astype(np.uint64) & np.uint64((1 << width) - 1)) << np.uint64(offset)
    return word


def unpack_field(layout: data.StructLayout, name: str, words: np.ndarray) -> np.ndarray:
    """The values of one field of ``layout`` in an array of packed words, as int64 (sign-extended if signed)."""
    offset, width, lo, _hi = _field_range(layout, name)
    raw = (np.asarray(words).astype(np.uint64) >> np.uint64(offset)) & np.uint64((1 << width) - 1)
    value = raw.astype(np.int64)
    return np.where(value >= (1 << (width - 1)), value - (1 << width), value) if lo < 0 else value


def _check_config(config: ProcessorConfig) -> None:
    if not isinstance(config, ProcessorConfig):
        raise TypeError(f"config must be a ProcessorConfig, not {config!r}")


def _element_shape(config: ProcessorConfig):
    # int8 elements are signed integers; fp32 elements are raw binary32 words (the fp32 units decode them).
    return signed(8) if config.dtype == "int8" else unsigned(32)


def _acc_lane_shape(config: ProcessorConfig):
    return signed(config.acc_bits) if config.dtype == "int8" else unsigned(config.acc_bits)


def input_entry_layout(config: ProcessorConfig) -> data.ArrayLayout:
    """Layout of an input buffer entry: ``conv_ic_lanes`` elements, lane 0 in the low bits."""
    _check_config(config)
    return data.ArrayLayout(_element_shape(config), config.conv_ic_lanes)


def weight_entry_layout(config: ProcessorConfig) -> data.ArrayLayout:
    """Layout of a weight buffer entry, indexed ``[co][ci]`` (``conv_oc_lanes`` rows of ``conv_ic_lanes``)."""
    _check_config(config)
    return data.ArrayLayout(data.ArrayLayout(_element_shape(config), config.conv_ic_lanes), config.conv_oc_lanes)


def param_entry_layout(config: ProcessorConfig) -> data.StructLayout:
    """Layout of a parameter buffer entry: four word arrays of ``conv_oc_lanes`` lanes, stored word-major.

    int8: members ``bias`` (int32 per lane), ``mult_pos`` and ``mult_neg`` (:data:`MULT_WORD_LAYOUT` per lane) and
    ``control`` (:data:`CONTROL_WORD_LAYOUT` per lane), in this order.

    fp32: members ``bias``, ``mult_pos``, ``mult_neg`` and ``clamp``, binary32 words. The clamp words come in lane
    pairs: lane ``2k`` holds the lower clamp and lane ``2k+1`` the upper clamp that both lanes of the pair apply
    (``docs/numerics.md``).
    """
    _check_config(config)
    co = config.conv_oc_lanes
    if config.dtype == "fp32":
        word = data.ArrayLayout(unsigned(32), co)
        return data.StructLayout({"bias": word, "mult_pos": word, "mult_neg": word, "clamp": word})
    return data.StructLayout({
        "bias": data.ArrayLayout(signed(32), co),
        "mult_pos": data.ArrayLayout(MULT_WORD_LAYOUT, co),
        "mult_neg": data.ArrayLayout(MULT_WORD_LAYOUT, co),
        "control": data.ArrayLayout(CONTROL_WORD_LAYOUT, co),
    })


def acc_entry_layout(config: ProcessorConfig) -> data.ArrayLayout:
    """Layout of an accumulator entry: ``conv_oc_lanes`` lanes (int32, or binary32 words)."""
    _check_config(config)
    return data.ArrayLayout(_acc_lane_shape(config), config.conv_oc_lanes)


def output_entry_layout(config: ProcessorConfig) -> data.ArrayLayout:
    """Layout of an output buffer entry: ``conv_oc_lanes`` elements."""
    _check_config(config)
    return data.ArrayLayout(_element_shape(config), config.conv_oc_lanes)


@dataclass(frozen=True)
class BufferGeometry:
    """Width, depth and write granularity of one on-chip buffer.

    Attributes
    ----------
    name : str
        One of :data:`BUFFER_NAMES`.
    width : int
        Bits of one entry (one memory row).
    depth : int
        Entries.
    addr_width : int
        Width of an entry address (from :class:`ProcessorConfig`).
    write_granularity : int or None
        Bits written by one bit of the write enable, or ``None`` when a row is written whole.
    """

    name: str
    width: int
    depth: int
    addr_width: int
    write_granularity: int | None

    def memory(self, *, init=()) -> Memory:
        """A new :class:`~amaranth.lib.memory.Memory` of this geometry (create it inside ``elaborate``).

        Parameters
        ----------
        init : iterable of int
            Initial rows (the rest are zero).
        """
        return Memory(shape=unsigned(self.width), depth=self.depth, init=list(init))

    def read_port_signature(self) -> ReadPort.Signature:
        """Signature of a read port of this buffer (use ``In(...)`` on the component that drives it)."""
        return ReadPort.Signature(addr_width=self.addr_width, shape=unsigned(self.width))

    def write_port_signature(self) -> WritePort.Signature:
        """Signature of a write port of this buffer, with its granularity."""
        return WritePort.Signature(addr_width=self.addr_width, shape=unsigned(self.width),
                                   granularity=self.write_granularity)


def buffer_geometry(config: ProcessorConfig, name: str) -> BufferGeometry:
    """The geometry of one buffer of a configuration.

    Parameters
    ----------
    config : ProcessorConfig
        The processor configuration.
    name : str
        One of :data:`BUFFER_NAMES`.
    """
    _check_config(config)
    c = config
    table = {
        "input": (c.input_entry_bytes * 8, c.input_entries, c.input_addr_bits, c.axi_data_width),
        "weight": (c.weight_entry_bytes * 8, c.weight_entries, c.weight_addr_bits, c.axi_data_width),
        "param": (c.param_entry_bytes * 8, c.param_buffer_entries, c.param_addr_bits, c.axi_data_width),
        "acc": (c.conv_oc_lanes * c.acc_bits, c.acc_buffer_entries, c.acc_addr_bits, c.acc_bits),
        "output": (c.output_entry_bytes * 8, c.acc_buffer_entries, c.acc_addr_bits, None),
    }
    if name not in table:
        raise ValueError(f"unknown buffer {name!r}; buffers are {', '.join(BUFFER_NAMES)}")
    width, depth, addr_width, granularity = table[name]
    return BufferGeometry(name, width, depth, addr_width, granularity)


class OnChipBuffers:
    """The five buffer memories of one processor, to be added as submodules by the top level.

    Create it inside ``elaborate`` and add ``.input``, ``.weight``, ``.param``, ``.acc`` and ``.output``
    to ``m.submodules``; take ports with ``read_port()`` / ``write_port(granularity=...)`` using
    :attr:`BufferGeometry.write_granularity` from :attr:`geometry`.

    Parameters
    ----------
    config : ProcessorConfig
        The processor configuration.
    init : dict of str to iterable of int, optional
        Initial rows per buffer name (simulation; hardware buffers start at zero).
    """

    def __init__(self, config: ProcessorConfig, *, init: dict | None = None):
        _check_config(config)
        init = dict(init or {})
        unknown = set(init) - set(BUFFER_NAMES)
        if unknown:
            raise ValueError(f"unknown buffer(s) {sorted(unknown)} in init; buffers are {', '.join(BUFFER_NAMES)}")
        self.config = config
        self.geometry = {name: buffer_geometry(config, name) for name in BUFFER_NAMES}
        for name, geo in self.geometry.items():
            setattr(self, name, geo.memory(init=init.get(name, ())))

    def memories(self) -> dict[str, Memory]:
        """The memories by buffer name."""
        return {name: getattr(self, name) for name in BUFFER_NAMES}


def entries_from_bytes(raw: np.ndarray, entry_bytes: int) -> list[int]:
    """Split a little-endian byte image of a buffer into row integers (for memory ``init`` or testbenches)."""
    flat = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
    if flat.size % entry_bytes:
        raise ValueError(f"{flat.size} bytes is not a whole number of {entry_bytes}-byte entries")
    rows = flat.reshape(-1, entry_bytes)
    return [int.from_bytes(row.tobytes(), "little") for row in rows]


def bytes_from_entries(rows, entry_bytes: int) -> np.ndarray:
    """Join row integers back into a little-endian byte image (inverse of :func:`entries_from_bytes`)."""
    return np.frombuffer(b"".join(int(r).to_bytes(entry_bytes, "little") for r in rows), np.uint8).copy()
