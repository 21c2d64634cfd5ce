"""Keras files without Keras or TensorFlow: ``.keras``, legacy ``.h5`` and ``.weights.h5``.

Only ``zipfile``, ``json`` and ``h5py`` touch the file; the config and arrays go to the same
``archive_from_keras_config`` the live-model reader uses, so both ways of reading share one
mapping per layer kind and give the same archive, tensor for tensor.

How Keras 3 lays out ``model.weights.h5`` (also the ``.weights.h5`` of ``save_weights``): each
layer of a Sequential/Functional model is a group ``layers/<snake_case class>[_<n>]`` (``dense``,
``dense_1``… in ``model.layers`` order, so a Functional model's ``InputLayer`` counts and a
Sequential's does not), holding ``vars/0, vars/1…`` in ``layer.weights`` order; Keras >= 3.10
also marks ``vars`` with the layer's ``name``, which is checked when present. A nested model
nests the same way (``layers/sequential/layers/dense/vars/0``), and so do sublayers, under their
attribute names (``layers/lstm/cell/vars/0``), read in ``layer.weights`` order (``nesting``).
bfloat16 is stored as a 2-byte opaque type with ``dtype="bfloat16"``. Legacy ``.h5``:
``model_config`` JSON as a root attribute and ``model_weights/<layer>`` groups whose
``weight_names`` attribute lists each array's path (``seq/dense/kernel`` in Keras 3,
``dense/kernel:0`` in Keras 2).

Every name from the file is checked before use and treated as data; nothing is extracted to disk.
"""

from __future__ import annotations

import io
import mmap
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from weightio.errors import (
    MalformedFileError,
    ResourceLimitError,
    UnsupportedSourceError,
)
from weightio.format.archive import Archive
from weightio.format.graph import GraphWalk
from weightio.format.paths import check_regular, open_regular
from weightio.format.zip import ZIP_ERRORS, inflate_member, member_offset, read_member, zip_errors
from weightio.frameworks.keras.files.h5 import (
    attribute,
    child,
    hdf5_errors,
    object_address,
    open_mapping,
    read_dataset,
    walk,
)
from weightio.frameworks.keras.files.h5_heap import check_global_heaps
from weightio.frameworks.keras.nesting import weight_order
from weightio.frameworks.keras.read.nested import NEST, is_model
from weightio.spec.json_limits import parse_json

#: Largest config.json / model_config weightio parses.
MAX_CONFIG_BYTES = 64 * 1024 * 1024
_KERAS_MEMBERS = ("metadata.json", "config.json", "model.weights.h5")
_MODELS = ("Sequential", "Functional", "Model")


def snake_case(name: str) -> str:
    """Keras's ``naming.to_snake_case``, which names the groups of ``model.weights.h5``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _text(value: Any) -> str:
    """A name or string attribute from the file; it must be UTF-8.

    h5py hands back undecodable bytes of a variable-length string as lone surrogates
    (``surrogateescape``); such a string is as invalid as the bytes and would only fail later,
    when the spec is written.
    """
    if not isinstance(value, bytes):
        text = str(value)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedFileError(f"the string {text[:60]!r} is not UTF-8") from None
        return text
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedFileError(f"the name {value[:60]!r} is not UTF-8") from None


def parse_config(raw: bytes | str, *, file: Path, what: str) -> dict[str, Any]:
    """Parse a model config as plain JSON data, within size and depth limits."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise ResourceLimitError(
            f"{what} is {len(raw)} bytes, over the {MAX_CONFIG_BYTES}-byte limit", file=file
        )
    data = parse_json(raw, file=file, what=what, nonfinite=True)
    if not isinstance(data, dict):
        raise MalformedFileError(f"{what} is not a JSON object", file=file)
    from weightio.frameworks.keras.files.config_checks import check_config

    check_config(data, file=file, what=what)
    return data


def _layer_configs(model_config: Mapping[str, Any], file: Path) -> list[dict[str, Any]]:
    config = model_config.get("config")
    layers = config.get("layers") if isinstance(config, dict) else None
    if not isinstance(layers, list) or not all(
        isinstance(c, dict) and isinstance(c.get("config"), dict) for c in layers
    ):
        raise MalformedFileError("the model config has no list of serialized layers", file=file)
    return layers


def _name_of(cfg: Mapping[str, Any]) -> str:
    return str(cfg["config"].get("name") or cfg.get("name") or "")


def _keys(group: Any, file: Path, layer: str | None) -> list[str]:
    """A group's member names; h5py hands back a name that is not UTF-8 as bytes."""
    keys = list(group.keys())
    for key in keys:
        if not isinstance(key, str):
            raise MalformedFileError(f"{group.name} holds a member whose name {key!r} is not "
                                     "UTF-8", file=file, layer=layer)
    return keys


class _H5Reader:
    """Reads arrays from one open HDF5 file, mapped when possible.

    Every group a layer's weights are looked for in is entered through one ``GraphWalk``, keyed
    by the group's object-header address: hard links can make a group appear under several
    names (a DAG: 40 levels of two links to the next level are 2**40 paths) or inside itself
    (a cycle). Keras writes each layer's group once, so a group reached a second time is refused,
    as is a cycle, and the walk is linear in the file.
    """

    def __init__(self, file: Path, mapping: Any = None, base: int = 0) -> None:
        self.file, self.mapping, self.base = file, mapping, base
        self.walk = GraphWalk(file=file, what="HDF5 group", shared="refuse")

    def read(self, dataset: Any, layer: str | None, *, bf16: bool = False) -> np.ndarray:
        return read_dataset(
            dataset, file=self.file, layer=layer, mapping=self.mapping, base=self.base, bf16=bf16
        )

    # -- Keras 3 layout --------------------------------------------------------------------
    def own_vars(self, group: Any, layer: str) -> list[np.ndarray]:
        variables = child(group, "vars", file=self.file, layer=layer)
        if variables is None:
            return []
        keys = _keys(variables, self.file, layer)
        if sorted(keys, key=lambda k: (len(k), k)) != [str(i) for i in range(len(keys))]:
            raise MalformedFileError(
                f"{variables.name} holds {keys[:10]}, expected 0..{len(keys) - 1}",
                file=self.file,
                layer=layer,
            )
        return [
            self.read(child(variables, str(i), file=self.file, layer=layer), layer)
            for i in range(len(keys))
        ]

    def container(
        self, group: Any, model_config: Mapping[str, Any], prefix: str = ""
    ) -> dict[str, list[np.ndarray]]:
        """Each layer's arrays, by layer name, for a Sequential/Functional group; a nested
        model's layers also as ``<model>/<layer>`` (``read.nested`` inlines them by those names),
        the model itself holding all of theirs in ``layer.weights`` order.
        """
        sequential = model_config.get("class_name") == "Sequential"
        configs = [
            c for c in _layer_configs(model_config, self.file)
            if not (sequential and c.get("class_name") == "InputLayer")
        ]
        layers = child(group, "layers", file=self.file)
        used: dict[str, int] = {}
        result: dict[str, list[np.ndarray]] = {}
        for cfg in configs:
            name = _name_of(cfg)
            base = snake_case(str(cfg.get("class_name")))
            if base in used:
                used[base] += 1
                key = f"{base}_{used[base]}"
            else:
                used[base] = 0
                key = base
            node = child(layers, key, file=self.file, layer=name) if layers is not None else None
            if node is None:
                result[prefix + name] = []
                continue
            variables = child(node, "vars", file=self.file, layer=name)
            marked = (attribute(variables, "name", file=self.file, layer=name)
                      if variables is not None else None)
            if marked is not None and _text(marked) != name:
                raise MalformedFileError(
                    f"weights group {node.name} belongs to layer {_text(marked)!r}, the config "
                    f"puts layer {name!r} there",
                    file=self.file,
                    layer=name,
                )
            if is_model(cfg):
                inner = self.walk.visit(
                    object_address(node, file=self.file), str(node.name),
                    lambda node=node, cfg=cfg, name=name: self.container(
                        node, cfg, f"{prefix}{name}{NEST}"),
                )
                result.update(inner)
                result[prefix + name] = [
                    array for sub in _layer_configs(cfg, self.file)
                    for array in inner.get(f"{prefix}{name}{NEST}{_name_of(sub)}", [])
                ]
                continue
            result[prefix + name] = self.layer(node, cfg, name)
        return result

    def layer(self, node: Any, cfg: Mapping[str, Any], name: str) -> list[np.ndarray]:
        """A layer's arrays in ``layer.weights`` order: its own, then its sublayers'."""
        return self.walk.visit(object_address(node, file=self.file), str(node.name),
                               lambda: self._layer(node, cfg, name))

    def _layer(self, node: Any, cfg: Mapping[str, Any], name: str) -> list[np.ndarray]:
        arrays = self.own_vars(node, name)
        nested = [k for k in _keys(node, self.file, name) if k != "vars"]  # sublayers' groups
        for key in weight_order(str(cfg.get("class_name")), nested):
            sub = child(node, key, file=self.file, layer=name)
            if hasattr(sub, "keys"):
                arrays.extend(self.layer(sub, {"config": {}}, name))
        return arrays

    # -- legacy layout ---------------------------------------------------------------------
    def legacy(self, weights: Any, configs: dict[str, dict[str, Any]]) -> dict[str, list[np.ndarray]]:
        from weightio.frameworks.keras.read.graph import policy_name

        names = attribute(weights, "layer_names", file=self.file)
        if names is None:
            raise MalformedFileError("model_weights has no layer_names attribute", file=self.file)
        result: dict[str, list[np.ndarray]] = {}
        for raw in np.asarray(names).reshape(-1).tolist():
            name = _text(raw)
            group = child(weights, name, file=self.file, layer=name)
            if group is None:
                raise MalformedFileError("layer named in layer_names is missing", file=self.file,
                                         layer=name)
            cfg = configs.get(name, {})
            listed = attribute(group, "weight_names", file=self.file, layer=name)
            weight_names = [_text(w) for w in
                            np.asarray([] if listed is None else listed).reshape(-1).tolist()]
            if is_model(cfg):
                result.update(self._legacy_nested(group, cfg, name, weight_names))
                continue
            bf16 = policy_name((cfg.get("config") or {}).get("dtype"))[1] == "bfloat16"
            result[name] = [
                self.read(walk(group, w, file=self.file, layer=name), name, bf16=bf16)
                for w in weight_names
            ]
        return result

    def _legacy_nested(
        self, group: Any, cfg: Mapping[str, Any], name: str, weight_names: list[str]
    ) -> dict[str, list[np.ndarray]]:
        """A nested model's arrays, per inner layer (``<model>/<layer>``) and all together.

        The group lists the nested model's variables by path, trainable ones first (so not in
        layer order), each layer's in its own ``layer.weights`` order. A path names its layer
        (``inner/d1/kernel``; ``dense/kernel`` for a model built on its own; ``d1/kernel:0`` in
        Keras 2) but not always the models around it: a variable belongs to the one inner layer
        whose name is a part of its path before the last, or, where several are, whose path
        inside the nested model its path holds; anything else is refused by name.
        """
        from weightio.frameworks.keras.read.graph import policy_name

        leaves = _leaf_layers(cfg, f"{name}{NEST}", self.file)
        result: dict[str, list[np.ndarray]] = {path: [] for path in leaves}
        result[name] = []
        for w in weight_names:
            parts = w.split("/")[:-1]
            owners = [p for p, leaf in leaves.items() if _name_of(leaf) in parts]
            if len(owners) > 1:
                inside = "/" + "/".join(parts) + "/"
                owners = [p for p in owners if f"/{p[len(name) + 1:]}/" in inside]
            if len(owners) != 1:
                raise UnsupportedSourceError(
                    f"weight {w!r} of the nested model does not name one of its layers "
                    f"({len(owners)} match); save the model as .keras and read that instead",
                    file=self.file, layer=name,
                )
            owner = owners[0]
            policy = policy_name((leaves[owner].get("config") or {}).get("dtype"))[1]
            array = self.read(walk(group, w, file=self.file, layer=owner), owner,
                              bf16=policy == "bfloat16")
            result[owner].append(array)
            result[name].append(array)
        return result


def _leaf_layers(model: Mapping[str, Any], prefix: str, file: Path) -> dict[str, Mapping[str, Any]]:
    """Every layer of a nested model that is not itself a model, by its full path."""
    found: dict[str, Mapping[str, Any]] = {}
    for cfg in _layer_configs(model, file):
        path = prefix + _name_of(cfg)
        if is_model(cfg):
            found.update(_leaf_layers(cfg, path + NEST, file))
        elif cfg.get("class_name") != "InputLayer":
            found[path] = cfg
    return found


class _Window(io.RawIOBase):
    """A read-only file object over ``[start, start + size)`` of an open file (a zip member)."""

    def __init__(self, handle: Any, start: int, size: int) -> None:
        self._handle, self._start, self._size, self._pos = handle, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        count = max(0, min(len(buffer), self._size - self._pos))
        if count == 0:
            return 0
        self._handle.seek(self._start + self._pos)
        read = self._handle.readinto(memoryview(buffer)[:count])
        self._pos += read
        return read


def _mapped(path: Path, build: Any, *args: Any, **kwargs: Any) -> Archive:
    """``build(*args, **kwargs)``, its refusals naming the file they came from.

    The config is the file's: a value the spec cannot hold (an empty layer name…) fails pydantic
    validation, which is reported as the file's ``SpecValidationError``.
    """
    from pydantic import ValidationError

    from weightio.errors import SpecValidationError, WeightioError

    try:
        return build(*args, **kwargs)
    except WeightioError as exc:
        raise exc.with_file(path) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise SpecValidationError(
            f"the model config does not make a valid spec: {exc.title} {where}: {first['msg']}",
            file=path,
        ) from None


def _checked_text(value: Any, path: Path) -> str:
    try:
        return _text(value)
    except MalformedFileError as exc:
        raise exc.with_file(path) from None


def _provenance(path: Path, class_name: Any, version: Any) -> Any:
    from weightio.format.provenance import provenance

    return provenance(
        "keras",
        framework_version=_checked_text(version, path) if version is not None else None,
        source_class=f"keras.{class_name}",
        source_file=path,
    )


def _check_members(zf: zipfile.ZipFile, path: Path) -> dict[str, zipfile.ZipInfo]:
    infos = zf.infolist()
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise MalformedFileError("the .keras zip holds duplicate member names", file=path)
    for name in names:
        parts = name.split("/")
        if name.startswith("/") or "\\" in name or ".." in parts or (
            name not in _KERAS_MEMBERS and not name.startswith("assets/")
        ):
            raise MalformedFileError(
                f"unexpected member {name!r} in the .keras zip (expected "
                f"{', '.join(_KERAS_MEMBERS)} and assets/); nothing was extracted",
                file=path,
            )
    found = {i.filename: i for i in infos}
    for required in ("config.json", "model.weights.h5"):
        if required not in found:
            raise MalformedFileError(f"the .keras zip has no {required}", file=path)
    return found


def _map_spool(spool: Any) -> Any:
    """A read-only map of an inflated member (None when empty); views into it stay valid after
    the file object is gone, and ``streaming`` can copy from it in the kernel.
    """
    import mmap

    size = os.fstat(spool.fileno()).st_size
    if not size:
        return None
    mapping = mmap.mmap(spool.fileno(), 0, access=mmap.ACCESS_READ)
    from weightio.format.streaming import register_file_mapping

    register_file_mapping(mapping, spool.fileno())
    return mapping


def read_keras_zip(path: Path) -> Archive:
    """Read a ``.keras`` file: ``config.json`` + ``model.weights.h5``, with h5py only."""
    return _read_keras_zip(path)[0]


def _read_keras_zip(path: Path) -> tuple[Archive, dict[str, Any]]:
    import h5py

    from weightio.frameworks.keras.read.model import archive_from_keras_config

    with open_regular(path) as handle:
        try:
            zf = zipfile.ZipFile(handle)
        except ZIP_ERRORS as exc:
            raise MalformedFileError(f"not a readable .keras zip ({exc})", file=path) from None
        members = _check_members(zf, path)
        config_info = members["config.json"]
        if config_info.file_size > MAX_CONFIG_BYTES:
            raise ResourceLimitError("config.json is too large", file=path)
        config = parse_config(read_member(zf, config_info, path), file=path, what="config.json")
        metadata: dict[str, Any] = {}
        if "metadata.json" in members and members["metadata.json"].file_size < (1 << 20):
            try:
                metadata = parse_config(read_member(zf, members["metadata.json"], path),
                                        file=path, what="metadata.json")
            except MalformedFileError:
                metadata = {}
        # before the global-heap scan: inside convert the source digest then runs beside it
        origin = _provenance(path, config.get("class_name"), metadata.get("keras_version"))
        info = members["model.weights.h5"]
        if info.compress_type == zipfile.ZIP_STORED:
            start = member_offset(handle, info, path)
            source: Any = _Window(handle, start, info.file_size)
            mapping = open_mapping(path)
            if mapping is not None:
                check_global_heaps(_Scan(mapping), file=path, start=start,
                                   end=min(len(mapping), start + info.file_size))
            reader = _H5Reader(path, mapping, start)
        else:
            if info.file_size > max(1 << 20, 200 * info.compress_size):
                raise ResourceLimitError("model.weights.h5 expands like a zip bomb", file=path)
            # inflated once into an anonymous file, then read like a stored member: seeking
            # backwards in a deflate stream restarts it, which made reading out of file order
            # quadratic (minutes for a few hundred MB)
            source = inflate_member(zf, info, path)
            mapping = _map_spool(source)
            if mapping is not None:
                check_global_heaps(_Scan(mapping), file=path)
            reader = _H5Reader(path, mapping, 0)
        try:
            with zip_errors(path, "zip member 'model.weights.h5'"), \
                    hdf5_errors(path, "model.weights.h5"), h5py.File(source, "r") as h5:
                weights = _model_weights(reader, h5, config)
        except OSError as exc:
            raise MalformedFileError(f"model.weights.h5 is not readable HDF5 ({exc})",
                                     file=path) from None
        finally:
            source.close()  # an inflated member's pages stay mapped; the file has no name
    return _mapped(path, archive_from_keras_config,
        config, weights,
        provenance=origin,
    ), config


def _model_weights(reader: _H5Reader, h5: Any, config: Mapping[str, Any]) -> dict[str, list[np.ndarray]]:
    if config.get("class_name") not in _MODELS:
        raise UnsupportedSourceError(
            f"a Keras {config.get('class_name')!r} is not a Sequential or Functional model; "
            "subclassed models have no graph to read. Rebuild it with the Functional API",
            file=reader.file,
        )
    if attribute(h5, "layer_names", file=reader.file) is not None:  # a Keras 2 weights file
        return reader.legacy(h5, {_name_of(c): c for c in _layer_configs(config, reader.file)})
    return reader.container(h5, config)


def _checked_mapping(path: Path) -> Any:
    """A map of the HDF5 file, after refusing global heaps that would hang HDF5 (``h5_heap``)."""
    mapping = open_mapping(path)
    if mapping is not None:
        check_global_heaps(_Scan(mapping), file=path)
    return mapping


class _Scan:
    """A file map for ``check_global_heaps`` whose ``find`` searches on two cores and gives the
    pages back as it goes.

    The scan for global heaps reads the whole file before HDF5 may open it, and on one core it
    cost ~0.7 s of CPU per GiB (``mmap.find`` holds the GIL), a quarter of a 1 GiB ``.keras``
    convert. Here ``find`` searches 16 MiB windows (overlapping by the needle's length, so no
    match is lost) with numpy, which releases the GIL, two windows at a time on two threads,
    and drops each window's pages once searched (``MADV_DONTNEED`` on a read-only file map only
    forgets page-table entries; through the plain map a 1 GiB ``.keras`` showed 1.1 GB of RSS
    before one tensor was read). Same results as ``mmap.find``; slicing is the map's.
    """

    _WINDOW = 16 * 1024 * 1024

    def __init__(self, mapping: mmap.mmap) -> None:
        self._mapping = mapping

    def __len__(self) -> int:
        return len(self._mapping)

    def __getitem__(self, index: Any) -> Any:
        return self._mapping[index]

    def _search(self, needle: bytes, at: int, end: int) -> int:
        """First ``needle`` starting in ``[at, at + _WINDOW)`` and ending by ``end``, or -1."""
        import contextlib

        stop = min(end, at + self._WINDOW + len(needle) - 1)
        if stop - at < len(needle):
            return -1
        # a view for this window only: no export outlives the call, so the map can be closed
        window = np.frombuffer(self._mapping, dtype=np.uint8, count=stop - at, offset=at)
        starts = len(window) - len(needle) + 1
        found = np.flatnonzero(window[:starts] == needle[0])
        for offset in range(1, len(needle)):
            found = found[window[found + offset] == needle[offset]]
        del window
        if found.size:
            return at + int(found[0])
        first = at - at % mmap.PAGESIZE
        span = stop - len(needle) + 1 - first
        if hasattr(self._mapping, "madvise") and span > 0:
            with contextlib.suppress(OSError, ValueError):
                self._mapping.madvise(mmap.MADV_DONTNEED, first, span - span % mmap.PAGESIZE or span)
        return -1

    def find(self, needle: bytes, start: int = 0, end: int | None = None) -> int:
        from concurrent.futures import ThreadPoolExecutor

        end = len(self._mapping) if end is None else min(end, len(self._mapping))
        if not needle or start >= end:
            return self._mapping.find(needle, start, end)
        starts = range(start, end, self._WINDOW)
        if len(starts) == 1:
            return self._search(needle, start, end)
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="weightio-scan") as pool:
            for pair in range(0, len(starts), 2):
                futures = [pool.submit(self._search, needle, at, end) for at in starts[pair:pair + 2]]
                for future in futures:  # in file order: the first match wins
                    found = future.result()
                    if found >= 0:
                        for rest in futures:
                            rest.result()
                        return found
        return -1


def read_legacy_h5(path: Path) -> Archive:
    """Read a legacy ``.h5`` model: ``model_config`` attribute + ``model_weights`` groups."""
    return _read_legacy_h5(path)[0]


def _read_legacy_h5(path: Path) -> tuple[Archive, dict[str, Any]]:
    import h5py

    from weightio.frameworks.keras.read.model import archive_from_keras_config

    mapping = _checked_mapping(path)
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise MalformedFileError(f"not a readable HDF5 file ({exc})", file=path) from None
    with h5, hdf5_errors(path):
        raw = attribute(h5, "model_config", file=path)
        if raw is None:
            raise UnsupportedSourceError(
                "this .h5 file has no model_config (weights only?); read it with "
                "architecture= naming the model's .keras file or config",
                file=path,
            )
        # h5py decodes undecodable bytes as surrogates: _checked_text refuses them as not UTF-8
        config = parse_config(
            raw if isinstance(raw, bytes) else _checked_text(raw, path).encode("utf-8"),
            file=path, what="model_config",
        )
        weights_group = child(h5, "model_weights", file=path)
        if weights_group is None:
            raise MalformedFileError("the .h5 file has no model_weights group", file=path)
        reader = _H5Reader(path, mapping)
        if config.get("class_name") not in _MODELS:
            _model_weights(reader, h5, config)  # raises the subclassed-model error
        configs = {_name_of(c): c for c in _layer_configs(config, path)}
        weights = reader.legacy(weights_group, configs)
        version = attribute(h5, "keras_version", file=path)
    return _mapped(path, archive_from_keras_config,
        config, weights, provenance=_provenance(path, config.get("class_name"), version)
    ), config


def _architecture(architecture: Any) -> dict[str, Any]:
    if isinstance(architecture, Mapping):
        return dict(architecture)
    where = Path(architecture)
    check_regular(where)
    if where.suffix.lower() == ".keras":
        with zip_errors(where, "the architecture .keras zip"), zipfile.ZipFile(where) as zf:
            members = _check_members(zf, where)
            if members["config.json"].file_size > MAX_CONFIG_BYTES:
                raise ResourceLimitError("config.json is too large", file=where)
            return parse_config(read_member(zf, members["config.json"], where), file=where,
                                what="config.json")
    if where.stat().st_size > MAX_CONFIG_BYTES:
        raise ResourceLimitError("architecture JSON is too large", file=where)
    return parse_config(where.read_bytes(), file=where, what="architecture JSON")


def read_weights_h5(path: Path, architecture: Any) -> Archive:
    """Read a ``.weights.h5`` (``model.save_weights``) with the architecture given separately.

    Args:
        path: The weights file.
        architecture: A ``.keras`` file or a ``config.json`` path (its ``config.json`` is used),
            or the config dict itself (``keras.saving.serialize_keras_object(model)``).
    """
    import h5py

    from weightio.frameworks.keras.read.model import archive_from_keras_config

    config = _architecture(architecture)
    origin = _provenance(path, config.get("class_name"), None)  # its digest runs beside the scan
    mapping = _checked_mapping(path)
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise MalformedFileError(f"not a readable HDF5 file ({exc})", file=path) from None
    with h5, hdf5_errors(path):
        weights = _model_weights(_H5Reader(path, mapping), h5, config)
    return _mapped(path, archive_from_keras_config,
        config, weights, provenance=origin
    )


def read_model_file_checked(path: Path) -> tuple[Archive, dict[str, Any]]:
    """Read a ``.keras`` or legacy ``.h5`` model file TF-free, every check applied (members,
    links, external storage, filters, heaps, names, file fields), and return the archive with
    the model config it was read from: what verification lets Keras load after the allowlist
    (``config_checks.check_keras_objects``) has passed it.
    """
    check_regular(path)
    if path.suffix.lower() == ".keras":
        return _read_keras_zip(path)
    return _read_legacy_h5(path)


def read_keras_path(path: os.PathLike[str] | str, *, architecture: Any = None) -> Archive:
    """Read ``.keras``, legacy ``.h5``/``.hdf5`` or ``.weights.h5`` (with ``architecture``)."""
    path = Path(path)
    check_regular(path)  # a FIFO, socket or device is refused before anything opens it
    name = path.name.lower()
    if name.endswith(".weights.h5"):
        if architecture is None:
            raise UnsupportedSourceError(
                "a .weights.h5 file holds weights without the architecture; pass "
                "architecture= (the model's .keras file, a config.json, or the config dict)",
                file=path,
            )
        return read_weights_h5(path, architecture)
    if architecture is not None:
        raise UnsupportedSourceError(
            "architecture= applies to .weights.h5 files only; this file carries its own", file=path
        )
    if path.suffix.lower() == ".keras":
        return read_keras_zip(path)
    return read_legacy_h5(path)
