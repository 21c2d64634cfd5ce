"""F10 driver: the mode of every file each weightio writer creates or replaces, under several umasks.

``python write_modes.py FOLDER UMASK...`` runs in its own process so the test process's umask is
never touched. For each umask (octal) it sets it, runs every writer into a fresh sub-folder, records
each written file's mode, then sets every written file to mode 0o640 (0o604 for the second
round, so no umask could produce it) and runs the writers again over the same targets, recording
the modes once more. Prints JSON ``{umask: {writer: {"new": {file: mode}, "replaced": {...}}}}``.
Writers whose framework is missing are reported as ``null``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

import weightio
from weightio.format.atomic import atomic_path
from weightio.format.store import save

REPLACED_MODE = 0o604  # group cannot read, others can: no umask gives this


def writers() -> dict[str, Callable[[Path], None]]:
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 3))
    estimator = LinearRegression().fit(x, x @ np.array([1.0, -2.0, 0.5]) + 0.25)
    archive = weightio.read(estimator)
    state = {"w": rng.standard_normal((64, 64)).astype("f4"), "b": np.zeros(64, "f4")}
    weights_only = weightio.read(state)

    def keras_file(folder: Path) -> None:
        from weightio.frameworks.keras.files.writer import write_keras_file

        write_keras_file(archive, folder / "model.keras")

    def keras_model_save_path(folder: Path) -> None:
        # What save_keras does around keras.Model.save (a library writing to a path itself).
        with atomic_path(folder / "model.keras", suffix=".keras") as temp:
            temp.write_bytes(b"written by a library that wants a path")

    def skops(folder: Path) -> None:
        from weightio.frameworks.sklearn.files import save_estimator

        save_estimator(estimator, folder / "model.skops")

    def joblib(folder: Path) -> None:
        from weightio.frameworks.sklearn.files import save_estimator

        save_estimator(estimator, folder / "model.joblib")

    def pt_state_dict(folder: Path) -> None:
        import torch

        from weightio.frameworks.torch.files.state_dict import save_state_dict

        save_state_dict(torch.nn.Linear(3, 2), folder / "model.pt")

    def pt_archive_state_dict(folder: Path) -> None:
        from weightio.frameworks.torch.files.state_dict import save_archive_state_dict

        save_archive_state_dict(weights_only, folder / "weights.pt")

    def html(folder: Path) -> None:
        from weightio.report.html import write_html

        write_html("<!doctype html><title>r</title>", folder / "report.html")

    def pngs(folder: Path) -> None:
        from weightio.report.plots import write_pngs

        write_pngs([("a.png", b"\x89PNG\r\n\x1a\n")], folder / "plots")

    return {
        "archive": lambda folder: save(archive, folder / "model.safetensors"),
        "safetensors-state-dict": lambda folder: save(weights_only, folder / "weights.safetensors"),
        "shards+index": lambda folder: save(weights_only, folder / "sharded.safetensors",
                                            max_shard_size=12_000),
        "keras-file": keras_file,
        "keras-model-save": keras_model_save_path,
        "skops": skops,
        "joblib": joblib,
        "pt-state-dict": pt_state_dict,
        "pt-archive-state-dict": pt_archive_state_dict,
        "html": html,
        "png": pngs,
    }


def modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mode & 0o7777
            for p in sorted(folder.rglob("*")) if p.is_file()}


def main() -> None:
    root, umasks = Path(sys.argv[1]), [int(u, 8) for u in sys.argv[2:]]
    table = writers()
    report: dict[str, dict] = {}
    for umask in umasks:
        os.umask(umask)
        report[oct(umask)] = {}
        for name, write in table.items():
            folder = root / f"{umask:03o}-{name}"
            folder.mkdir()
            try:
                write(folder)
            except ImportError:
                report[oct(umask)][name] = None
                continue
            new = modes(folder)
            for file in new:
                os.chmod(folder / file, REPLACED_MODE)
            write(folder)
            report[oct(umask)][name] = {"new": new, "replaced": modes(folder)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
