"""Shared fixtures: small synthetic fMRI datasets with a planted truth, made once per session.

Use them in any test that needs realistic runs (``func``, ``confounds``, ``mask``) and an
answer to check against (``labels_img``, ``maps``, ``region_coords``, ``region_correlation``).
See :func:`lazyconn.datasets.make_synthetic_fmri` for the fields.
"""

from __future__ import annotations

import pytest

from lazyconn.datasets import make_synthetic_fmri

#: Parameters of ``synthetic_fmri``: 3 subjects, 8 mm (26, 30, 25) grid, 100 volumes,
#: 6 networks / 24 regions.
SYNTHETIC_FMRI_PARAMS = {"n_subjects": 3, "n_timepoints": 100, "resolution": 8, "n_networks": 6}


@pytest.fixture(scope="session")
def synthetic_fmri(tmp_path_factory):
    """3 subjects x 100 volumes at 8 mm with 6 planted networks (generated once, ~1 s)."""
    params = dict(SYNTHETIC_FMRI_PARAMS)
    return make_synthetic_fmri(
        params.pop("n_subjects"), data_dir=tmp_path_factory.mktemp("synthetic_fmri"), **params
    )


@pytest.fixture(scope="session")
def synthetic_fmri_4mm(tmp_path_factory):
    """2 subjects x 60 volumes at 4 mm, (50, 59, 48) grid, 3 planted networks / 12 regions."""
    return make_synthetic_fmri(
        2,
        n_timepoints=60,
        resolution=4,
        n_networks=3,
        data_dir=tmp_path_factory.mktemp("synthetic_fmri_4mm"),
    )
