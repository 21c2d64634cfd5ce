"""The live back end: ``Archive`` -> ``keras.Model``, Sequential for a chain, Functional otherwise.

The only module of the Keras writer that imports Keras. It hands the assembled model config
(``assemble.plan_keras_model``) to ``keras.saving.deserialize_keras_object`` and sets each
layer's weights from the same plan, so it builds exactly what the file back end writes.
"""

from __future__ import annotations

from typing import Any

from weightio.errors import WeightsOnlyArchiveError
from weightio.format.archive import Archive
from weightio.frameworks.common import recorded_model_classes
from weightio.frameworks.keras.write.assemble import plan_keras_model
from weightio.frameworks.keras.write.base import KerasSettings, NameAllocator
from weightio.frameworks.keras.write.bridge import prepare
from weightio.frameworks.keras.write.nesting import nest_model
from weightio.optional import require


def live_settings(keras: Any) -> KerasSettings:
    """The running Keras's global settings that some layers compute with."""
    return KerasSettings(
        epsilon=float(keras.config.epsilon()), image_data_format=keras.backend.image_data_format()
    )


def _spec_paths(archive: Archive) -> dict[str, tuple[str, ...]]:
    """Each Keras layer name the plan gives a spec layer -> that spec name split on ``/``
    (allocated exactly as ``plan_keras_model`` does).
    """
    spec = prepare(archive).spec
    names = NameAllocator()
    for inp in spec.inputs:
        names.reserve(inp.name)
    for layer in spec.layers:
        names.reserve(layer.name)
    return {names.by_spec[layer.name]: tuple(layer.name.split("/")) for layer in spec.layers}


def to_keras(archive: Archive, *, nested: bool | None = None) -> Any:
    """Build a ``keras.Model`` computing what ``archive`` describes, with its weights set.

    A chain becomes ``keras.Sequential``; any other graph a Functional model. Layers named
    ``outer/inner`` (a nested model the reader inlined) become a nested model ``outer`` again
    (a ``Sequential`` where the reader recorded one and it is still a chain, else Functional)
    unless ``nested=False``; ``nested=True`` requires it (a group that is not
    a clean sub-graph raises ``NestingError``), the default ``None`` falls back to the flat
    model with a warning.

    Raises:
        WeightsOnlyArchiveError: the archive has no architecture.
        UnsupportedLayerError: naming the first layer with no exact Keras equivalent.
    """
    if archive.spec.weights_only:
        raise WeightsOnlyArchiveError(
            "this archive holds weights only (a bare state dict) and no architecture, so no Keras "
            "model can be built from it; build the model in Keras and use load_into instead",
            file=archive.path,
        )
    keras = require("keras", purpose="building a Keras model")
    plan = plan_keras_model(archive, live_settings(keras))
    model = keras.saving.deserialize_keras_object(plan.config, safe_mode=True)
    for layer in plan.layers:
        if layer.weights:
            model.get_layer(layer.name).set_weights(layer.weights)
    if nested is False or not any("/" in layer.name for layer in archive.spec.layers):
        return model
    return nest_model(keras, model, _spec_paths(archive), strict=bool(nested),
                      classes=recorded_model_classes(archive))
