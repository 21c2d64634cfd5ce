"""The Dask client a batch runs on: a ``LocalCluster`` on 127.0.0.1, or a scheduler's address.

``distributed`` is imported here, on first use (the ``dask`` extra), never by ``import weightio``.
A local cluster runs worker *processes* (one thread each: a conversion already hashes and copies
on threads of its own), bound to the loopback interface, without a dashboard. Before any task is
sent, every worker is asked which weightio it runs: a worker that cannot import weightio, or
runs another version (whose archives would differ), is refused with ``ClusterError``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from weightio.errors import ClusterError, InvalidInputError
from weightio.optional import require
from weightio.version import __version__

#: Seconds to wait for the first worker, and for each worker's answer to the version check.
WORKER_TIMEOUT = 60


def worker_version() -> str:
    """Runs on each worker: the weightio version it imports."""
    from weightio.version import __version__ as version

    return version


def local_workers(requested: int | None, jobs: int) -> int:
    """Worker processes of a local cluster: ``requested``, else one per core, at most one a job."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise InvalidInputError(f"workers must be a whole number >= 1, not {requested!r}")
        return requested
    return max(1, min(os.cpu_count() or 1, jobs))


@contextlib.contextmanager
def dask_client(
    scheduler: str | None = None, *, workers: int | None = None, jobs: int = 1
) -> Iterator[Any]:
    """A ``distributed.Client``: on a new ``LocalCluster`` (closed after), or on ``scheduler``.

    Raises:
        MissingFrameworkError: ``distributed`` is not installed (``pip install 'weightio[dask]'``).
        ClusterError: the scheduler cannot be reached, the local cluster does not start, or a
            worker runs no weightio or another version.
    """
    distributed = require("distributed", purpose="a batch on a Dask cluster")
    with contextlib.ExitStack() as stack:
        if scheduler is None:
            count = local_workers(workers, jobs)
            try:
                cluster = stack.enter_context(distributed.LocalCluster(
                    n_workers=count, threads_per_worker=1, processes=True, host="127.0.0.1",
                    # no dashboard; its HTTP server on an ephemeral loopback port, never 8787
                    dashboard_address="127.0.0.1:0", scheduler_kwargs={"dashboard": False},
                    silence_logs=logging.ERROR,
                ))
                client = stack.enter_context(distributed.Client(cluster))
            except (OSError, RuntimeError, TimeoutError) as exc:
                raise ClusterError(f"the local Dask cluster did not start ({exc})") from None
        else:
            if workers is not None:
                raise InvalidInputError(
                    "workers applies to the local cluster; a scheduler's cluster has its own"
                )
            try:
                # how long to try: dask's distributed.comm.timeouts.connect (30 s by default)
                client = stack.enter_context(distributed.Client(scheduler))
            except (OSError, TimeoutError, ValueError) as exc:
                raise ClusterError(
                    f"cannot reach the Dask scheduler at {scheduler!r} ({exc}); start one with "
                    "`dask scheduler` and its workers with `dask worker ADDRESS`"
                ) from None
        check_workers(client, scheduler)
        yield client


def check_workers(client: Any, scheduler: str | None) -> None:
    """Refuse a cluster whose workers run no weightio or another version than this one."""
    where = scheduler or "the local cluster"
    try:
        client.wait_for_workers(1, timeout=WORKER_TIMEOUT)
        versions = client.run(worker_version)
    except Exception as exc:  # an unpicklable task on the worker side comes back as anything
        raise ClusterError(
            f"the workers of {where} cannot run weightio ({type(exc).__name__}: {exc}); install "
            f"weightio {__version__} with its dask extra on every worker"
        ) from None
    other = sorted({f"{address} runs {version}" for address, version in versions.items()
                    if version != __version__})
    if other:
        raise ClusterError(
            f"workers of {where} run another weightio than this client's {__version__} "
            f"({'; '.join(other[:5])}); their archives would differ, install the same release"
        )
