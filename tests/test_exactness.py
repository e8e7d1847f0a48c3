"""Integer exactness: the compiled program on the golden model equals the independent integer reference.

Every test network (tests/nets.py) on two configurations with different lane counts and buffer sizes. The reference
(tests/int_reference.py) computes each layer on whole tensors with the processor's integer rules; it shares no code
with the compiler back end (tiling, layout, instructions) or the golden model.
"""

import numpy as np
import pytest
from helpers import stable_seed
from int_reference import run_int_reference
from nets import ALL_NETS

from dlproc.runtime.workflow import Workflow

CONFIGS = ["tiny_int8", "small_int8"]


@pytest.mark.parametrize("cfgname", CONFIGS)
@pytest.mark.parametrize("netname", list(ALL_NETS))
def test_golden_model_equals_integer_reference(netname, cfgname):
    model, _ = ALL_NETS[netname]()
    rng = np.random.default_rng(stable_seed(netname, cfgname))
    wf = Workflow(model, processor=cfgname, target="ref")
    wf.calibrate(rng.standard_normal((8, *wf.input_shape)).astype(np.float32))
    net = wf.compile()
    x = rng.standard_normal((2, *wf.input_shape)).astype(np.float32)
    for frame in x:
        got = wf.run_int(frame)
        ref = run_int_reference(wf.graph, frame[None])
        compared = 0
        for name, value in got.items():
            if name in ref:
                np.testing.assert_array_equal(value, ref[name].reshape(value.shape), err_msg=f"tensor {name}")
                compared += 1
        hw_layers = [layer for layer in net.layers if layer.target == "hw"]
        assert compared >= len(hw_layers), "every tensor a hardware layer wrote must be compared"
