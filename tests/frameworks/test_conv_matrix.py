"""Every spatial kind, both directions, three witnesses: source, target, numpy runtime.

Keras -> archive -> PyTorch: the Keras model is fed channels-last, the PyTorch one and the numpy
runtime channels-first (the same values, transposed exactly). PyTorch -> archive -> Keras: the
reverse. Outputs agree within float32 tolerance; weights and biases are random and non-zero.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from conftest import assert_close  # noqa: E402

import weightio  # noqa: E402
import weightio.errors  # noqa: E402
from weightio.layouts.flow import tensor_layouts
from weightio.layouts.transforms import to_channels_first, to_channels_last

pytestmark = [pytest.mark.keras, pytest.mark.torch]
L = keras.layers


def _randomise_keras(model: object, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:  # type: ignore[attr-defined]
        weights = layer.get_weights()
        if weights:
            layer.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(w.dtype) for w in weights])


def _output_is_map(archive: object) -> bool:
    spec = archive.spec  # type: ignore[attr-defined]
    return tensor_layouts(spec)[spec.outputs[0].layer] == "channels"


def _keras_out(model: object, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x, training=False))  # type: ignore[operator]


def _torch_out(module: object, x: np.ndarray) -> np.ndarray:
    module.eval()  # type: ignore[attr-defined]
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()  # type: ignore[operator]


#: Keras 'same' pooling at stride 1 with an even window becomes a wider torch pool and a crop;
#: for average pooling Keras has no exact layer for that excluded padding, so it does not
#: round-trip (max pooling comes back as an explicit -inf pad and a valid pooling).
#: Cases whose torch module has no exact Keras form (none now: an uneven "same" pooling that
#: torch builds as even padding plus a crop reads back as the pooling, ``read/cropped.py``).
ONE_WAY: set[str] = set()

# (id, channels-last input shape, layers)
KERAS_CASES = [
    ("conv1d_valid", (11, 3), lambda: [L.Conv1D(4, 3)]),
    ("conv1d_same_stride2", (12, 3), lambda: [L.Conv1D(4, 4, strides=2, padding="same")]),
    ("conv1d_causal_dilated", (12, 3), lambda: [L.Conv1D(4, 3, padding="causal", dilation_rate=2)]),
    ("conv2d_valid_relu", (9, 8, 3), lambda: [L.Conv2D(5, 3, activation="relu")]),
    ("conv2d_same_even_kernel", (8, 8, 3), lambda: [L.Conv2D(4, 4, padding="same")]),
    ("conv2d_same_stride2", (9, 7, 3), lambda: [L.Conv2D(4, 3, strides=2, padding="same")]),
    ("conv2d_same_stride2_even", (8, 8, 2), lambda: [L.Conv2D(4, 2, strides=2, padding="same")]),
    ("conv2d_dilated_same", (10, 10, 2), lambda: [L.Conv2D(3, 3, dilation_rate=2, padding="same")]),
    ("conv2d_groups", (7, 7, 4), lambda: [L.Conv2D(6, 3, groups=2, use_bias=False)]),
    ("conv3d_same_stride2", (6, 7, 5, 2), lambda: [L.Conv3D(3, 3, strides=2, padding="same")]),
    ("depthwise2d", (8, 8, 3), lambda: [L.DepthwiseConv2D(3, depth_multiplier=2, padding="same")]),
    ("separable2d", (8, 8, 3), lambda: [L.SeparableConv2D(5, 3, depth_multiplier=2, activation="tanh")]),
    ("conv2d_transpose_valid", (5, 5, 3), lambda: [L.Conv2DTranspose(4, 3, strides=2)]),
    ("conv2d_transpose_same", (5, 4, 3), lambda: [L.Conv2DTranspose(4, 3, strides=2, padding="same")]),
    ("conv2d_transpose_same_even", (4, 4, 2), lambda: [L.Conv2DTranspose(3, 4, strides=2, padding="same")]),
    ("conv2d_transpose_output_padding", (4, 4, 2), lambda: [L.Conv2DTranspose(3, 3, strides=2, output_padding=1)]),
    ("maxpool1d", (10, 3), lambda: [L.MaxPooling1D(2)]),
    ("maxpool2d_same_odd", (7, 7, 3), lambda: [L.MaxPooling2D(2, padding="same")]),
    ("maxpool2d_same_stride1", (6, 6, 2), lambda: [L.MaxPooling2D(2, strides=1, padding="same")]),
    ("avgpool1d_same", (9, 3), lambda: [L.AveragePooling1D(2, padding="same")]),
    ("avgpool1d_same_stride1", (6, 3), lambda: [L.AveragePooling1D(2, strides=1, padding="same")]),
    ("maxpool2d_same_stride1", (5, 6, 3), lambda: [L.MaxPooling2D(2, strides=1, padding="same")]),
    ("avgpool2d_same_stride2_odd", (7, 7, 3), lambda: [L.AveragePooling2D(2, strides=2, padding="same")]),
    ("avgpool2d_same_3x3_s2", (8, 7, 3), lambda: [L.AveragePooling2D(3, strides=2, padding="same")]),
    ("avgpool2d_same_stride1", (6, 5, 2), lambda: [L.AveragePooling2D(2, strides=1, padding="same")]),
    ("global_avg2d", (6, 6, 3), lambda: [L.GlobalAveragePooling2D()]),
    ("global_max1d_keepdims", (6, 3), lambda: [L.GlobalMaxPooling1D(keepdims=True)]),
    ("zeropad1d", (6, 3), lambda: [L.ZeroPadding1D((1, 2))]),
    ("zeropad2d", (5, 5, 2), lambda: [L.ZeroPadding2D(((1, 0), (2, 1)))]),
    ("cropping2d", (6, 6, 2), lambda: [L.Cropping2D(((1, 0), (2, 1)))]),
    ("upsampling1d", (5, 2), lambda: [L.UpSampling1D(3)]),
    ("upsampling2d", (4, 3, 2), lambda: [L.UpSampling2D((2, 3))]),
    ("flatten_dense", (5, 4, 3), lambda: [L.Conv2D(4, 3), L.Flatten(), L.Dense(6)]),
    ("flatten_dropout_dense", (4, 4, 2), lambda: [L.Flatten(), L.Dropout(0.5), L.Dense(3)]),
    ("flatten_alone", (4, 3, 2), lambda: [L.Conv2D(3, 2), L.Flatten()]),
    ("reshape_to_map", (24,), lambda: [L.Reshape((4, 3, 2)), L.Conv2D(3, 2)]),
    ("reshape_from_map", (5, 4, 2), lambda: [L.Conv2D(3, 2), L.Reshape((4, 9)), L.Dense(2)]),
    ("permute_map", (5, 4, 3), lambda: [L.Permute((2, 1, 3)), L.Conv2D(2, 2)]),
    ("permute_plain", (5, 4), lambda: [L.Permute((2, 1)), L.Dense(3)]),
]


@pytest.mark.parametrize("shape,make", [c[1:] for c in KERAS_CASES], ids=[c[0] for c in KERAS_CASES])
def test_keras_to_torch(
    shape: tuple, make: object, rng: np.random.Generator, request: pytest.FixtureRequest
) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape=shape), *make()])  # type: ignore[operator]
    _randomise_keras(model, 1)
    x_keras = rng.standard_normal((3, *shape)).astype("float32")
    spatial = len(shape) >= 2 and weightio.read(model).spec.inputs[0].layout == "channels_last"
    x_canon = to_channels_first(x_keras) if spatial else x_keras
    reference = _keras_out(model, x_keras)

    archive = weightio.read(model)
    module = weightio.to_torch(archive)
    got_torch = _torch_out(module, x_canon)
    got_numpy = weightio.run(archive, x_canon)
    if _output_is_map(archive):
        reference = to_channels_first(reference)  # a feature-map output: compare channels-first
    assert_close(reference, got_torch)
    assert_close(reference, got_numpy)

    again = weightio.read(module, example_input=torch.from_numpy(x_canon))
    if request.node.callspec.id in ONE_WAY:
        with pytest.raises(weightio.errors.UnsupportedLayerError, match="no exact Keras"):
            weightio.to_keras(again)
        return
    back = weightio.to_keras(again)
    assert_close(_keras_out(model, x_keras), _keras_out(back, x_keras))


nn = torch.nn
TORCH_CASES = [
    ("conv1d_padding1", (3, 11), lambda: nn.Sequential(nn.Conv1d(3, 4, 3, padding=1))),
    ("conv1d_stride_dilation", (3, 15), lambda: nn.Sequential(nn.Conv1d(3, 4, 3, stride=2, dilation=2))),
    ("conv2d_same_odd", (3, 8, 8), lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding="same"), nn.ReLU())),
    ("conv2d_asym_explicit", (2, 7, 6), lambda: nn.Sequential(nn.Conv2d(2, 3, (3, 2), padding=(1, 0), stride=(2, 1)))),
    ("conv2d_groups", (4, 6, 6), lambda: nn.Sequential(nn.Conv2d(4, 8, 3, groups=4))),
    ("conv2d_grouped_2", (4, 6, 6), lambda: nn.Sequential(nn.Conv2d(4, 6, 3, groups=2))),
    ("conv3d", (2, 5, 5, 4), lambda: nn.Sequential(nn.Conv3d(2, 3, 2, padding=1))),
    ("conv_transpose2d_padding", (3, 5, 5), lambda: nn.Sequential(nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1))),
    ("conv_transpose1d", (3, 6), lambda: nn.Sequential(nn.ConvTranspose1d(3, 2, 4, stride=2, padding=1))),
    ("maxpool2d", (3, 8, 8), lambda: nn.Sequential(nn.MaxPool2d(2))),
    ("avgpool2d_pad_include", (2, 6, 6), lambda: nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1))),
    ("avgpool1d", (2, 9), lambda: nn.Sequential(nn.AvgPool1d(3, stride=2))),
    ("adaptive_avg", (3, 5, 5), lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())),
    ("adaptive_max_keep", (3, 5, 5), lambda: nn.Sequential(nn.AdaptiveMaxPool2d((1, 1)))),
    ("zeropad2d", (2, 4, 4), lambda: nn.Sequential(nn.ZeroPad2d((1, 2, 0, 1)))),
    ("upsample_nearest", (2, 3, 4), lambda: nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"))),
    ("flatten_linear", (3, 4, 4), lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(16, 5))),
    ("unflatten_conv", (12,), lambda: nn.Sequential(nn.Unflatten(1, (3, 2, 2)), nn.Conv2d(3, 2, 1))),
]


class _Functional(nn.Module):
    """flatten / view / permute / F.pad spelled as functions and methods."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):  # noqa: ANN001, ANN201
        x = torch.nn.functional.pad(x, (0, 1, 1, 0))
        x = self.conv(x)
        x = x.permute(0, 1, 3, 2)
        x = x.reshape(-1, 4 * 4 * 4)
        return self.fc(x)


class _Flat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 2)
        self.fc = nn.Linear(3 * 4, 2)

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.fc(torch.flatten(self.conv(x), 1))


class _ReusedRelu(nn.Module):
    """resnet's block: one parameterless ``nn.ReLU`` called twice, and functional adaptive pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):  # noqa: ANN001, ANN201
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x) + x)
        return torch.nn.functional.adaptive_avg_pool2d(x, (2, 3))


class _Shuffle(nn.Module):
    """shufflenet's block: chunk, a branch, cat, then the channel shuffle written with size,
    view, transpose and contiguous; a mean over the spatial axes and a view(x.size(0), -1)."""

    def __init__(self) -> None:
        super().__init__()
        self.branch = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Conv2d(8, 6, 1)

    def forward(self, x):  # noqa: ANN001, ANN201
        x1, x2 = x.chunk(2, dim=1)
        out = torch.cat((x1, self.branch(x2)), dim=1)
        batch, channels, height, width = out.size()
        out = out.view(batch, 2, channels // 2, height, width)
        out = torch.transpose(out, 1, 2).contiguous()
        out = out.view(batch, channels, height, width)
        pooled = self.head(out).amax([2, 3], keepdim=True)
        return pooled.view(pooled.size(0), -1) + out.mean([2, 3])[:, 1:7]


TORCH_CASES += [
    ("channel_shuffle", (8, 4, 4), _Shuffle),
    ("functional_ops", (3, 5, 5), _Functional),
    ("torch_flatten_fn", (2, 5), _Flat),
    ("reused_relu_adaptive_fn", (3, 6, 6), _ReusedRelu),
    # resnet's stem pooling: -inf padding, which Keras gets as an explicit pad operation.
    ("maxpool2d_explicit_pad", (3, 8, 8), lambda: nn.Sequential(nn.MaxPool2d(3, 2, padding=1))),
    # ceil_mode's partial last window is one more -inf pad after the input.
    ("maxpool2d_ceil_pad", (3, 8, 8), lambda: nn.Sequential(nn.MaxPool2d(3, 2, padding=1, ceil_mode=True))),
    ("maxpool1d_ceil", (2, 10), lambda: nn.Sequential(nn.MaxPool1d(2, 3, ceil_mode=True))),
    ("adaptive_avg_divides", (3, 8, 8), lambda: nn.Sequential(nn.AdaptiveAvgPool2d((2, 4)))),
    ("adaptive_max_divides", (3, 6, 6), lambda: nn.Sequential(nn.AdaptiveMaxPool2d((3, None)))),
    ("adaptive_avg_multiple", (3, 2, 3), lambda: nn.Sequential(nn.AdaptiveAvgPool2d((4, 6)))),
]


def _randomise_torch(module: object, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():  # type: ignore[attr-defined]
            p.copy_(torch.rand(p.shape, generator=gen) - 0.5)


@pytest.mark.parametrize("shape,make", [c[1:] for c in TORCH_CASES], ids=[c[0] for c in TORCH_CASES])
def test_torch_to_keras(shape: tuple, make: object, rng: np.random.Generator) -> None:
    torch.manual_seed(0)
    module = make()  # type: ignore[operator]
    _randomise_torch(module, 2)
    x = rng.standard_normal((3, *shape)).astype("float32")
    reference = _torch_out(module, x)
    archive = weightio.read(module, example_input=torch.from_numpy(x))
    model = weightio.to_keras(archive)
    spatial = archive.spec.inputs[0].layout == "channels_first"
    got = _keras_out(model, to_channels_last(x) if spatial else x)
    if _output_is_map(archive):
        got = to_channels_first(got)
    assert_close(reference, got)
    assert_close(reference, weightio.run(archive, x))
    back = weightio.to_torch(weightio.read(model))
    assert_close(reference, _torch_out(back, x))


def _static_shapes_match_the_runtime(archive: object) -> None:
    """``ModelSpec``'s size bound rests on each kind's ``output_shape``: it must agree with what
    the runtime computes, wherever it claims to know."""
    from weightio.runtime.shapes import tensor_shapes
    from weightio.spec.model import activation_shapes

    spec = archive.spec  # type: ignore[attr-defined]
    ran = tensor_shapes(archive)
    assert ran is not None
    for name, shape in activation_shapes(spec).items():
        if shape is not None:
            assert tuple(shape) == ran[name], (name, shape, ran[name])


@pytest.mark.parametrize("shape,make", [c[1:] for c in TORCH_CASES], ids=[c[0] for c in TORCH_CASES])
def test_static_output_shapes_agree_with_the_runtime(shape: tuple, make: object,
                                                    rng: np.random.Generator) -> None:
    torch.manual_seed(0)
    x = rng.standard_normal((2, *shape)).astype("float32")
    _static_shapes_match_the_runtime(weightio.read(make(), example_input=torch.from_numpy(x)))  # type: ignore[operator]


@pytest.mark.parametrize("shape,make", [c[1:] for c in KERAS_CASES], ids=[c[0] for c in KERAS_CASES])
def test_static_output_shapes_agree_with_the_runtime_keras(shape: tuple, make: object) -> None:
    model = keras.Sequential([keras.Input(shape), *make()])  # type: ignore[operator]
    _static_shapes_match_the_runtime(weightio.read(model))
