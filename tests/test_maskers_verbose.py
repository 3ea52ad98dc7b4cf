"""``verbose``: nilearn's step messages, at nilearn's levels, compared line by line.

nilearn prints ``[Class.method] message`` on stdout; lazyconn writes the same lines on
stderr (stdout stays for results). Image descriptions differ (lazyconn shows its own repr),
so lines are compared up to " from ".
"""

from __future__ import annotations

import contextlib
import io
import warnings

import nibabel as nib
import numpy as np
import pytest
from nilearn import maskers as nilearn_maskers

from lazyconn import maskers
from lazyconn.exceptions import ParameterTypeError
from lazyconn.testing.maskers import (
    SHAPE,
    lazy,
    tiny_affine,
    tiny_run,
    two_box_labels,
    two_box_maps,
)


def _mask():
    return nib.Nifti1Image(np.ones(SHAPE, np.int8), tiny_affine())


def _coarse_run():
    aff = tiny_affine().copy()
    aff[:3, :3] *= 2
    data = np.random.default_rng(0).standard_normal((4, 4, 5, 5)).astype(np.float32) + 10
    return nib.Nifti1Image(data, aff)


CASES = {
    "NiftiMasker": ("NiftiMasker", lambda: {}),
    "NiftiMasker mask smoothing": (
        "NiftiMasker",
        lambda: {"mask_img": _mask(), "smoothing_fwhm": 4, "detrend": True},
    ),
    "MultiNiftiMasker": ("MultiNiftiMasker", lambda: {}),
    "NiftiLabelsMasker": ("NiftiLabelsMasker", lambda: {"labels_img": two_box_labels()}),
    "NiftiLabelsMasker mask": (
        "NiftiLabelsMasker",
        lambda: {"labels_img": two_box_labels(), "mask_img": _mask()},
    ),
    "NiftiMapsMasker": ("NiftiMapsMasker", lambda: {"maps_img": two_box_maps()}),
    "NiftiSpheresMasker": (
        "NiftiSpheresMasker",
        lambda: {"seeds": [(0.0, 0.0, 0.0)], "radius": 4.0, "mask_img": _mask()},
    ),
}


def _steps(text: str, cls: str) -> list[str]:
    """The ``[cls.method] message`` lines, "from ..." cut, nilearn's method wrapper named
    ``transform``, repeated lines once (nilearn's Multi fit loads its data twice)."""
    out = []
    for line in text.splitlines():
        if not line.startswith(f"[{cls}."):
            continue
        line = line.replace(".wrapped]", ".transform]").split(" from ")[0]
        if not out or out[-1] != line:
            out.append(line)
    return out


def _run(masker, imgs, multi):
    """Outputs (stdout + stderr) of fit, transform and inverse_transform, step by step."""
    steps = {}
    calls = [
        ("fit", lambda: masker.fit(imgs)),
        ("transform", lambda: masker.transform(imgs)),
        ("inverse_transform", lambda: masker.inverse_transform(signals[0] if multi else signals)),
    ]
    signals = None
    for name, call in calls:
        buf = io.StringIO()
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(buf),
            contextlib.redirect_stderr(buf),
        ):
            warnings.simplefilter("ignore")
            result = call()
        if name == "transform":
            signals = result
        steps[name] = buf.getvalue()
    return steps


# every masker at verbose=1; 0 (silent) and 2 (the mask function's message) on two
@pytest.mark.parametrize(
    ("case", "verbose"),
    [(case, 1) for case in CASES]
    + [(case, v) for case in ("NiftiMasker", "NiftiLabelsMasker mask") for v in (0, 2)],
)
def test_verbose_messages_like_nilearn(case, verbose):
    cls, kwargs = CASES[case]
    multi = cls.startswith("Multi")
    run = tiny_run(n_t=5)
    theirs = _run(
        getattr(nilearn_maskers, cls)(verbose=verbose, **kwargs()), [run] if multi else run, multi
    )
    ours = _run(
        getattr(maskers, cls)(verbose=verbose, **kwargs()),
        [lazy(run)] if multi else lazy(run),
        multi,
    )
    for step in theirs:
        assert _steps(ours[step], cls) == _steps(theirs[step], cls), step
    if verbose == 0:
        assert all(not text for text in ours.values())
    else:
        assert _steps(ours["fit"], cls)[-1] == f"[{cls}.fit] Finished fit"


def test_verbose_messages_of_resampling_like_nilearn():
    """Regions and mask resampled at fit (labels onto a coarser run)."""
    kwargs = {"labels_img": two_box_labels(), "mask_img": _mask(), "verbose": 1}
    theirs = _run(nilearn_maskers.NiftiLabelsMasker(**kwargs), _coarse_run(), False)
    ours = _run(maskers.NiftiLabelsMasker(**kwargs), lazy(_coarse_run()), False)
    expected = _steps(theirs["fit"], "NiftiLabelsMasker")
    assert "[NiftiLabelsMasker.fit] Resampling regions" in expected
    assert "[NiftiLabelsMasker.fit] Resampling mask" in expected
    assert _steps(ours["fit"], "NiftiLabelsMasker") == expected


def test_verbose_goes_to_stderr_with_the_compute_progress(capsys):
    masker = maskers.NiftiMasker(mask_img=_mask(), verbose=1).fit()
    masker.transform(lazy(tiny_run(n_t=5)))
    out, err = capsys.readouterr()
    assert out == ""
    assert "[NiftiMasker.transform] Extracting region signals" in err
    assert "[lazyconn] NiftiMasker.transform: tasks 100%" in err
    masker.set_params(verbose=0).transform(lazy(tiny_run(n_t=5)))
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("bad", ["a", 1.5])
def test_verbose_must_be_an_integer_like_nilearn(bad):
    with pytest.raises(TypeError):
        nilearn_maskers.NiftiMasker(verbose=bad).fit(tiny_run(n_t=3))
    with pytest.raises(ParameterTypeError, match=rf"verbose={bad!r} has type"):
        maskers.NiftiMasker(verbose=bad).fit(lazy(tiny_run(n_t=3)))


def test_connectivity_measure_verbose_like_nilearn(capsys):
    from nilearn.connectome import ConnectivityMeasure as NilearnMeasure

    from lazyconn.connectome import ConnectivityMeasure

    signals = [np.random.default_rng(i).standard_normal((20, 3)) for i in range(2)]
    NilearnMeasure(verbose=1).fit(signals)
    theirs = capsys.readouterr().out
    ConnectivityMeasure(verbose=1).fit(signals)
    out, err = capsys.readouterr()
    assert out == ""
    assert _steps(err, "ConnectivityMeasure") == _steps(theirs, "ConnectivityMeasure")
    assert _steps(err, "ConnectivityMeasure") == ["[ConnectivityMeasure.fit] Finished fit"]
