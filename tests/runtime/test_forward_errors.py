"""A layer that cannot compute on the input it is given is refused by name, with a typed error.

The spec fixes parameters against hyper-parameters; a free input dimension is only known when
the model runs. numpy's own ``ValueError`` from a matmul must not reach the user.
"""

from __future__ import annotations

import numpy as np
import pytest

import weightio
from weightio.errors import InvalidInputError, WeightioError
from weightio.format.archive import Archive, tensor_ref
from weightio.spec.conv import PermuteLayer
from weightio.spec.core import DenseLayer
from weightio.spec.model import InputSpec, ModelSpec, OutputSpec, Provenance


def _archive() -> Archive:
    """A free-length sequence ``(batch, None, 4)`` permuted, then a 4 -> 3 dense on its last axis:
    valid for exactly one length (4), which the spec cannot know in advance.
    """
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4)).astype("f4")
    b = rng.standard_normal(3).astype("f4")
    layers = [
        PermuteLayer(name="swap", dims=(2, 1)),
        DenseLayer(name="fc", units=3, in_features=4, weight=tensor_ref("fc.weight", w),
                   bias=tensor_ref("fc.bias", b)),
    ]
    spec = ModelSpec(
        name="free", provenance=Provenance(source_framework="weightio", weightio_version="t",
                                           created_at="now"),
        inputs=[InputSpec(name="x", shape=(None, 4))], layers=layers,
        outputs=[OutputSpec(name="y", layer="fc")],
    )
    return Archive(spec, {"fc.weight": w, "fc.bias": b})


def test_a_fitting_length_runs() -> None:
    x = np.random.default_rng(1).standard_normal((2, 4, 4)).astype("f4")
    y = weightio.run(_archive(), x)
    assert y.shape == (2, 4, 3)


def test_a_length_the_dense_cannot_take_is_a_typed_error_naming_the_layer() -> None:
    x = np.zeros((2, 5, 4), "f4")
    with pytest.raises(InvalidInputError) as info:
        weightio.run(_archive(), x)
    assert isinstance(info.value, WeightioError) and isinstance(info.value, ValueError)
    assert info.value.layer == "fc"
    assert "(2, 4, 5)" in str(info.value)
