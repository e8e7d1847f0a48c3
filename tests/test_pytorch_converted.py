"""The PyTorch-converted operator cases shipped in the onnx wheel, on the fp32 processor's golden model ("ref").

Each case (``onnx/backend/test/data/pytorch-converted/<case>/``) is a one-operator model with an input and the
output PyTorch computed. The models are opset 6 to 9 with a fixed batch size: they are converted to opset 13 and
their batch axis made symbolic, so the compiler (batch 1, opsets 11 to 21) takes them and the workflow runs the
batch frame by frame.

Cases of operators the processor executes (:data:`ON_PROCESSOR`) must compile to at least one processor layer and
match the stored output within a relative error of 1e-4 (of the output's largest magnitude). Every other case is
listed in :data:`SKIPPED` with the reason; a case in neither list (a newer onnx wheel) fails, so it gets looked at.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper, version_converter

from dlproc.processor.config import ProcessorConfig
from dlproc.runtime.workflow import Workflow

CASES = Path(onnx.__file__).parent / "backend" / "test" / "data" / "pytorch-converted"
CONFIG = ProcessorConfig.preset("tiny_fp32")
RTOL = 1e-4

#: Cases whose operator runs on the processor (2-D convolutions of every kind, Linear, 2-D average pooling,
#: BatchNorm on feature maps, ReLU).
ON_PROCESSOR = [
    "test_AvgPool1d", "test_AvgPool1d_stride",            # exported as Unsqueeze + 2-D AveragePool + Squeeze
    "test_AvgPool2d", "test_AvgPool2d_stride",
    "test_BatchNorm2d_eval", "test_BatchNorm2d_momentum_eval",   # a 1x1 depthwise convolution
    "test_Conv2d", "test_Conv2d_depthwise", "test_Conv2d_depthwise_padded", "test_Conv2d_depthwise_strided",
    "test_Conv2d_depthwise_with_multiplier", "test_Conv2d_dilated", "test_Conv2d_groups", "test_Conv2d_groups_thnn",
    "test_Conv2d_no_bias", "test_Conv2d_padding", "test_Conv2d_strided",
    "test_Linear", "test_Linear_no_bias",
    "test_ReLU",                                           # a 1x1 depthwise convolution with a fused ReLU
]

_HOST_OP = "the processor has no {} unit: the operator runs on the host (onnx.reference), not the fp32 datapath"
_3D = "3-D operator: the processor implements 2-D convolution and pooling (runs on the host)"
_1D = "1-D operator on an (N, C, L) tensor: the processor implements 2-D operators (runs on the host)"

#: Cases not run, with the reason.
SKIPPED = {
    "test_AvgPool3d": _3D, "test_AvgPool3d_stride": _3D, "test_AvgPool3d_stride1_pad0_gpu_input": _3D,
    "test_Conv3d": _3D, "test_Conv3d_dilated": _3D, "test_Conv3d_dilated_strided": _3D, "test_Conv3d_groups": _3D,
    "test_Conv3d_no_bias": _3D, "test_Conv3d_stride": _3D, "test_Conv3d_stride_padding": _3D,
    "test_MaxPool3d": _3D, "test_MaxPool3d_stride": _3D, "test_MaxPool3d_stride_padding": _3D,
    "test_BatchNorm3d_eval": _3D, "test_BatchNorm3d_momentum_eval": _3D,
    "test_Conv1d": _1D, "test_Conv1d_dilated": _1D, "test_Conv1d_groups": _1D, "test_Conv1d_pad1": _1D,
    "test_Conv1d_pad1size1": _1D, "test_Conv1d_pad2": _1D, "test_Conv1d_pad2size1": _1D, "test_Conv1d_stride": _1D,
    "test_MaxPool1d": _1D, "test_MaxPool1d_stride": _1D, "test_MaxPool1d_stride_padding_dilation": _1D,
    "test_BatchNorm1d_3d_input_eval": _1D, "test_LeakyReLU": _1D, "test_LeakyReLU_with_negval": _1D,
    "test_MaxPool2d": "max pooling with padding on an input that may be negative runs on the host (the processor "
                      "pads with zeros, not -inf)",
    "test_MaxPool2d_stride_padding_dilation": "dilated pooling windows run on the host",
    "test_ConvTranspose2d": _HOST_OP.format("ConvTranspose"),
    "test_ConvTranspose2d_no_bias": _HOST_OP.format("ConvTranspose"),
    "test_ConstantPad2d": _HOST_OP.format("Pad"), "test_ReflectionPad2d": _HOST_OP.format("Pad"),
    "test_ReplicationPad2d": _HOST_OP.format("Pad"), "test_ZeroPad2d": _HOST_OP.format("Pad"),
    "test_ELU": _HOST_OP.format("Elu"), "test_SELU": _HOST_OP.format("Selu"),
    "test_Sigmoid": _HOST_OP.format("Sigmoid"), "test_Tanh": _HOST_OP.format("Tanh"),
    "test_Softplus": _HOST_OP.format("Softplus"), "test_Softsign": _HOST_OP.format("Abs/Div"),
    "test_PReLU_1d": _HOST_OP.format("PRelu"), "test_PReLU_1d_multiparam": _HOST_OP.format("PRelu"),
    "test_PReLU_2d": _HOST_OP.format("PRelu"), "test_PReLU_2d_multiparam": _HOST_OP.format("PRelu"),
    "test_PReLU_3d": _HOST_OP.format("PRelu"), "test_PReLU_3d_multiparam": _HOST_OP.format("PRelu"),
    "test_GLU": _HOST_OP.format("Split/Sigmoid/Mul"), "test_GLU_dim": _HOST_OP.format("Split/Sigmoid/Mul"),
    "test_LogSoftmax": _HOST_OP.format("LogSoftmax"), "test_log_softmax_dim3": _HOST_OP.format("LogSoftmax"),
    "test_log_softmax_lastdim": _HOST_OP.format("LogSoftmax"), "test_Softmax": _HOST_OP.format("Softmax"),
    "test_Softmin": _HOST_OP.format("Softmax"), "test_softmax_functional_dim3": _HOST_OP.format("Softmax"),
    "test_softmax_lastdim": _HOST_OP.format("Softmax"),
    "test_PixelShuffle": _HOST_OP.format("Transpose (pixel shuffle)"),
    "test_PoissonNLLLLoss_no_reduce": _HOST_OP.format("Exp"),
    "test_Embedding": "the input is int64 indices (Gather); the compiler takes a float32 image",
    "test_Embedding_sparse": "the input is int64 indices (Gather); the compiler takes a float32 image",
}


def shipped_cases() -> list[str]:
    return sorted(p.name for p in CASES.iterdir() if (p / "model.onnx").is_file())


def prepared_model(case: str) -> onnx.ModelProto:
    """The case's model at opset 13 with a symbolic batch axis (inputs that are initializers removed: IR >= 4)."""
    model = onnx.load(CASES / case / "model.onnx")
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.ir_version = max(model.ir_version, 7)
    if model.opset_import[0].version < 11:
        model = version_converter.convert_version(model, 13)
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    del model.graph.value_info[:]
    return model


def test_every_shipped_case_is_classified():
    shipped = set(shipped_cases())
    assert not set(ON_PROCESSOR) & set(SKIPPED)
    assert shipped - set(ON_PROCESSOR) - set(SKIPPED) == set(), "new cases: add them to ON_PROCESSOR or SKIPPED"
    assert set(ON_PROCESSOR) | set(SKIPPED) <= shipped


@pytest.mark.parametrize("case", shipped_cases())
def test_case_on_golden_model(case):
    if case in SKIPPED:
        pytest.skip(SKIPPED[case])
    model = prepared_model(case)
    data = CASES / case / "test_data_set_0"
    x = numpy_helper.to_array(onnx.load_tensor(data / "input_0.pb"))
    want = numpy_helper.to_array(onnx.load_tensor(data / "output_0.pb"))
    wf = Workflow(model, processor=CONFIG, target="ref")
    net = wf.compile()
    on_processor = [layer.op for layer in net.layers if layer.target == "hw"]
    assert on_processor, f"{case} compiled without a processor layer: {net.report()}"
    got = wf.predict(x)
    assert got.shape == want.shape and got.dtype == want.dtype == np.float32
    scale = float(np.max(np.abs(want))) or 1.0
    err = float(np.max(np.abs(got.astype(np.float64) - want))) / scale
    assert err <= RTOL, f"{case} ({on_processor}): relative error {err:.3g}"
