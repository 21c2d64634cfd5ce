"""The PyTorch adapter: ``nn.Module`` / state dicts / ``.pt`` files <-> weightio archives.

Importing this module does not import torch; each function imports it when called. The work is
split by direction: ``torch_read`` (tracing live modules, with one reader per op in
``torch_read_ops``), ``torch_write`` (building modules, running them), ``torch_load`` (copying
weights into an existing module) and ``torch_files`` (state dicts and files).
"""

from __future__ import annotations

from weightio.adapters.torch_files import (
    read_state_dict,
    read_torch_file,
    save_archive_state_dict,
    save_pt2,
    save_state_dict,
)
from weightio.adapters.torch_load import load_into_torch
from weightio.adapters.torch_read import read_torch_module
from weightio.adapters.torch_read_ops import TORCH_READ
from weightio.adapters.torch_write import TORCH_WRITE, run_torch, to_torch

__all__ = [
    "TORCH_READ",
    "TORCH_WRITE",
    "load_into_torch",
    "read_state_dict",
    "read_torch_file",
    "read_torch_module",
    "run_torch",
    "save_archive_state_dict",
    "save_pt2",
    "save_state_dict",
    "to_torch",
]
