"""A spec read from PyTorch, as ``state_dict()`` lists it: ``inspect --native``.

weightio's canonical names and shapes are PyTorch's, so every tensor is its state-dict entry
as it is. The one entry weightio does not keep is ``num_batches_tracked``, the batch-norm step
counter (an int64 scalar that only training reads): it is listed where PyTorch has it, as a
buffer, so the view is the whole state dict. Nothing here imports torch.
"""

from __future__ import annotations

from weightio.format.archive import Archive
from weightio.frameworks.common import NativeTensor

#: The batch-norm entry weightio's reader leaves out (no weight, never read by inference).
COUNTER = "num_batches_tracked"


def torch_native_tensors(archive: Archive) -> dict[str, list[NativeTensor]]:
    """Every layer with tensors, as its module's ``state_dict()`` entries."""
    out: dict[str, list[NativeTensor]] = {}
    for layer in archive.spec.layers:
        refs = layer.tensor_refs()
        if not refs:
            continue
        rows = [NativeTensor(ref.key.rpartition(".")[2], ref.key, tuple(ref.shape), ref.dtype,
                             layer.parameter_role(param), layer.source_class)
                for param, ref in refs.items()]
        stats = refs.get("running_mean")
        if layer.kind == "batch_norm" and stats is not None and stats.key.endswith(".running_mean"):
            prefix = stats.key[: -len(".running_mean")]
            rows.append(NativeTensor(COUNTER, f"{prefix}.{COUNTER}", (), "I64", "buffer",
                                     layer.source_class))
        out[layer.name] = rows
    return out
