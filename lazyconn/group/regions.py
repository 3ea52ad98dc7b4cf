"""The region-extraction connectome workflow of a whole study in one call.

nilearn's example (``plot_extract_regions_dictlearning_maps``) runs, eagerly::

    maps = DictLearning(...).fit(func).components_img_
    extractor = RegionExtractor(maps, ...).fit()
    correlations = [ConnectivityMeasure(kind="correlation").fit_transform(
        [extractor.transform(f, confounds=c)])[0] for f, c in zip(func, confounds)]
    mean_correlations = np.mean(correlations, axis=0)

:func:`region_connectome` runs the same steps: the decomposition (its own group graph),
the region extraction (in memory: maps are small), then every subject's
read -> smooth -> extract -> clean -> correlation chain and the group mean as ONE graph
(:class:`~lazyconn.group.GroupConnectome`: any scheduler, a results store).
"""

from __future__ import annotations

import time

from sklearn.base import clone
from sklearn.utils import Bunch

from lazyconn.connectome import ConnectivityMeasure
from lazyconn.decomposition._base import release_freed_memory
from lazyconn.exceptions import ParameterTypeError
from lazyconn.group._cluster import client_context
from lazyconn.group.pipeline import GroupConnectome
from lazyconn.regions import RegionExtractor

__all__ = ["region_connectome"]


def region_connectome(
    imgs,
    decomposition,
    extractor=None,
    connectivity=None,
    *,
    confounds=None,
    sample_mask=None,
    subjects=None,
    **group_params,
):
    """Maps from a decomposition -> regions -> one connectome per subject -> group mean.

    Parameters
    ----------
    imgs : list of runs (paths, zarr stores, URLs, images), one per subject
    decomposition : estimator, or a 4-D maps image
        An unfitted decomposition (e.g. ``lazyconn.decomposition.DictLearning``): a new
        instance with its parameters is fitted on ``imgs`` (``fit(imgs, confounds=confounds)``), and its
        ``components_img_`` are the maps. A fitted one (with ``components_img_``) is used
        as is; a maps image skips the decomposition.
    extractor : lazyconn.regions.RegionExtractor, optional
        Its ``maps_img`` is replaced by the maps. Default: ``RegionExtractor()`` (nilearn's
        defaults).
    connectivity : lazyconn.connectome.ConnectivityMeasure, optional
        Default: ``ConnectivityMeasure(kind="correlation")`` (as the nilearn example).
    confounds, sample_mask : list with one entry per subject, optional
        Given to the decomposition (confounds) and to every subject's extraction.
    subjects : list of str, optional
        Subject names (see ``GroupConnectome.fit``).
    **group_params
        ``GroupConnectome`` options: ``cache_dir``, ``client``, ``n_workers``,
        ``on_error``, ``progress``, ``storage_options``. A ``client`` given as ``"local"``
        or an address is started (or connected) once for the whole call, and an unfitted
        decomposition whose own ``client`` is the same string runs on that cluster too.

    Returns
    -------
    Bunch with ``decomposition`` (fitted, or None for a maps image), ``maps_img``,
    ``extractor`` (fitted: ``regions_img_``, ``index_``), ``group`` (the fitted
    GroupConnectome: ``subject_matrices_``, ``group_matrix_``...) and ``mean_matrix``
    (= ``group.group_matrix_``), ``timings`` (seconds: ``connect`` (starting or joining the
    cluster), ``decomposition``, ``regions`` (the extractor's fit), ``connectomes`` (the
    group step; its stages in ``group.timings_``), ``total``).

    Notes
    -----
    Not in nilearn. The connectomes of all subjects are computed in one graph whose
    tasks each read one subject's run once (smoothing folded into the regions' weights).
    """
    client = group_params.get("client")
    timings = {}
    t0 = time.perf_counter()
    # One cluster for the whole workflow: a client given as "local" or an address is opened
    # once here and handed, live, to the decomposition (when it asks for the same one) and
    # to the group step, instead of each starting (or connecting to) its own.
    with client_context(client, n_workers=group_params.get("n_workers")) as live:
        timings["connect"] = time.perf_counter() - t0
        fitted_decomposition = None
        if hasattr(decomposition, "components_img_"):
            fitted_decomposition = decomposition
            maps = decomposition.components_img_
        elif callable(getattr(decomposition, "fit", None)):
            # a new instance with the same parameter objects (sklearn's clone would deep-copy
            # a distributed Client given as a parameter, which cannot be copied)
            params = decomposition.get_params(deep=False)
            shared = isinstance(client, str) and params.get("client") == client
            if shared:
                params["client"] = live
            fitted_decomposition = type(decomposition)(**params)
            if confounds is None:
                fitted_decomposition.fit(imgs)
            else:
                fitted_decomposition.fit(imgs, confounds=confounds)
            if shared:  # the parameter as given, not the closed cluster's client
                fitted_decomposition.set_params(client=client)
            maps = fitted_decomposition.components_img_
        else:
            maps = decomposition  # an image (checked by the extractor)
        timings["decomposition"] = time.perf_counter() - t0 - timings["connect"]
        t1 = time.perf_counter()
        extractor = RegionExtractor() if extractor is None else extractor
        if not isinstance(extractor, RegionExtractor):
            raise ParameterTypeError(
                f"extractor={extractor!r} has type {type(extractor).__name__}; expected a "
                "lazyconn.regions.RegionExtractor."
            )
        extractor = clone(extractor).set_params(maps_img=maps).fit()
        # the subjects start from what the regions keep, not on the heap their extraction
        # freed (its random walks and copies of the maps: ~60 MiB on the seed-001 maps)
        release_freed_memory()
        timings["regions"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        connectivity = (
            ConnectivityMeasure(kind="correlation") if connectivity is None else connectivity
        )
        group = GroupConnectome(extractor, connectivity, **{**group_params, "client": live})
        group.fit(imgs, confounds=confounds, sample_mask=sample_mask, subjects=subjects)
        group.set_params(client=client)
        timings["connectomes"] = time.perf_counter() - t2
    timings["total"] = time.perf_counter() - t0
    return Bunch(
        decomposition=fitted_decomposition,
        maps_img=maps,
        extractor=extractor,
        group=group,
        mean_matrix=group.group_matrix_,
        timings=timings,
    )
