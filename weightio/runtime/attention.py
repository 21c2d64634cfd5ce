"""Numpy reference of multi-head self-attention."""

from __future__ import annotations

from typing import Any

import numpy as np

from weightio.runtime.base import RUNTIME
from weightio.runtime.norm import Params


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@RUNTIME.register("multi_head_attention")
def _attention(layer: Any, params: Params, xs: list[np.ndarray]) -> np.ndarray:
    x = xs[0]
    n, t, e = x.shape
    heads, d = layer.num_heads, layer.embed_dim // layer.num_heads
    if layer.separate:
        parts = [x @ params[f"{p}_proj_weight"].T + params.get(f"{p}_proj_bias", 0.0) for p in "qkv"]
    else:
        qkv = x @ params["in_proj_weight"].T + params.get("in_proj_bias", 0.0)
        parts = np.split(qkv, 3, axis=-1)
    q, k, v = (part.reshape(n, t, heads, d).transpose(0, 2, 1, 3) for part in parts)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
    if layer.key_padding_mask:  # (N, T): key j of sample n attended iff mask[n, j] != 0
        scores = np.where(np.asarray(xs[1])[:, None, None, :] != 0, scores, -np.inf)
    weights = _softmax(scores)
    context = (weights @ v).transpose(0, 2, 1, 3).reshape(n, t, e)
    return context @ params["out_proj_weight"].T + params.get("out_proj_bias", 0.0)
