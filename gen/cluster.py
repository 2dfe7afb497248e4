"""The Dask cluster that sharded verifications and sweeps run on (``--scheduler local|ADDRESS``).

``local``: a :class:`distributed.LocalCluster` sized to this machine, one
worker process per core with one thread each (a simulation is one busy
process; threads would only share a core). Any other value is the address
of a running scheduler (``tcp://host:8786``, e.g. one a ``dask-jobqueue``
``SLURMCluster`` started; docs/sweeps.md). Workers need only the installed
metafab package: every task carries its config as a dict.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from metafab.reference.errors import UserError

__all__ = ["connect", "worker_tag", "LOCAL"]

#: ``--scheduler`` value for a cluster on this machine.
LOCAL = "local"


@contextmanager
def connect(scheduler: str, *, workers: int | None = None):
    """A :class:`distributed.Client` of ``scheduler`` (:data:`LOCAL` or an address), closed at the end.

    ``workers``: the local cluster's worker processes (default: the cores of this machine).
    Raises :class:`UserError` when the scheduler cannot be reached.
    """
    from distributed import Client, LocalCluster

    if scheduler == LOCAL:
        n = workers or os.cpu_count() or 1
        # the dashboard on a free port: a second cluster on this machine (another sweep, a test run) never
        # finds its port taken
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            print(f"dask: local cluster of {n} worker process(es); dashboard {client.dashboard_link}",
                  file=sys.stderr, flush=True)
            yield client
        return
    if "://" not in scheduler and ":" not in scheduler:
        raise UserError(f"--scheduler {scheduler!r}: give 'local' or a scheduler address such as tcp://host:8786")
    try:
        client = Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise UserError(f"--scheduler {scheduler!r}: cannot reach the scheduler ({exc})") from None
    try:
        yield client
    finally:
        client.close()


def worker_tag() -> str:
    """This process's tag for its run folders: the Dask worker's name, or ``pid<N>`` outside a worker."""
    try:
        from distributed import get_worker

        name = str(get_worker().name)
    except (ImportError, ValueError):
        name = f"pid{os.getpid()}"
    return "w" + "".join(c if c.isalnum() else "-" for c in name)
