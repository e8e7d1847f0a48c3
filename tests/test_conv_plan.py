"""The conv loop order and tile (``codegen.plan_conv``): what the emitted program moves from DDR.

RTL == golden model on these layers is in tests/test_sim.py and golden == integer reference in
tests/test_exactness.py (the ``loop_orders`` network of tests/nets.py is one of ALL_NETS); here the DDR traffic of
the compiled programs is decoded and compared with counts made from the layer shapes.
"""

import numpy as np
import pytest
from nets import ALL_NETS

from dlproc.compiler.codegen import MIN_PIPELINE_STEPS, plan_conv
from dlproc.processor.isa import Buffer, InstructionSet, Opcode
from dlproc.runtime.workflow import Workflow

CONFIGS = ["tiny_int8", "small_int8"]


def _compile(netname: str, cfgname: str):
    model, _ = ALL_NETS[netname]()
    wf = Workflow(model, processor=cfgname, target="ref")
    wf.calibrate(np.random.default_rng(0).standard_normal((2, *wf.input_shape)).astype(np.float32))
    return wf, wf.compile()


def _loads(net, layer) -> list:
    isa = InstructionSet(net.config)
    words = net.instructions()[layer.instr_start:layer.instr_start + layer.instr_count]
    return [ins for ins in map(isa.decode, words) if ins.opcode == Opcode.LOAD]


def _input_bytes(net, layer) -> int:
    return sum(ins.n1 * ins.n2 * ins.len0 for ins in _loads(net, layer) if ins.buffer == Buffer.INPUT)


def _conv_layers(wf, net) -> dict:
    ops = {g.name: g for g in wf.graph.layers}
    return {layer.name: (layer, ops[layer.name]) for layer in net.layers if layer.op == "conv"}


@pytest.mark.parametrize("cfgname", CONFIGS)
def test_many_output_blocks_read_their_input_once(cfgname):
    """13 -> 40 channels, 3x3: every output-channel block uses the input tile while it is on chip."""
    wf, net = _compile("loop_orders", cfgname)
    layer, _ = next(iter(_conv_layers(wf, net).values()))
    c = net.config
    n_ob = -(-40 // c.conv_oc_lanes)
    assert n_ob >= 3 and layer.note.startswith("input-stationary")
    padded_input = -(-13 // c.conv_ic_lanes) * c.conv_ic_lanes * (15 + 2) * (17 + 2) * c.element_bytes
    # tiles overlap by the kernel's halo rows and columns, but nothing is read once per output block
    assert _input_bytes(net, layer) < 1.6 * padded_input


@pytest.mark.parametrize("cfgname", CONFIGS)
def test_strided_1x1_conv_loads_only_the_rows_it_uses(cfgname):
    """40 -> 24 channels, 1x1, stride 2, on 15x17: rows 0, 2, .., 14 of the input, each read once."""
    wf, net = _compile("loop_orders", cfgname)
    layer, glayer = list(_conv_layers(wf, net).values())[1]
    assert glayer.attrs["stride"] == (2, 2) and glayer.weight.shape[2:] == (1, 1)
    c = net.config
    channels = -(-40 // c.conv_ic_lanes) * c.conv_ic_lanes
    used_rows, width = 8, 17
    assert _input_bytes(net, layer) == channels * used_rows * width * c.element_bytes
    row_stride = net.views[glayer.inputs[0]].row_stride
    strides = {ins.ddr_stride1 for ins in _loads(net, layer) if ins.buffer == Buffer.INPUT and ins.n1 > 1}
    assert strides == {2 * row_stride}


@pytest.mark.parametrize("cfgname", CONFIGS)
@pytest.mark.parametrize("netname", ["loop_orders", "conv_kernels"])
def test_plan_counts_the_bytes_the_program_loads(netname, cfgname):
    """plan_conv's byte count (the quantity it minimizes) is what the emitted LOADs of dense convs move."""
    wf, net = _compile(netname, cfgname)
    c = net.config
    checked = 0
    for layer, glayer in _conv_layers(wf, net).values():
        cout, cin, kh, kw = glayer.weight.shape
        if glayer.attrs.get("group", 1) != 1:
            continue
        _, ho, wo = layer.output_shape
        plan = plan_conv(c, -(-cin // c.conv_ic_lanes), -(-cout // c.conv_oc_lanes), (kh, kw),
                         glayer.attrs.get("stride", (1, 1)), glayer.attrs.get("dilation", (1, 1)), (ho, wo))
        if plan.steps < MIN_PIPELINE_STEPS:
            continue   # the code generator splits such a layer's rows further
        assert sum(ins.n1 * ins.n2 * ins.len0 for ins in _loads(net, layer)) == plan.load_bytes, layer.name
        checked += 1
    assert checked >= 1


@pytest.mark.parametrize("cfgname", CONFIGS)
def test_resident_weights_are_loaded_once(cfgname):
    """An input-stationary conv whose weights fit the weight buffer loads each weight byte once per frame."""
    wf, net = _compile("loop_orders", cfgname)
    resident = [layer for layer, _ in _conv_layers(wf, net).values() if layer.note.endswith("weights resident")]
    assert resident
    for layer in resident:
        loaded = sum(ins.n1 * ins.n2 * ins.len0 for ins in _loads(net, layer) if ins.buffer == Buffer.WEIGHT)
        assert loaded == layer.weight_bytes, layer.name
