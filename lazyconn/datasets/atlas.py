"""Coordinate atlases shipped with the package (no network access)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn.utils import Bunch

#: Folder of the package data files (templates, coordinate tables, descriptions).
DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def _description(name: str) -> str:
    # Read as nilearn does (bytes decoded as UTF-8) so the text is identical.
    return (DATA_DIR / f"{name}.rst").read_bytes().decode("utf-8")


def fetch_coords_power_2011() -> Bunch:
    """Load the Power et al. (2011) atlas of 264 ROI centres.

    Same result as :func:`nilearn.datasets.fetch_coords_power_2011`, read from the copy of
    nilearn's table shipped in ``lazyconn/data`` (no download).

    Returns
    -------
    data : :class:`sklearn.utils.Bunch`
        Dictionary-like object with:

        - ``rois``: :class:`pandas.DataFrame` with columns ``roi, x, y, z`` (int64), the
          coordinates of the 264 ROIs in MNI space (mm).
        - ``description``: :obj:`str`, description of the atlas.

    References
    ----------
    Power JD et al. Functional network organization of the human brain.
    Neuron 72(4):665-678, 2011.
    """
    rois = pd.read_csv(DATA_DIR / "power_2011.csv")
    rois = rois.rename(columns={c: c.lower() for c in rois.columns})
    return Bunch(rois=rois, description=_description("power_2011"))


def fetch_coords_dosenbach_2010(ordered_regions: bool = True) -> Bunch:
    """Load the Dosenbach et al. (2010) atlas of 160 ROI centres in 6 networks.

    Same result as :func:`nilearn.datasets.fetch_coords_dosenbach_2010`, read from the copy of
    nilearn's table shipped in ``lazyconn/data`` (no download).

    Parameters
    ----------
    ordered_regions : :obj:`bool`, default=True
        ROIs of the same network are grouped together and ordered by name, then by
        increasing ``y`` (sorted by ``network``, ``name``, ``y``). The rows keep their
        original index (so the first index is not 0). As in nilearn.

    Returns
    -------
    data : :class:`sklearn.utils.Bunch`
        Dictionary-like object with:

        - ``rois``: :class:`pandas.DataFrame` with columns ``x, y, z`` (int64), the
          coordinates of the 160 ROIs in MNI space (mm).
        - ``labels``: :obj:`list` of :obj:`str`, ``"<name> <number>"`` (names are not unique).
        - ``networks``: :class:`pandas.Series` of network names, aligned with ``rois``.
        - ``description``: :obj:`str`, description of the atlas.

    References
    ----------
    Dosenbach NUF et al. Prediction of individual brain maturity using fMRI.
    Science 329(5997):1358-1361, 2010.
    """
    table = pd.read_csv(DATA_DIR / "dosenbach_2010.csv")
    if ordered_regions:
        table = table.sort_values(by=["network", "name", "y"])
    labels = [
        f"{name} {number}" for name, number in zip(table["name"], table["number"], strict=True)
    ]
    return Bunch(
        rois=table[["x", "y", "z"]],
        labels=labels,
        networks=table["network"],
        description=_description("dosenbach_2010"),
    )
