"""scikit-learn's rows in the table of sources and targets: estimators and Pipelines, ``.skops``
(audited by skops) and pickles (only when the user trusts them), the ``.skops``/``.joblib`` targets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from weightio.errors import UnsupportedSourceError, WeightioError
from weightio.format.archive import Archive
from weightio.frameworks.table import (
    FileSource,
    ObjectSource,
    Runner,
    Source,
    Target,
    from_modules,
    no_options,
)

#: Reader options an estimator takes.
OPTIONS = ("head", "dtype", "name")

is_estimator = from_modules("sklearn.")


def _open_estimator(estimator: Any, *, source_file: Path | None = None, **options: Any) -> Source:
    """A fitted estimator or Pipeline; its runner calls the method the archive's output mirrors."""
    from weightio.frameworks.sklearn.pipeline import (
        archive_role,
        read_sklearn_estimator,
        run_sklearn,
    )

    no_options(options, "a scikit-learn estimator", allowed=OPTIONS)
    archive = read_sklearn_estimator(estimator, source_file=source_file, **options)
    role = archive_role(archive)
    return Source(archive, "sklearn", lambda xs: run_sklearn(estimator, xs, role), estimator)


def _from_file(estimator: Any, path: Path, options: dict[str, Any]) -> Source:
    if not is_estimator(estimator):
        raise UnsupportedSourceError(
            f"the file holds a {type(estimator).__module__}.{type(estimator).__qualname__}, "
            "not a scikit-learn estimator",
            file=path,
        )
    try:
        return _open_estimator(estimator, source_file=path, **options)
    except WeightioError as exc:  # an unfitted or unreadable step: say which file holds it
        raise exc.with_file(path) from None


def _open_skops(path: Path, **options: Any) -> Source:
    from weightio.frameworks.sklearn.files import load_skops

    trusted = options.pop("trusted", None)
    options.pop("trust_pickle", None)  # a .skops file is never unpickled
    return _from_file(load_skops(path, trusted=trusted), path, options)


def _open_pickle(path: Path, **options: Any) -> Source:
    from weightio.frameworks.sklearn.files import load_pickle

    trust_pickle = bool(options.pop("trust_pickle", False))
    options.pop("trusted", None)
    return _from_file(load_pickle(path, trust_pickle=trust_pickle), path, options)


def _build(archive: Archive, **options: Any) -> tuple[Any, Runner | None]:
    from weightio.frameworks.sklearn.pipeline import runner_for
    from weightio.frameworks.sklearn.write import to_sklearn

    estimator = to_sklearn(archive)
    return estimator, runner_for(estimator, archive)


def _write(archive: Archive, native: Any, destination: Path, **options: Any) -> Path:
    from weightio.frameworks.sklearn.files import save_estimator

    return save_estimator(native, destination)


#: This package's rows of the table, registered in order by ``weightio.frameworks``.
ROWS = (
    ObjectSource(
        "sklearn", "fitted scikit-learn estimators and Pipelines", is_estimator, _open_estimator
    ),
    FileSource("sklearn", ".skops files", _open_skops, suffixes=(".skops",), listed_as=".skops"),
    FileSource(
        "sklearn",
        "pickles",
        _open_pickle,
        suffixes=(".pkl", ".pickle", ".joblib"),
        listed_as=".pkl/.joblib (with trust_pickle=True)",
    ),
    Target("skops", "sklearn", (".skops",), _build, _write, what="scikit-learn"),
    Target("joblib", "sklearn", (".joblib",), _build, _write, what="scikit-learn"),
)
