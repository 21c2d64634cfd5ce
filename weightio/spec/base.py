"""What every layer kind shares: the base model and the shape checks of parameters."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from weightio.spec.tensors import SpecModel, TensorRef

#: A name: no backslash, no leading space; ``/`` only between non-empty parts (a layer of a
#: nested model is ``<model>/<layer>``, Keras's own notation, as it forbids ``/`` in names).
NAME_PATTERN = r"^[^\s/\\][^/\\]*(/[^\s/\\][^/\\]*)*$"

#: How a kind treats feature maps (spatial tensors, canonical channels-first ``[N, C, *S]``).
#: ``weightio.layouts.flow`` derives every tensor's form from it, the writers place axes by it,
#: and docs/conventions.md explains each:
#:
#: - ``plain``: reads and writes plain tensors (features last), e.g. dense, recurrent;
#: - ``elementwise``: the same numbers in either layout; the output keeps the input's form;
#: - ``per_channel``: per index of a canonical ``axis`` (1 = channels); keeps the input's form;
#: - ``spatial``: reads a feature map and writes one (convolution, pooling, padding);
#: - ``spatial_reduce``: reads a feature map, writes a vector (or a map when ``keepdims``);
#: - ``merge``: elementwise over same-shape inputs: a feature map when all inputs are;
#: - ``join``: joins inputs on a canonical axis: a feature map when all inputs are;
#: - ``flatten``, ``reshape``, ``permute``: change the form; each kind says how.
LayoutTrait = Literal[
    "plain", "elementwise", "per_channel", "spatial", "spatial_reduce", "merge", "join",
    "flatten", "reshape", "permute",
]

#: The two forms a tensor can take (``weightio.layouts.flow``): a feature map (canonical
#: channels-first, held channels-last by Keras) or plain data, held alike by every framework.
CHANNELS = "channels"
PLAIN = "plain"

#: A tensor's shape without the batch axis; ``None`` marks a dimension the spec leaves free.
Shape = tuple[int | None, ...]

#: What a parameter is to training: learned, or state kept beside the weights (running
#: statistics, a Normalization's mean): Keras's non-trainable weights, torch's buffers.
ParameterRole = Literal["trainable", "buffer"]


class LayerBase(SpecModel):
    """Fields every layer has.

    ``inputs`` names the layers or model inputs this layer reads. ``None`` means "the previous
    layer's output" (or the first model input, for the first layer): a chain needs no wiring.
    """

    kind: str
    name: str = Field(min_length=1, max_length=512, pattern=NAME_PATTERN)
    inputs: list[str] | None = Field(
        default=None, description="Names of the layers or model inputs feeding this layer."
    )
    source_class: str | None = Field(
        default=None, description="The source framework's class or op, e.g. 'keras.layers.Dense'."
    )

    #: Names of the fields holding parameters, in canonical order.
    tensor_fields: ClassVar[tuple[str, ...]] = ()
    #: Parameters that are state rather than learned (see ``ParameterRole``).
    buffers: ClassVar[frozenset[str]] = frozenset()
    #: How the kind treats feature maps (see ``LayoutTrait``).
    layout: ClassVar[LayoutTrait] = "plain"
    #: Whether the kind reads several inputs (merges, concatenation).
    multi_input: ClassVar[bool] = False

    def tensor_refs(self) -> dict[str, TensorRef]:
        """Return this layer's parameters by canonical name, in canonical order."""
        refs = {}
        for field in self.tensor_fields:
            ref = getattr(self, field)
            if ref is not None:
                refs[field] = ref
        return refs

    def output_form(self, input_forms: list[str]) -> str | None:
        """The form of this layer's output (``CHANNELS`` or ``PLAIN``) from its inputs' forms.

        ``None`` means the consumers decide (a permute). Kinds whose rule depends on their
        hyper-parameters override this; the rest follow their ``layout`` trait.
        """
        trait = self.layout
        if trait == "spatial":
            return CHANNELS
        if trait in ("elementwise", "per_channel"):
            return input_forms[0] if input_forms else PLAIN
        if trait in ("merge", "join"):
            all_maps = bool(input_forms) and all(form == CHANNELS for form in input_forms)
            return CHANNELS if all_maps else PLAIN
        return PLAIN

    def output_rank(self, input_ranks: list[int | None]) -> int | None:
        """The rank (batch included) of the output, where the spec alone fixes it."""
        if self.layout in ("elementwise", "per_channel", "merge", "join") and input_ranks:
            return input_ranks[0]
        return None

    def output_shape(self, input_shapes: list[Shape]) -> Shape | None:
        """The output's shape without the batch axis, from the inputs' (canonical layout).

        ``None`` where the spec alone cannot tell (a free dimension stays ``None`` inside a
        shape). ``ModelSpec`` uses it to refuse hyper-parameters that imply huge outputs (an
        upsampling factor of 2**40) before anything runs; kinds whose output keeps the input's
        shape follow their ``layout`` trait, the rest override this.
        """
        if self.layout in ("elementwise", "per_channel", "merge") and input_shapes:
            return input_shapes[0]
        return None

    def parameter_role(self, param: str) -> ParameterRole:
        """Whether ``param`` is learned or state kept beside the weights."""
        return "buffer" if param in self.buffers else "trainable"

    def formula(self) -> str:
        """What the layer computes from its input ``x``, in the spec's own terms.

        Feature maps are channels-first ``[C, *spatial]`` and axes count the batch axis.
        Formulas name the operation, not every edge case: hyper-parameters and
        docs/conventions.md spell out padding, dilation and gate order.
        """
        params = ", ".join(self.tensor_refs())
        return f"{self.kind}(x{', ' + params if params else ''})"

    def detail(self) -> str:
        """The hyper-parameters a reader checks first, on one line (``inspect``)."""
        return ""


def check_param_shape(ref: TensorRef, want: tuple[int, ...], *, what: str, layout: str = "") -> None:
    """The one shape check of a parameter against what its layer's hyper-parameters imply.

    ``layout`` names the axes (``"[units, in_features]"``) so the message says which one is off.
    """
    if tuple(ref.shape) != want:
        expected = f"{layout} = {list(want)}" if layout else f"{list(want)}"
        raise ValueError(f"{what} shape {list(ref.shape)} disagrees with {expected}")


def check_bias(
    bias: TensorRef | None, use_bias: bool, size: int, *, weight: TensorRef, what: str
) -> None:
    """The one bias check of every layer kind: present iff ``use_bias``, ``[size]``, weight dtype."""
    if use_bias != (bias is not None):
        raise ValueError(f"use_bias={use_bias} but bias is {'absent' if bias is None else 'present'}")
    if bias is None:
        return
    check_param_shape(bias, (size,), what=f"{what} bias")
    if bias.dtype != weight.dtype:
        raise ValueError(f"{what} bias dtype {bias.dtype} differs from weight dtype {weight.dtype}")


def window_size(size: int | None, kernel: int, stride: int, dilation: int, padding: object) -> int | None:
    """Positions along one axis after a strided, dilated window: ``"valid"``, ``"same"``
    (``ceil(size / stride)``) or an explicit ``(before, after)`` pair; None for a free axis.
    """
    if size is None:
        return None
    if padding == "same":
        return -(-size // stride)
    before, after = (0, 0) if padding == "valid" else padding  # type: ignore[misc]
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1
