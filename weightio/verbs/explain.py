"""``weightio.explain``: one forward pass of any source written out layer by layer."""

from __future__ import annotations

from typing import Any

from weightio.analysis.explain import Explanation, explain_archive
from weightio.format.archive import Archive
from weightio.runtime.base import InputLike
from weightio.runtime.native_layout import canonical_inputs
from weightio.verbs.read import read


def explain(
    source: Any, x: InputLike, *, sample: int = 0, layout: str = "canonical"
) -> Explanation:
    """Write out the forward pass of one input, layer by layer.

    Args:
        source: An ``Archive`` or anything ``weightio.read`` accepts (it must have an
            architecture: weights-only archives cannot be run).
        x: The input: one sample without the batch axis, or a batch (see ``sample``); a list or a
            dict by input name for several inputs.
        sample: Which sample of a batch to explain.
        layout: How feature maps in ``x`` are laid out: ``"canonical"`` (channels-first),
            ``"source"`` (the source framework's: channels-last for a Keras model),
            ``"channels_last"`` or ``"channels_first"``. The steps show canonical values.

    Returns:
        An ``Explanation``; ``str()`` of it is the text, ``.outputs`` / ``.output_arrays()`` the
        model's output, equal to ``weightio.run`` on that sample.
    """
    archive = source if isinstance(source, Archive) else read(source)
    return explain_archive(archive, canonical_inputs(archive.spec, x, layout), sample=sample)
