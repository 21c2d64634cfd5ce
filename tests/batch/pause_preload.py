"""A ``dask worker --preload``: this worker's archive writes stop once their header is on disk.

Set on the worker that the kill test SIGKILLs mid-write: at the atomic writer's
``header-written`` step (a temp file holding a placeholder header beside the target) the task
writes the key of the task it runs to ``$WEIGHTIO_TEST_PAUSE_MARKER`` and sleeps until the test kills the worker.
"""

import os
import time
from pathlib import Path

from weightio.format import atomic


def _pause(point: str) -> None:
    if point == "header-written":
        from distributed import get_worker

        executing = [str(getattr(task, "key", task)) for task in get_worker().state.executing]
        Path(os.environ["WEIGHTIO_TEST_PAUSE_MARKER"]).write_text("\n".join(executing))
        time.sleep(600)


atomic.fault_hook = _pause
