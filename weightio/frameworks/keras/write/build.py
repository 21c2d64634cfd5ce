"""The live back end: ``Archive`` -> ``keras.Model``, Sequential for a chain, Functional otherwise.

The only module of the Keras writer that imports Keras. It hands the assembled model config
(``assemble.plan_keras_model``) to ``keras.saving.deserialize_keras_object`` and sets each
layer's weights from the same plan, so it builds exactly what the file back end writes.
"""

from __future__ import annotations

from typing import Any

from weightio.errors import WeightsOnlyArchiveError
from weightio.format.archive import Archive
from weightio.frameworks.keras.write.assemble import plan_keras_model
from weightio.frameworks.keras.write.base import KerasSettings
from weightio.optional import require


def live_settings(keras: Any) -> KerasSettings:
    """The running Keras's global settings that some layers compute with."""
    return KerasSettings(
        epsilon=float(keras.config.epsilon()), image_data_format=keras.backend.image_data_format()
    )


def to_keras(archive: Archive) -> Any:
    """Build a ``keras.Model`` computing what ``archive`` describes, with its weights set.

    A chain becomes ``keras.Sequential``; any other graph a Functional model.

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
    return model
