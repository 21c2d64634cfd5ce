"""Object storage: fsspec URLs (``s3://``, ``gs://``, ``file://`` …) wherever weightio takes a path.

- ``file://`` URLs are plain local paths (no fsspec involved).
- An archive (``.safetensors``) at a URL opens header first with *range requests*: the first
  ``HEAD_BYTES`` (one request; it holds the whole header of most archives), then the rest of the
  header if it is longer. Tensors are fetched, each with one ranged request of exactly its bytes,
  only when used, so ``inspect`` of a 10 GB archive fetches kilobytes (``traffic()`` counts).
- Any other remote file is copied to a private local folder first (``staged``) and read there:
  its readers need a seekable, mappable file. The folder goes when the archive read from it is
  collected, or when the process ends.
- A write to a URL is made whole in a private local folder, by the same atomic writer as any
  other, then uploaded (``upload``): S3 and GCS publish an object only once its upload is
  complete, so a killed write never leaves a partial object behind.

Failures of the store itself become ``StorageError`` (unreachable, denied, throttled, anything
unexpected the client raised); a missing object is ``SourceNotFoundError``, like a missing file.
Where the store is, and with which credentials, is the filesystem's business: for S3, the usual
``AWS_*`` variables (``AWS_ENDPOINT_URL`` for an S3-compatible server) or fsspec's own
configuration (``FSSPEC_S3_ENDPOINT_URL``, ``~/.config/fsspec/``); see docs/scale.md.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import threading
import urllib.parse
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from weightio.errors import (
    SourceNotFoundError,
    StorageError,
    UnsupportedSourceError,
    WeightioError,
)
from weightio.optional import require

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_GLOB = re.compile(r"[*?\[]")

#: Bytes of an archive fetched by its first request: the length prefix and, for most archives
#: (a header is ~200 bytes a tensor), the whole header.
HEAD_BYTES = 64 * 1024


@dataclass
class Traffic:
    """Requests made and bytes fetched from object storage by this process (reads only)."""

    requests: int = 0
    bytes: int = 0


_TRAFFIC = Traffic()
_TRAFFIC_LOCK = threading.Lock()


def traffic() -> Traffic:
    """A copy of the counts so far: compare two copies to see what a call fetched."""
    with _TRAFFIC_LOCK:
        return Traffic(_TRAFFIC.requests, _TRAFFIC.bytes)


def _count(nbytes: int) -> None:
    with _TRAFFIC_LOCK:
        _TRAFFIC.requests += 1
        _TRAFFIC.bytes += nbytes


def is_url(value: object) -> bool:
    """Whether ``value`` is a URL (``scheme://…``), ``file://`` included."""
    return isinstance(value, str) and _SCHEME.match(value) is not None


def is_remote(value: object) -> bool:
    """Whether ``value`` is a URL of object storage (any scheme but ``file``)."""
    return is_url(value) and local_path(value) is None  # type: ignore[arg-type]


def local_path(value: str | os.PathLike[str]) -> Path | None:
    """The local path ``value`` names (a path, or a ``file://`` URL), or None for other URLs."""
    if not is_url(value):
        return Path(value)
    assert isinstance(value, str)
    scheme = _SCHEME.match(value).group(1).lower()  # type: ignore[union-attr]
    if scheme != "file":
        return None
    parsed = urllib.parse.urlparse(value)
    if parsed.netloc not in ("", "localhost"):
        raise UnsupportedSourceError(
            f"a file:// URL names a file on this machine (file:///path), not on {parsed.netloc!r}",
            file=value,
        )
    return Path(urllib.parse.unquote(parsed.path))


def as_local(value: str | os.PathLike[str]) -> str | os.PathLike[str]:
    """``value`` with a ``file://`` URL made its path; paths and other URLs as they are."""
    if is_url(value) and not is_remote(value):
        return local_path(value)  # type: ignore[return-value]
    return value


def basename(url: str) -> str:
    """The last part of a URL's path (``s3://b/run/step-1.pt`` → ``step-1.pt``)."""
    return PurePosixPath(urllib.parse.urlparse(url).path.rstrip("/")).name


def join(folder: str | os.PathLike[str], name: str) -> str:
    """``name`` inside ``folder`` (a local folder, or a URL of one)."""
    if is_remote(folder):
        return str(folder).rstrip("/") + "/" + name
    return str(Path(local_path(folder)) / name)  # type: ignore[arg-type]


def same_file(a: str, b: str) -> bool:
    """Whether two paths or URLs name one file (links resolved for local files)."""
    la, lb = local_path(a), local_path(b)
    if la is None or lb is None:
        return la is None and lb is None and a.rstrip("/") == b.rstrip("/")
    return la.resolve() == lb.resolve()


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem for ``url`` and the path within it.

    Raises:
        MissingFrameworkError: fsspec, or the protocol's package (s3fs, gcsfs), is missing.
        UnsupportedSourceError: a protocol fsspec does not know.
    """
    fsspec = require("fsspec", purpose=f"reading {url.split('://')[0]}:// URLs")
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        from weightio.errors import MissingFrameworkError

        raise MissingFrameworkError(
            f"{url.split('://')[0]}:// URLs need a package that is not installed ({exc}); "
            "for s3:// install it with: pip install 'weightio[s3]'"
        ) from None
    except ValueError as exc:
        raise UnsupportedSourceError(f"not a URL fsspec can open ({exc})", file=url) from None


@contextlib.contextmanager
def storage_errors(url: str, doing: str) -> Iterator[None]:
    """Turn whatever the storage client raises into ``SourceNotFoundError`` or ``StorageError``."""
    try:
        yield
    except WeightioError:
        raise
    except FileNotFoundError:
        raise SourceNotFoundError("no such object in the store", file=url) from None
    except PermissionError as exc:
        raise StorageError(f"the store refused {doing} (permission denied: {exc})", file=url) from None
    except Exception as exc:  # network, credentials, throttling: every client has its own classes
        detail = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise StorageError(f"{doing} failed ({type(exc).__name__}: {detail})", file=url) from None


def expand(url: str) -> list[str]:
    """The objects a URL names: itself, the files of a folder, or what a glob matches."""
    fs, path = filesystem(url)
    with storage_errors(url, "listing"):
        if _GLOB.search(path):
            found = [p for p in fs.glob(path) if fs.isfile(p)]
        elif fs.isdir(path):
            found = [entry["name"] for entry in fs.ls(path, detail=True) if entry.get("type") == "file"]
        else:
            return [url]
    return sorted(fs.unstrip_protocol(p) for p in found)


def size(url: str) -> int:
    """The object's size in bytes."""
    fs, path = filesystem(url)
    with storage_errors(url, "reading the object's size"):
        return int(fs.size(path))


def exists(url: str) -> bool:
    """Whether the object exists."""
    fs, path = filesystem(url)
    with storage_errors(url, "looking the object up"):
        return bool(fs.exists(path))


def read_range(url: str, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of the object, in one ranged request (counted in ``traffic()``)."""
    if end <= start:
        return b""
    fs, path = filesystem(url)
    with storage_errors(url, "a ranged read"):
        data = fs.cat_file(path, start=start, end=end)
    _count(len(data))
    if len(data) != end - start:
        raise StorageError(
            f"asked for bytes {start}-{end} and got {len(data)} bytes; the object changed "
            "while it was read", file=url,
        )
    return data


class RangeFile:
    """A read-only, seekable file over an object, reading by ranged requests.

    The first read fetches ``HEAD_BYTES`` (or the object, if smaller) and later reads inside it
    are served from it, so a header costs one request; any read beyond is one request of exactly
    its range.
    """

    def __init__(self, url: str, length: int | None = None) -> None:
        self.url = url
        self.length = size(url) if length is None else length
        self.position = 0
        self._head = b""

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:  # noqa: D102
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.position, os.SEEK_END: self.length}[whence]
        self.position = max(0, base + offset)
        return self.position

    def tell(self) -> int:  # noqa: D102
        return self.position

    def read(self, count: int = -1) -> bytes:  # noqa: D102
        end = self.length if count < 0 else min(self.length, self.position + count)
        if end <= self.position:
            return b""
        if not self._head:
            self._head = read_range(self.url, 0, min(self.length, HEAD_BYTES))
        if end <= len(self._head):
            data = self._head[self.position : end]
        else:
            data = read_range(self.url, self.position, end)
        self.position = end
        return data

    def __enter__(self) -> RangeFile:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def open_archive(url: str, *, verify: bool = False, required: bool = True) -> Any:
    """A weightio archive at ``url``: header by range requests, each tensor fetched on use;
    with ``required=False``, None for a safetensors object that carries no weightio spec.

    Raises:
        MalformedFileError, SpecValidationError: as ``weightio.load`` for a local file.
        SourceNotFoundError, StorageError: the object is missing, or the store failed.
    """
    from weightio.format.archive import (
        META_SPEC,
        Archive,
        TensorMap,
        check_header_against_spec,
        spec_of_header,
    )
    from weightio.format.safetensors import read_header

    handle = RangeFile(url)
    name = Path(basename(url))
    header = read_header(handle, name)  # type: ignore[arg-type]
    if META_SPEC not in header.metadata:
        if not required:
            return None
        from weightio.errors import MalformedFileError

        raise MalformedFileError(
            "this safetensors object carries no weightio spec (a plain state dict?); convert it "
            "with weightio.convert() or `weightio convert`", file=url,
        )
    spec = spec_of_header(header, url)
    check_header_against_spec(spec, header.entries, name)
    tensors = TensorMap(list(header.entries), RemoteTensors(url, header).get)
    archive = Archive(spec, tensors, checked=True)
    archive.url = url
    if verify:
        archive.verify()
    return archive


class RemoteTensors:
    """Tensors of a remote safetensors object: each one fetched (one ranged read) when asked for."""

    def __init__(self, url: str, header: Any) -> None:
        self.url = url
        self.header = header

    def get(self, name: str) -> Any:
        """Tensor ``name`` as a read-only array, fetched now."""
        import numpy as np

        from weightio.spec.dtypes import numpy_dtype

        entry = self.header.entries[name]
        dtype = numpy_dtype(entry.dtype, tensor=name)
        start = self.header.data_start
        data = read_range(self.url, start + entry.begin, start + entry.end)
        array = np.frombuffer(data, dtype=dtype).reshape(entry.shape)
        array.setflags(write=False)
        return array


def private_folder(purpose: str) -> Path:
    """A new folder only this process uses (mode 0700), for a staged copy or an upload."""
    return Path(tempfile.mkdtemp(prefix=f"weightio-{purpose}-"))


def staged(url: str, keep_alive: object | None = None) -> Path:
    """Copy the object at ``url`` into a private folder under its own name; return the copy.

    With ``keep_alive``, the folder is removed once that object is collected (or at exit);
    without, the caller removes ``path.parent`` when done.
    """
    folder = private_folder("staged")
    target = folder / (basename(url) or "object")
    fs, path = filesystem(url)
    try:
        with storage_errors(url, "downloading"):
            fs.get_file(path, str(target))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    _count(target.stat().st_size)
    if keep_alive is not None:
        remove_with(keep_alive, folder)
    return target


def remove_with(owner: object, folder: Path) -> None:
    """Remove ``folder`` when ``owner`` is collected, or when the process exits."""
    weakref.finalize(owner, shutil.rmtree, folder, ignore_errors=True)


def upload(local: Path, url: str, *, overwrite: bool = True) -> None:
    """Upload a finished local file to ``url`` (published whole, as the store publishes objects).

    Raises:
        TargetExistsError: ``overwrite=False`` and the object exists.
        StorageError: the store failed; no partial object is visible.
    """
    fs, path = filesystem(url)
    if not overwrite and exists(url):
        from weightio.errors import TargetExistsError

        raise TargetExistsError("already exists and overwrite=False; remove it or allow "
                                "overwriting", file=url)
    with storage_errors(url, "uploading"):
        fs.put_file(str(local), path)


def open_read(url: str) -> BinaryIO:
    """A streaming read-only file object of the whole object (fsspec's, read ahead in blocks)."""
    fs, path = filesystem(url)
    with storage_errors(url, "opening"):
        return fs.open(path, "rb")
