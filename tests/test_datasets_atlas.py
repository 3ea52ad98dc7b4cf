"""Coordinate atlases: identical to nilearn's fetchers, field by field."""

import pandas as pd
import pytest
from nilearn import datasets as nl_datasets
from sklearn.utils import Bunch

from lazyconn import datasets
from lazyconn.testing.reference import quiet


def _nilearn(fetcher, **kwargs):
    return quiet(getattr(nl_datasets, fetcher), **kwargs)


def test_power_2011_matches_nilearn():
    ours = datasets.fetch_coords_power_2011()
    ref = _nilearn("fetch_coords_power_2011")
    assert isinstance(ours, Bunch)
    assert set(ours) == set(ref) == {"rois", "description"}
    pd.testing.assert_frame_equal(ours.rois, ref.rois, check_exact=True)
    assert list(ours.rois.columns) == ["roi", "x", "y", "z"]
    assert ours.rois.shape == (264, 4)
    assert ours.description == ref.description
    assert ours.description.startswith(".. _power_atlas:")


@pytest.mark.parametrize("ordered_regions", [True, False])
def test_dosenbach_2010_matches_nilearn(ordered_regions):
    ours = datasets.fetch_coords_dosenbach_2010(ordered_regions=ordered_regions)
    ref = _nilearn("fetch_coords_dosenbach_2010", ordered_regions=ordered_regions)
    assert isinstance(ours, Bunch)
    assert set(ours) == set(ref) == {"rois", "labels", "networks", "description"}
    pd.testing.assert_frame_equal(ours.rois, ref.rois, check_exact=True)
    pd.testing.assert_series_equal(ours.networks, ref.networks, check_exact=True)
    assert ours.labels == ref.labels
    assert ours.description == ref.description
    assert ours.rois.shape == (160, 3)
    assert len(ours.labels) == 160


def test_dosenbach_order_keeps_original_index():
    ordered = datasets.fetch_coords_dosenbach_2010()
    raw = datasets.fetch_coords_dosenbach_2010(ordered_regions=False)
    assert list(raw.rois.index) == list(range(160))
    # sorted by (network, name, y) with the original row labels kept
    assert ordered.rois.index[0] != 0
    assert sorted(ordered.rois.index) == list(range(160))
    keys = list(
        zip(
            ordered.networks,
            [lab.rsplit(" ", 1)[0] for lab in ordered.labels],
            ordered.rois["y"],
            strict=True,
        )
    )
    assert keys == sorted(keys)
    # a label's number is the 1-based original row
    first = ordered.rois.index[0]
    assert ordered.labels[0].endswith(f" {first + 1}")
    assert tuple(ordered.rois.iloc[0]) == tuple(raw.rois.loc[first])


def test_default_is_ordered():
    a = datasets.fetch_coords_dosenbach_2010()
    b = datasets.fetch_coords_dosenbach_2010(ordered_regions=True)
    pd.testing.assert_frame_equal(a.rois, b.rois)


def test_package_data_ships_in_the_wheel():
    import fnmatch
    import tomllib
    from pathlib import Path

    from lazyconn.datasets.atlas import DATA_DIR

    root = Path(__file__).resolve().parent.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["lazyconn"]
    shipped = {p.name for p in DATA_DIR.iterdir() if p.is_file()}
    assert {
        "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
        "power_2011.csv",
        "dosenbach_2010.csv",
        "power_2011.rst",
        "dosenbach_2010.rst",
        "README.md",
    } <= shipped
    for name in shipped:
        assert any(fnmatch.fnmatch(f"data/{name}", pattern) for pattern in patterns), name


def test_mni_loaders_are_reexported():
    from lazyconn.image import templates

    for kind in ("template", "brain_mask", "gm_template", "gm_mask", "wm_template", "wm_mask"):
        name = f"load_mni152_{kind}"
        assert getattr(datasets, name) is getattr(templates, name)
