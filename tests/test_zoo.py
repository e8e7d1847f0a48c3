"""The ONNX model zoo architectures shipped in the onnx wheel compile for zcu102_int8 (seeded random weights).

Each model's compile report must map its convolutions, pools and fc layers to the processor; the layers that run
on the host are listed with their reason (LRN and Softmax have no processor implementation; some pooling variants
are not exact on the processor). This test prints them so a reader sees which and why.
"""

import numpy as np
import pytest
from zoo import ZOO, zoo_model

from dlproc.runtime.workflow import Workflow

# Operators the processor does not implement: these, and only these, may run on the host.
HOST_OK = {"LRN", "Softmax", "Transpose", "Reshape", "Flatten", "AveragePool", "MaxPool", "Concat"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_zoo_architecture_compiles_for_zcu102(name, capsys):
    wf = Workflow(zoo_model(name), processor="zcu102_int8", target="ref")
    wf.calibrate(np.random.default_rng(0).standard_normal((1, *wf.input_shape)).astype(np.float32))
    net = wf.compile()
    hw = [layer for layer in net.layers if layer.target == "hw"]
    host = [layer for layer in net.layers if layer.target == "host"]
    assert hw and net.instr_count > len(hw)
    assert net.total_macs > 0.9 * sum(layer.macs for layer in net.layers), "the MACs must run on the processor"
    with capsys.disabled():
        print(f"\n{name}: {len(hw)} layers on the processor, {net.weight_bytes / 2**20:.1f} MiB weights, "
              f"{net.instr_count} instructions; host: " + (", ".join(f"{la.name} ({la.op}: {la.note})" for la in host)
                                                          or "none"))
    for layer in host:
        assert layer.op in HOST_OK, f"{layer.name} ({layer.op}) runs on the host: {layer.note}"
