"""Group analyses: many subjects as one dask graph, with a results store and any scheduler.

:class:`GroupConnectome` runs masker -> connectivity for every subject and aggregates the
matrices (mean, or geometric mean for ``kind="tangent"``) on dask's local scheduler, a
``LocalCluster`` (``client="local"``) or a remote scheduler; each subject's result is kept in a
Zarr results store (``cache_dir``) so re-runs compute only what is missing.
"""

import importlib

__all__ = ["GroupConnectome", "region_connectome"]


def __getattr__(name: str):
    # Imported on first use, so `lazyconn demo --help` does not load scikit-learn.
    if name == "GroupConnectome":
        return importlib.import_module("lazyconn.group.pipeline").GroupConnectome
    if name == "region_connectome":
        return importlib.import_module("lazyconn.group.regions").region_connectome
    raise AttributeError(f"module 'lazyconn.group' has no attribute {name!r}")
