"""generate_report(): one HTML builder for every masker, checked against nilearn's report."""

from __future__ import annotations

import base64
import html as html_mod
import re
import sys
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn import maskers as nilearn_maskers

from lazyconn import maskers
from lazyconn.exceptions import ParameterError
from lazyconn.maskers._report import labels_summary
from lazyconn.testing.maskers import (
    SHAPE,
    lazy,
    tiny_affine,
    tiny_run,
    two_box_labels,
    two_box_maps,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _mask():
    data = np.zeros(SHAPE, np.int8)
    data[1:6, 1:7, 1:8] = 1
    return nib.Nifti1Image(data, tiny_affine())


CASES = {
    "NiftiMasker": lambda: {"mask_img": _mask()},
    "MultiNiftiMasker": dict,
    "NiftiLabelsMasker": lambda: {"labels_img": two_box_labels(), "mask_img": _mask()},
    "MultiNiftiLabelsMasker": lambda: {"labels_img": two_box_labels()},
    "NiftiMapsMasker": lambda: {"maps_img": two_box_maps()},
    "NiftiSpheresMasker": lambda: {"seeds": [(0.0, 0.0, 0.0), (6.0, 6.0, 9.0)], "radius": 4.0},
}


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


@pytest.mark.parametrize("name", list(CASES))
def test_report_has_parameters_summary_and_figures(name, tmp_path):
    masker = getattr(maskers, name)(smoothing_fwhm=5, **CASES[name]())
    run = lazy(tiny_run(n_t=4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # e.g. a given mask and imgs
        masker.fit([run] if name.startswith("Multi") else run)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = masker.generate_report(title="my report")
    html = report.get_standalone()
    assert "<h1>my report</h1>" in html
    for param in masker.get_params(deep=False):
        assert f"<td>{param}</td>" in html
    assert "<td>5</td>" in html  # smoothing_fwhm's value
    assert "<h2>Summary</h2>" in html
    images = _images(html)
    assert images and all(img.startswith(PNG) and len(img) > 1000 for img in images)
    path = tmp_path / "report.html"
    report.save_as_html(path)
    assert path.read_text(encoding="utf-8") == html == report._repr_html_() == str(report)
    expected = []  # nilearn's notes for these inputs
    if name.startswith("Multi"):
        expected.append(
            "A list of 4D subject images were provided to fit. Only first subject is shown in "
            "the report."
        )
    if name in ("NiftiSpheresMasker", "NiftiMapsMasker"):  # 10 shown by default, 2 there
        what = "spheres" if "Spheres" in name else "maps"
        expected.append(
            f"`generate_report()` received 'displayed_{what}=10' to be displayed. But masker "
            f"only has 2 {what[:-1]}(s). 'displayed_{what}' was set to 2."
        )
    assert [str(w.message) for w in caught] == expected
    assert all(html_mod.escape(note) in html for note in expected)


def _both(name, kwargs, fit, **report_kwargs):
    """nilearn's and lazyconn's report warnings (messages) for the same masker and fit."""
    out = []
    for module, as_input in ((nilearn_maskers, lambda x: x), (maskers, lazy)):
        masker = getattr(module, name)(**kwargs())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if fit == "imgs":
                masker.fit(as_input(tiny_run(n_t=4)))
            elif fit == "none":
                masker.fit()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            masker.generate_report(**report_kwargs)
        out.append(
            {
                " ".join(str(w.message).split())
                for w in caught
                # nilearn's plotting notice, not a report warning
                if w.category is UserWarning and "cut coords" not in str(w.message)
            }
        )
    return out


@pytest.mark.parametrize(
    ("name", "kwargs", "fit", "report_kwargs"),
    [
        ("NiftiMasker", dict, None, {}),
        ("NiftiMasker", lambda: {"reports": False}, "imgs", {}),
        ("NiftiMasker", lambda: {"mask_img": _mask()}, "none", {}),
        pytest.param(  # both draw on the MNI152 template: > 5 s under load
            "NiftiLabelsMasker",
            lambda: {"labels_img": two_box_labels()},
            "none",
            {},
            marks=pytest.mark.slow,
        ),
        (
            "NiftiMapsMasker",
            lambda: {"maps_img": two_box_maps()},
            "imgs",
            {"displayed_maps": [0, 5]},
        ),
        ("NiftiSpheresMasker", lambda: {"seeds": [(0.0, 0.0, 0.0)]}, "imgs", {}),
        ("MultiNiftiMasker", dict, "imgs", {}),
    ],
    ids=[
        "unfitted",
        "reports-off",
        "no-image",
        "labels-no-image",
        "maps-missing",
        "spheres-many",
        "multi-one-run",
    ],
)
def test_report_warnings_like_nilearn(name, kwargs, fit, report_kwargs):
    theirs, ours = _both(name, kwargs, fit, **report_kwargs)
    assert ours == theirs
    assert ours  # every case warns


def test_labels_summary_table_like_nilearn():
    kwargs = {
        "labels_img": two_box_labels(),
        "mask_img": _mask(),
        "labels": ["Background", "a", "b"],
    }
    run = tiny_run(n_t=4)
    ref = nilearn_maskers.NiftiLabelsMasker(**kwargs)
    ours = maskers.NiftiLabelsMasker(**kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.fit_transform(run)
        ref.generate_report()
        ours.fit_transform(lazy(run))
    html = ours.generate_report().get_standalone()
    expected = ref._report_content["summary"].reset_index(drop=True)
    got = labels_summary(ours)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert got.to_html(index=False, border=0, classes="summary") in html


def test_report_without_matplotlib_names_the_extra(monkeypatch):
    masker = maskers.NiftiMasker(mask_img=_mask()).fit()
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'lazyconn\[plot\]'"):
        masker.generate_report()


def test_report_bad_arguments():
    masker = maskers.NiftiMapsMasker(two_box_maps()).fit()
    with pytest.raises(ParameterError, match="engine='brainsprite' is not valid"):
        masker.generate_report(engine="brainsprite")
    with pytest.raises(TypeError, match="displayed_maps"):
        nilearn_maskers.NiftiMapsMasker(two_box_maps()).fit().generate_report(displayed_maps="two")
    with pytest.raises(TypeError, match=r"displayed_maps.*got 'two'"):
        masker.generate_report(displayed_maps="two")
