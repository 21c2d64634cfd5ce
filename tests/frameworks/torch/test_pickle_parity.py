"""weightio's torch-free reader and ``torch.load(weights_only=True)`` never disagree.

Each file here is hand-assembled (``tests/hostile/pickles.py``) to make the two readers differ:
state set through BUILD, a negated view, a storage declared with two dtypes, opcodes or call
signatures PyTorch's weights-only loader does not run, a legacy file that is also a zip, records
torch would not find. For every one, weightio must either refuse it with a typed error, or read
exactly what torch reads (keys and bits). Valid files of every layout read the same in both.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hostile"))
from pickles import P, floats, pt_legacy, pt_zip, shared_lists, state_dict  # noqa: E402

import weightio  # noqa: E402
from weightio.errors import WeightioError  # noqa: E402

F4 = floats(1.0, -2.0, 3.5, 0.25)


def _sd_with(extra: P | None = None, *, build: bytes | None = None) -> bytes:
    p = P().ordered_dict().mark().text("w").tensor("0", 4, (4,), (1,)).setitems()
    if build is not None:
        p.raw(build)
    return p.done()


def _metadata_build(attrs: dict[str, Any]) -> bytes:
    b = P()
    b.b = bytearray()
    b.empty_dict().mark()
    for name, value in attrs.items():
        b.text(name)
        if isinstance(value, dict):
            b.ordered_dict().mark()
            for k, v in value.items():
                b.text(k).empty_dict().mark().text("version").int(v).setitems()
            b.setitems()
        else:
            b.glob("collections", "OrderedDict")  # an attribute holding a callable
    return bytes(b.setitems().build().b)


def _build_items_shadowed() -> bytes:
    # state {"items": OrderedDict}: an instance attribute shadowing dict.items
    return _sd_with(build=_metadata_build({"items": None}))


def _tensor_file(tmp: Path, name: str, **tensor: Any) -> Path:
    numel = tensor.pop("numel", 4)
    size = tensor.pop("size", (4,))
    stride = tensor.pop("stride", (1,))
    data = P().ordered_dict().mark().text("w").tensor("0", numel, size, stride, **tensor)
    return pt_zip(tmp / name, data.setitems().done(), {"0": F4[: 4 * numel] if numel <= 4 else bytes(4 * numel)})


CASES = {
    "valid_zip": lambda t: pt_zip(t / "a.pt", state_dict([("w", "0", 4)]), {"0": F4}),
    "valid_legacy": lambda t: pt_legacy(t / "a.pt", state_dict([("w", "0", 4)], pid_len=6),
                                        [("0", F4, 4)]),
    "valid_metadata_build": lambda t: pt_zip(
        t / "a.pt", _sd_with(build=_metadata_build({"_metadata": {"": 1, "fc": 2}})), {"0": F4}),
    "build_shadows_items": lambda t: pt_zip(t / "a.pt", _build_items_shadowed(), {"0": F4}),
    "neg_view": lambda t: _tensor_file(t, "a.pt", metadata={"neg": True}),
    "neg_flag_false": lambda t: _tensor_file(t, "a.pt", metadata={"neg": False}),
    "requires_grad_int_storage": lambda t: _tensor_file(t, "a.pt", storage="IntStorage",
                                                        requires_grad=True),
    "location_unknown": lambda t: _tensor_file(t, "a.pt", location="evil"),
    "zip_pid_of_six": lambda t: _tensor_file(t, "a.pt", pid_len=6),
    "two_dtypes_zip": lambda t: pt_zip(t / "a.pt", P().ordered_dict().mark()
                                       .text("a").tensor("0", 4, (4,), (1,))
                                       .text("b").tensor("0", 4, (4,), (1,), storage="IntStorage")
                                       .setitems().done(), {"0": F4}),
    "two_dtypes_legacy": lambda t: pt_legacy(t / "a.pt", P().ordered_dict().mark()
                                             .text("a").tensor("0", 4, (4,), (1,), pid_len=6)
                                             .text("b").tensor("0", 4, (4,), (1,), pid_len=6,
                                                               storage="IntStorage")
                                             .setitems().done(), [("0", F4, 4)]),
    "legacy_big_endian_flag": lambda t: pt_legacy(t / "a.pt", state_dict([("w", "0", 4)], pid_len=6),
                                                  [("0", F4, 4)], little_endian=False),
    "legacy_plus_zip": lambda t: _append_zip(pt_legacy(t / "a.pt", state_dict(
        [("w", "0", 4)], pid_len=6), [("0", F4, 4)])),
    "first_member_elsewhere": lambda t: pt_zip(t / "a.pt", state_dict([("w", "0", 4)]),
                                               {"0": F4}, first="other/readme"),
    "no_version_record": lambda t: pt_zip(t / "a.pt", state_dict([("w", "0", 4)]), {"0": F4},
                                          version=None),
    "byteorder_middle": lambda t: pt_zip(t / "a.pt", state_dict([("w", "0", 4)]), {"0": F4},
                                         byteorder=b"middle"),
    "setitem_on_list": lambda t: pt_zip(t / "a.pt", P().ordered_dict().mark().text("w")
                                        .empty_list().tensor("0", 4, (4,), (1,)).append()
                                        .int(0).tensor("0", 4, (4,), (1,)).setitem()
                                        .setitems().done(), {"0": F4}),
    "protocol_4_frame": lambda t: pt_zip(t / "a.pt", b"\x80\x04\x95" + (8).to_bytes(8, "little")
                                         + b"}\x94.", {}),
    "rebuild_without_hooks": lambda t: pt_zip(t / "a.pt", P().ordered_dict().mark().text("w")
                                              .glob("torch._utils", "_rebuild_tensor_v2").mark()
                                              .mark().text("storage").glob("torch", "FloatStorage")
                                              .text("0").text("cpu").int(4).tuple().persid()
                                              .int(0).ints((4,)).ints((1,)).tuple().reduce()
                                              .setitems().done(), {"0": F4}),
    "stride_zero_small": lambda t: _tensor_file(t, "a.pt", numel=1, size=(4, 4), stride=(0, 0)),
    "shared_tensor_two_keys": lambda t: pt_zip(t / "a.pt", P().ordered_dict().mark()
                                               .text("a").tensor("0", 4, (4,), (1,)).put(9)
                                               .text("b").get(9).setitems().done(), {"0": F4}),
}


def _append_zip(path: Path) -> Path:
    import io
    import zipfile

    extra = io.BytesIO()
    with zipfile.ZipFile(extra, "w") as zf:
        zf.writestr("archive/data.pkl", state_dict([]))
        zf.writestr("archive/version", b"3\n")
    path.write_bytes(path.read_bytes() + extra.getvalue())
    return path


#: What weightio must do with each case: read it (then equal to torch), or refuse it.
REFUSED = {
    "build_shadows_items": "UnsafeFormatError",
    "neg_view": "UnsupportedTensorError",
    "neg_flag_false": "UnsupportedTensorError",  # torch sets the flag on the key, not the value
    "requires_grad_int_storage": "MalformedFileError",
    "location_unknown": "MalformedFileError",
    "zip_pid_of_six": "MalformedFileError",
    "two_dtypes_zip": "MalformedFileError",
    "two_dtypes_legacy": "MalformedFileError",
    "legacy_big_endian_flag": "MalformedFileError",
    "legacy_plus_zip": "MalformedFileError",
    "first_member_elsewhere": "MalformedFileError",
    "no_version_record": "MalformedFileError",
    "byteorder_middle": "MalformedFileError",
    "setitem_on_list": "MalformedFileError",
    "protocol_4_frame": "MalformedFileError",
    "rebuild_without_hooks": "MalformedFileError",
}


def _torch_view(path: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, weights_only=True, map_location="cpu")


@pytest.mark.parametrize("case", sorted(CASES))
def test_weightio_refuses_or_reads_what_torch_reads(case: str, tmp_path: Path) -> None:
    path = CASES[case](tmp_path)
    try:
        archive = weightio.read(path)
    except WeightioError as exc:
        assert case in REFUSED, f"refused a file it should read: {exc}"
        assert type(exc).__name__ == REFUSED[case], exc
        assert path.name in str(exc)
        return
    assert case not in REFUSED, f"read a file it must refuse ({REFUSED.get(case)})"
    ours = {k: np.asarray(v) for k, v in archive.tensors.items()}
    theirs = _torch_view(path)
    assert list(theirs) == list(ours)
    for key, tensor in theirs.items():
        expected = tensor.detach().resolve_neg().resolve_conj().contiguous().numpy()
        assert ours[key].dtype == expected.dtype
        assert ours[key].tobytes() == expected.tobytes(), key


def test_the_differences_are_real(tmp_path: Path) -> None:
    """The refusals are not caution for its own sake: torch reads these files, differently."""
    neg = _torch_view(CASES["neg_view"](tmp_path))["w"]
    assert neg.is_neg() and float(neg[1]) == 2.0  # stored -2.0, torch reads +2.0
    (tmp_path / "b").mkdir()
    shadowed = _torch_view(CASES["build_shadows_items"](tmp_path / "b"))
    assert "items" in vars(shadowed)  # torch keeps the attribute on the OrderedDict
    (tmp_path / "c").mkdir()
    mixed = _torch_view(CASES["two_dtypes_zip"](tmp_path / "c"))
    assert mixed["b"].dtype == torch.float32  # declared as IntStorage, read as the first: float


def test_shared_lists_and_cycles_answer_fast(tmp_path: Path) -> None:
    """40 levels of one reused list (2**40 paths), and a list inside itself: milliseconds."""
    import pickle
    import time

    from weightio.errors import MalformedFileError

    dag = pt_legacy(tmp_path / "dag.pt", pickle.dumps({"w": shared_lists(40)}, protocol=2), [])
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    cycle = pt_legacy(tmp_path / "cycle.pt", pickle.dumps({"w": cyclic}, protocol=2), [])
    assert dag.stat().st_size < 1024 and cycle.stat().st_size < 1024
    for path, match in ((dag, "not all tensors"), (cycle, "contains itself")):
        start = time.perf_counter()
        with pytest.raises(MalformedFileError, match=match):
            weightio.read(path)
        assert time.perf_counter() - start < 0.5


def test_a_stride_zero_view_of_4_bytes_claiming_64_gib_is_refused_by_both_readers(
        tmp_path: Path) -> None:
    """Four stored bytes broadcast (stride 0) to 64 GiB: refused before anything is allocated,
    by the torch-free reader and by the torch.load one."""
    import time

    from weightio.errors import ResourceLimitError
    from weightio.frameworks.torch.files.state_dict import read_torch_file

    path = _tensor_file(tmp_path, "a.pt", numel=1, size=(1 << 17, 1 << 17), stride=(0, 0))
    for reader in (weightio.read, read_torch_file):
        start = time.perf_counter()
        with pytest.raises(ResourceLimitError, match="64|stride"):
            reader(path)
        assert time.perf_counter() - start < 5
