"""``weightio verify`` of a model file that is not an archive says so (one line, exit 2)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from weightio.errors import UnsupportedSourceError
from weightio.verbs.write import verify


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "weightio", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("magic", [b"PK\x03\x04", b"\x80\x02", b"\x89HDF\r\n\x1a\n"])
def test_verify_refuses_other_formats_by_name(tmp_path: Path, magic: bytes) -> None:
    path = tmp_path / "model.pt2"
    if magic.startswith(b"PK"):
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("model/version", "1")
    else:
        path.write_bytes(magic + b"\0" * 64)
    with pytest.raises(UnsupportedSourceError, match="not a weightio archive"):
        verify(path)
    result = _cli("verify", str(path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "model.pt2" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_safetensors_header_length_starting_0x80_is_still_an_archive(tmp_path: Path) -> None:
    """A header of 0x..80 bytes starts with the byte a pickle starts with: still read as an
    archive (the brace after the length decides), so verify reaches the archive's own checks.
    """
    header = {"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    text = json.dumps(header).encode()
    text += b" " * ((0x80 - len(text)) % 0x100)  # pad the header to a length whose low byte is 0x80
    assert len(text) & 0xFF == 0x80
    path = tmp_path / "raw.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + np.zeros(2, "float32").tobytes())
    with pytest.raises(Exception) as caught:  # no weightio spec in it: the archive's own refusal
        verify(path)
    assert not isinstance(caught.value, UnsupportedSourceError)
