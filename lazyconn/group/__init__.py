"""Group analyses: many subjects as one dask graph, with a results store and any scheduler.

:class:`GroupConnectome` runs masker -> connectivity for every subject and aggregates the
matrices (mean, or geometric mean for ``kind="tangent"``) on dask's local scheduler, a
``LocalCluster`` (``client="local"``) or a remote scheduler; each subject's result is kept in a
Zarr results store (``cache_dir``) so re-runs compute only what is missing.
"""

from lazyconn.group.pipeline import GroupConnectome

__all__ = ["GroupConnectome"]
