"""Datasets: coordinate atlases shipped with the package and synthetic fMRI with planted truth."""

from lazyconn.datasets.atlas import fetch_coords_dosenbach_2010, fetch_coords_power_2011
from lazyconn.datasets.synthetic import make_synthetic_fmri

__all__ = ["fetch_coords_dosenbach_2010", "fetch_coords_power_2011", "make_synthetic_fmri"]
