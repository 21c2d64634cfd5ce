"""A safetensors header is parsed within about 10x its size, or refused before parsing.

JSON of ``[[],[],…]`` costs 72 bytes of Python objects for every 3 bytes of header: a 100 MiB
header would take gigabytes. ``format.safetensors.parse_cost`` counts the structural bytes first
(no allocation) and refuses a header whose parse would exceed ``MAX_HEADER_PARSE_FACTOR`` times
its size; a realistic header (one entry per tensor) parses within that bound.
"""

from __future__ import annotations

import json
import struct
import time
import tracemalloc
from pathlib import Path

import pytest

from weightio.errors import ResourceLimitError
from weightio.format.safetensors import MAX_HEADER_PARSE_FACTOR, read_header


def _file(path: Path, header: bytes, data: bytes = b"") -> Path:
    header += b" " * (-(8 + len(header)) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


@pytest.mark.parametrize("body", [b"[]", b"{}"])
def test_a_100_mib_header_of_tiny_values_is_refused_before_parsing(tmp_path: Path,
                                                                 body: bytes) -> None:
    count = ((100 << 20) - 4096) // (len(body) + 1)  # just under the 100 MiB cap
    header = (b'{"w":{"dtype":"U8","shape":[],"data_offsets":[0,0]},"x":['
              + (body + b",") * (count - 1) + body + b"]}")
    path = _file(tmp_path / "model.safetensors", header)
    del header
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with open(path, "rb") as handle, pytest.raises(ResourceLimitError, match="to parse"):
            read_header(handle, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 10
    assert peak < 2.5 * (100 << 20)  # the header bytes, and no objects made from them


def test_a_large_realistic_header_parses_within_the_bound(tmp_path: Path) -> None:
    entries, data = {}, 0
    for i in range(60_000):
        entries[f"model.layers.{i}.mlp.down_proj.weight"] = {
            "dtype": "F32", "shape": [1], "data_offsets": [data, data + 4]}
        data += 4
    header = json.dumps(entries, separators=(",", ":")).encode()
    path = _file(tmp_path / "model.safetensors", header, bytes(data))
    tracemalloc.start()
    try:
        with open(path, "rb") as handle:
            parsed = read_header(handle, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(parsed.entries) == 60_000
    assert peak < MAX_HEADER_PARSE_FACTOR * len(header) + (64 << 20), peak / len(header)
