"""The rows docs/models.md is made from: what each model test measured, in one place.

The model-zoo tests (torchvision, Keras applications' attention cases, BERT/MiniLM) record a row
per model in :data:`RESULTS`; when ``WEIGHTIO_MODELS_REPORT=<file.json>`` is set, the session
fixture in ``tests/conftest.py`` merges them into that file at the end (each xdist worker merges
its own), which scripts/gen_models_page.py renders as the page. Imported as ``models_report`` (the tests
directory is on ``sys.path``), so the tests and the fixture share one dictionary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

#: Model name -> its row (status, input size, layer count, worst differences per step).
RESULTS: dict[str, dict] = {}


def write() -> None:
    """Merge :data:`RESULTS` into the ``WEIGHTIO_MODELS_REPORT`` file, when one is named."""
    target = os.environ.get("WEIGHTIO_MODELS_REPORT")
    if target and RESULTS:
        path = Path(target)
        old = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**old, **RESULTS}, indent=2, sort_keys=True) + "\n")
