"""Fusion renames tensors when it removes identities; layers that later fall back to the host must follow."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from dlproc.runtime.workflow import Workflow


def test_identity_before_a_host_maxpool_keeps_the_host_node_consistent():
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="c1"),
             helper.make_node("Identity", ["c1"], ["i1"], name="id"),
             # padded max pooling of a possibly negative input is exact only on the host
             helper.make_node("MaxPool", ["i1"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="mp"),
             helper.make_node("Conv", ["p", "w2"], ["y"], pads=[1, 1, 1, 1], name="c2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    wf = Workflow(model, processor="tiny_int8")
    wf.calibrate(rng.standard_normal((4, 3, 8, 8)).astype(np.float32))
    net = wf.compile()
    assert [(layer.name, layer.target) for layer in net.layers] == [("c1", "hw"), ("mp", "host"), ("c2", "hw")]
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    from dlproc.compiler.float_ref import float_evaluator

    want = float_evaluator(model).run(None, {"x": x})[0]
    got = wf.predict(x)
    assert got.shape == want.shape
    assert np.dot(got.ravel(), want.ravel()) / (np.linalg.norm(got) * np.linalg.norm(want)) > 0.99
