"""Hyper-parameters that imply huge outputs are refused when the spec is validated, from the
input shape, before ``run`` allocates anything; with free dimensions, ``run`` refuses them for
the input it is given, before computing."""

from __future__ import annotations

import numpy as np
import pytest

from weightio.errors import ResourceLimitError, SpecValidationError
from weightio.format.archive import Archive
from weightio.runtime.forward import run
from weightio.spec.conv import ConvTransposeLayer, ReshapeLayer, UpSamplingLayer, ZeroPaddingLayer
from weightio.spec.model import InputSpec, ModelSpec, OutputSpec, Provenance
from weightio.spec.serialization import spec_from_data

PROV = Provenance(source_framework="weightio", weightio_version="test", created_at="now")


def _spec(layer: object, shape: tuple[int | None, ...] = (3, 4, 4)) -> dict:
    return {"name": "m", "provenance": PROV.model_dump(), "inputs": [
        InputSpec(name="x", shape=shape).model_dump()], "layers": [layer.model_dump()],  # type: ignore[attr-defined]
            "outputs": [OutputSpec(name="y", layer=layer.name).model_dump()]}  # type: ignore[attr-defined]


HUGE = [
    UpSamplingLayer.model_construct(name="up", rank=2, size=(2**40, 1), kind="upsampling",
                                    interpolation="nearest"),
    ZeroPaddingLayer.model_construct(name="pad", rank=2, padding=((2**31, 0), (2**31, 0)),
                                     kind="zero_padding"),
    ReshapeLayer.model_construct(name="r", target_shape=(2**40,), kind="reshape",
                                 input_order="channels_first", output_order="channels_first"),
]


@pytest.mark.parametrize("layer", HUGE, ids=lambda layer: layer.kind)
def test_refused_at_validation(layer: object) -> None:
    with pytest.raises(SpecValidationError, match="would output at least"):
        spec_from_data(_spec(layer), file="m.safetensors")


def test_conv_transpose_stride_is_bounded() -> None:
    w = np.zeros((3, 2, 1, 1), "f4")
    from weightio.format.archive import tensor_ref

    layer = ConvTransposeLayer(name="ct", rank=2, in_channels=3, out_channels=2, kernel_size=(1, 1),
                               strides=(2**20, 2**20), dilation=(1, 1), cropping=((0, 0), (0, 0)),
                               use_bias=False, weight=tensor_ref("ct.weight", w))
    with pytest.raises(SpecValidationError, match="would output at least"):
        spec_from_data(_spec(layer), file="m.safetensors")


def test_free_dimensions_are_checked_by_run_before_it_allocates() -> None:
    layer = UpSamplingLayer(name="up", rank=2, size=(2**15, 2**15))
    spec = ModelSpec(name="m", provenance=PROV, inputs=[InputSpec(name="x", shape=(3, None, None))],
                     layers=[layer], outputs=[OutputSpec(name="y", layer="up")])
    archive = Archive(spec, {})
    with pytest.raises(ResourceLimitError, match="would output at least"):
        run(archive, np.zeros((2, 3, 8, 8), "f4"))
