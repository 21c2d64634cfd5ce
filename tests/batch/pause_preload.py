"""A ``dask worker --preload``: this worker's archive writes stop once their header is on disk.

Set on the worker that the kill test SIGKILLs mid-write: at the atomic writer's
``header-written`` step (a temp file holding a placeholder header beside the target) the task
touches ``$WEIGHTIO_TEST_PAUSE_MARKER`` and sleeps until the test kills the worker.
"""

import os
import time
from pathlib import Path

from weightio.format import atomic


def _pause(point: str) -> None:
    if point == "header-written":
        Path(os.environ["WEIGHTIO_TEST_PAUSE_MARKER"]).write_text(str(os.getpid()))
        time.sleep(600)


atomic.fault_hook = _pause
