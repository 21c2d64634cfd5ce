"""torchvision's classifiers, as people have them: torch -> Keras -> torch, every step compared.

Each model is built with random weights (``weights=None``), then perturbed so nothing is
trivial: batch-norm running statistics, scales and shifts away from 1 and 0, noise on every
weight and bias. On one seeded input the test compares the torch model's output with the
converted Keras model's, the numpy runtime's (from the archive alone), and that of the torch
model weightio writes back from the Keras model (Keras -> torch). Every comparison must agree to
1e-5 relative to the output's scale (float32).

resnet18, mobilenet_v2 and a small VisionTransformer run in CI's fast set; the rest are marked slow (``--runslow``). With
``WEIGHTIO_MODELS_REPORT=<file.json>`` each test also records its result there, which
``scripts/gen_models_page.py`` turns into docs/models.md.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from models_report import RESULTS  # noqa: E402
from torchvision_shim import import_torchvision  # noqa: E402

torchvision = import_torchvision()
if torchvision is None:
    pytest.skip("torchvision is not installed or does not import", allow_module_level=True)

import weightio  # noqa: E402
from weightio.errors import UnsupportedLayerError  # noqa: E402
from weightio.layouts.transforms import to_channels_last  # noqa: E402

pytestmark = [pytest.mark.keras, pytest.mark.torch]

TOLERANCE = 1e-5
#: The least spread between the two probes' outputs (relative to the output's scale) for a
#: comparison to mean something: a thousand times the tolerance.
INPUT_EFFECT = 1000 * TOLERANCE
#: The least batch-norm variance, as a fraction of its layer's mean: a channel the calibration
#: batch hardly moves would otherwise be divided by almost nothing and amplify float32 rounding
#: (torch's own float32 output then strayed 1e-5 to 1e-3 from float64, past the tolerance).
FLOOR = 0.3

#: (torchvision builder, input size): small inputs, every stage still sees a real feature map.
FAST = [("resnet18", 64), ("mobilenet_v2", 32), ("vit_small", 32)]
SLOW = [("resnet50", 32), ("densenet121", 32), ("efficientnet_b0", 32), ("shufflenet_v2_x0_5", 32),
        ("convnext_tiny", 32), ("mobilenet_v3_small", 32), ("squeezenet1_0", 64), ("googlenet", 32),
        ("regnet_x_400mf", 32), ("mnasnet0_5", 32), ("resnext50_32x4d", 32), ("alexnet", 64),
        ("vit_b_16", 224)]
#: Builder arguments beyond ``weights=None, num_classes=10``.
KWARGS = {"googlenet": {"aux_logits": False, "init_weights": True}}
#: Models built from their class rather than a torchvision builder: a small ViT (4 × 4 patches
#: of 8 pixels, 2 encoder blocks of 2 heads), the same code as vit_b_16 at a test's size.
CLASSES = {
    "vit_small": ("VisionTransformer", {"image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 2,
                                        "hidden_dim": 32, "mlp_dim": 64}),
}

#: Models weightio refuses today, and the operation named in the refusal (a typed error naming
#: the layer, raised while reading: nothing is half-converted).
REFUSED = {
    "swin_t": "relative_position_bias_table",  # indexed by a stored index buffer
}

#: Models that convert to Keras and match, but whose Keras model weightio cannot read back
#: yet: the refusal expected on the way back (a typed error naming the layer).
ONE_WAY: dict[str, str] = {
    # convnext_tiny was here until the Keras reader read LayerNormalization on a channels-last
    # map (through one permute) and keras.ops arithmetic with a constant (the layer scale).
}
CASES = [pytest.param(n, s, id=n) for n, s in FAST] + [
    pytest.param(n, s, id=n, marks=pytest.mark.slow) for n, s in SLOW
]




def perturbed(name: str, seed: int = 0, size: int = 32) -> object:
    """``torchvision.models.<name>`` with random weights, noise on every parameter, each
    convolution and linear layer scaled to its data and batch-norm statistics that fit it; in
    eval mode.

    Noise alone is not enough: with running statistics drawn at random (not the activations'
    own), a deep stack of batch norms shrinks the signal block by block while the shifts keep
    their size, and without batch norm (alexnet, squeezenet) each layer's default init shrinks it
    while the biases keep theirs; six of the zoo gave one output for any input (to 1e-7), so a
    swapped parameter could hide. So one calibration batch (train mode, other seed than the
    probes') scales each convolution's and linear layer's weight so the part of its output the
    input moves has unit spread (LSUV, Mishkin & Matas 2016; biases stay), and gives every batch
    norm that batch's statistics (cumulative average), its variances floored (``FLOOR``) and
    then moved off by a little.
    """
    torch.manual_seed(seed)
    if name in CLASSES:
        cls, kwargs = CLASSES[name]
        model = getattr(torchvision.models, cls)(num_classes=10, **kwargs)
    else:
        model = getattr(torchvision.models, name)(weights=None, num_classes=10, **KWARGS.get(name, {}))
    gen = torch.Generator().manual_seed(seed + 1)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for key, param in model.named_parameters():
            # biases, norm scales and shifts, tensors initialised to zeros (ViT's class token and
            # head) and ViT's position embedding
            if param.ndim == 1 or not param.any() or key.endswith("pos_embedding"):
                param.add_(0.1 * torch.randn(param.shape, generator=gen))
            else:
                param.mul_(1 + 0.05 * torch.randn(param.shape, generator=gen))
        for module in norms:
            module.reset_running_stats()
            module.momentum = None  # the cumulative average of the calibration batch
        hooks = [m.register_forward_hook(_unit_spread) for m in model.modules()
                 if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        calibration = np.random.default_rng(seed + 11).standard_normal((8, 3, size, size))
        model.train()(torch.from_numpy(calibration.astype("float32")))
        for hook in hooks:
            hook.remove()
        for module in norms:
            n = module.num_features
            module.running_var.add_(FLOOR * module.running_var.mean())
            std = module.running_var.sqrt()
            module.running_mean.add_(0.1 * std * torch.randn(n, generator=gen))
            module.running_var.mul_(0.75 + 0.5 * torch.rand(n, generator=gen))
    return model.eval()


def _unit_spread(module: object, _inputs: object, out: object) -> object:
    """Forward hook: scale ``module.weight`` so the input-driven part of its output (the output
    less the bias) has standard deviation 1, and return the output that weight gives."""
    bias = module.bias  # type: ignore[attr-defined]
    shift = 0 if bias is None else bias.view(1, -1, *([1] * (out.ndim - 2))) if isinstance(
        module, torch.nn.Conv2d) else bias
    spread = float((out - shift).std())
    if spread <= 0:
        return out
    module.weight.div_(spread)  # type: ignore[attr-defined]
    return (out - shift) / spread + shift


def relative_diff(reference: np.ndarray, other: np.ndarray) -> float:
    """max |a - b| / max(1, max |a|): the tolerance ``conftest.assert_close`` checks."""
    reference = np.asarray(reference, dtype=np.float64)
    other = np.asarray(other, dtype=np.float64)
    assert reference.shape == other.shape, (reference.shape, other.shape)
    scale = max(1.0, float(np.max(np.abs(reference))))
    return float(np.max(np.abs(reference - other))) / scale


def _torch_out(model: object, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()  # type: ignore[operator]


def check_round_trip(name: str, size: int) -> dict:
    """Convert ``name`` torch -> Keras -> torch; the worst relative difference of each step."""
    model = perturbed(name, size=size)
    x = np.random.default_rng(7).standard_normal((2, 3, size, size)).astype("float32")
    reference = _torch_out(model, x)
    archive = weightio.read(model, example_input=torch.from_numpy(x))
    keras_model = weightio.to_keras(archive)
    got_keras = np.asarray(keras_model(to_channels_last(x)))
    result = {
        "status": "converts",
        "input": [3, size, size],
        "layers": len(archive.spec.layers),
        "output_scale": float(np.max(np.abs(reference))),
        "input_effect": float(np.max(np.abs(reference[0] - reference[1]))),
        "runtime": relative_diff(reference, weightio.run(archive, x)),
        "keras": relative_diff(reference, got_keras),
    }
    try:
        back = weightio.to_torch(weightio.read(keras_model))
    except UnsupportedLayerError as exc:
        return {**result, "status": "to Keras only", "layer": exc.layer, "reason": str(exc)}
    return {**result, "back_to_torch": relative_diff(reference, _torch_out(back, x))}


@pytest.mark.parametrize("name,size", CASES)
def test_torchvision_model_converts_and_matches(name: str, size: int) -> None:
    try:
        result = check_round_trip(name, size)
    except UnsupportedLayerError as exc:
        RESULTS[name] = {"status": "refused", "layer": exc.layer, "reason": str(exc)}
        raise
    RESULTS[name] = result
    assert result["output_scale"] > 1e-2, "the output is too small for the comparison to mean anything"
    # The two probes' outputs must differ by far more than the tolerance, relative to the same
    # scale: else the output hardly depends on the input, and a swapped parameter could hide.
    assert result["input_effect"] / result["output_scale"] > INPUT_EFFECT, (
        "the two samples give (nearly) one output: the input is not compared", result)
    for step in ("runtime", "keras", "back_to_torch"):
        if step in result:
            assert result[step] <= TOLERANCE, (step, result)
    if name in ONE_WAY:
        assert result["status"] == "to Keras only", (
            f"{name} now converts back to PyTorch and matches: remove it from ONE_WAY", result
        )
        assert ONE_WAY[name] in result["reason"], result
    else:
        assert result["status"] == "converts", result


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REFUSED))
def test_torchvision_model_is_refused_by_name(name: str) -> None:
    model = perturbed(name)
    x = torch.from_numpy(np.random.default_rng(7).standard_normal((2, 3, 32, 32)).astype("float32"))
    with pytest.raises(UnsupportedLayerError) as info:
        weightio.read(model, example_input=x)
    RESULTS[name] = {"status": "refused", "input": [3, 32, 32], "layer": info.value.layer,
                      "reason": str(info.value)}
    assert info.value.layer and REFUSED[name] in str(info.value)


# -- the pieces those models are made of -------------------------------------------------------


class _Residual(torch.nn.Module):
    """efficientnet's residual: ``stochastic_depth(block(x)) + x``, as module and as function."""

    def __init__(self, functional: bool) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.functional = functional
        self.drop = torchvision.ops.StochasticDepth(0.2, "row")

    def forward(self, x):  # noqa: ANN001, ANN201
        y = self.conv(x)
        if self.functional:
            y = torchvision.ops.stochastic_depth(y, 0.2, "row", training=self.training)
        else:
            y = self.drop(y)
        return torch.nn.functional.dropout(y, 0.3, training=self.training) + x


@pytest.mark.parametrize("functional", [False, True], ids=["module", "function"])
def test_stochastic_depth_in_eval_mode_is_an_identity(functional: bool) -> None:
    """The module reads as an identity layer; the function, called from a forward, is traced
    through by torch.fx and in eval mode returns its input (no layer at all)."""
    model = _Residual(functional).train()  # weightio reads it in eval mode, and restores this
    x = np.random.default_rng(3).standard_normal((2, 3, 6, 6)).astype("float32")
    archive = weightio.read(model, example_input=torch.from_numpy(x))
    assert model.training
    kinds = [layer.kind for layer in archive.spec.layers]
    assert kinds == ["conv", *([] if functional else ["identity"]), "dropout", "add"]
    reference = _torch_out(model.eval(), x)
    assert relative_diff(reference, weightio.run(archive, x)) <= TOLERANCE
    got = np.asarray(weightio.to_keras(archive)(to_channels_last(x)))
    assert relative_diff(reference, np.moveaxis(got, -1, 1)) <= TOLERANCE


def test_stochastic_depth_applied_in_eval_mode_is_refused() -> None:
    """``training=True`` drops rows at inference: nothing exact to convert, refused by name."""

    class Always(torch.nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN201
            return torchvision.ops.stochastic_depth(x, 0.5, "row", training=True)

    with pytest.raises(UnsupportedLayerError, match="not supported") as info:
        weightio.read(Always(), example_input=torch.zeros(2, 3, 4, 4))
    assert info.value.layer


def test_vit_reads_its_class_token_position_embedding_and_head_input() -> None:
    """The pieces of torchvision's ViT, by kind: patchify (conv, reshape, permute), the class
    token repeated over the batch (a ``parameter`` without its leading axis of 1) and
    concatenated before the patches, the position embedding added (a learned constant), the
    encoder blocks, and the head reading ``x[:, 0]`` (a slice and a reshape)."""
    model = perturbed("vit_small")
    x = torch.from_numpy(np.random.default_rng(7).standard_normal((2, 3, 32, 32)).astype("float32"))
    archive = weightio.read(model, example_input=x)
    kinds = [layer.kind for layer in archive.spec.layers]
    assert kinds[:6] == ["conv", "reshape", "permute", "parameter", "concatenate", "arithmetic"]
    assert kinds[-3:] == ["slice", "reshape", "dense"] and kinds.count("multi_head_attention") == 2
    token, add = archive.spec.layers[3], archive.spec.layers[5]
    assert token.value.key == "class_token" and list(token.value.shape) == [1, 32]
    assert add.learned and add.constant.key == "encoder.pos_embedding" and list(add.constant.shape) == [17, 32]
    assert archive.spec.layers[4].inputs == [token.name, archive.spec.layers[2].name]
    assert set(archive.tensors) == set(model.state_dict())
