"""Seed 002 settings on synthetic fMRIPrep-like data: lazyconn vs nilearn, same numbers.

DMN seeds (radius 8) and the Power-264 atlas (radius 5, 6 mm smoothing), detrend,
standardize, band-pass 0.01-0.1 Hz, t_r 2, fMRIPrep confounds (TSV with ``n/a`` in the
first row: lazyconn reads the file; nilearn gets the same filled array).
"""

import nibabel as nib
import numpy as np
import pytest
from nilearn import maskers as nilearn_maskers

from lazyconn import load
from lazyconn.datasets import fetch_coords_power_2011
from lazyconn.datasets.synthetic import make_synthetic_fmri
from lazyconn.io.confounds import sanitize_confounds
from lazyconn.maskers import NiftiLabelsMasker, NiftiSpheresMasker
from lazyconn.testing.maskers import quiet

DMN = [(0, -52, 18), (-46, -68, 32), (46, -68, 32), (1, 50, -5)]
CLEAN = dict(detrend=True, standardize="zscore_sample", low_pass=0.1, high_pass=0.01, t_r=2)
UNEVEN = (17, 23, 13)  # 4 mm MNI grid (50, 59, 48): uneven blocks on every axis


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    data = make_synthetic_fmri(
        1, n_timepoints=40, resolution=4, data_dir=tmp_path_factory.mktemp("synth")
    )
    conf = data.confounds[0]
    img = nib.load(data.func[0])
    img = nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header)  # read once
    filled = sanitize_confounds(conf, img.shape[3])
    return img, conf, filled, data


def _compare(kwargs, subject, check_float32=False):
    """float64 input: within 1e-4 of nilearn (in practice 1e-7). float32 input: at least as
    close to nilearn's float64 result as nilearn's own float32 result is (with 22 confounds,
    40 volumes and a band-pass, float32 rounding alone moves nilearn by ~1e-3).
    ``check_float32`` may be a slice of the seeds: the float32 check on those only (nilearn's
    sphere search costs seconds per call, in proportion to the seeds)."""
    img32, conf, filled, _ = subject
    name = kwargs.pop("_cls")
    cls = {"NiftiSpheresMasker": NiftiSpheresMasker, "NiftiLabelsMasker": NiftiLabelsMasker}[name]
    img64 = nib.Nifti1Image(img32.get_fdata(), img32.affine, img32.header)
    chunks = UNEVEN + (img32.shape[3],)

    ref64 = quiet(getattr(nilearn_maskers, name)(**kwargs).fit_transform, img64, confounds=filled)
    got64 = cls(**kwargs).fit_transform(load(img64, chunks=chunks), confounds=conf)
    assert got64.shape == ref64.shape and got64.dtype == ref64.dtype
    np.testing.assert_allclose(got64, ref64, rtol=1e-4, atol=1e-4)
    if check_float32 is False:
        return
    if isinstance(check_float32, slice):
        kwargs = dict(kwargs, seeds=kwargs["seeds"][check_float32])
        ref64 = ref64[:, check_float32]
    ref32 = quiet(getattr(nilearn_maskers, name)(**kwargs).fit_transform, img32, confounds=filled)
    got32 = cls(**kwargs).fit_transform(load(img32, chunks=chunks), confounds=conf)
    assert got32.dtype == ref32.dtype == np.float32
    ours_err = np.abs(got32 - ref64).max()
    assert ours_err <= max(np.abs(ref32 - ref64).max(), 1e-4)


def test_dmn_spheres_radius_8(subject):
    _compare(dict(_cls="NiftiSpheresMasker", seeds=DMN, radius=8, **CLEAN), subject)


@pytest.mark.slow  # nilearn's sphere search over the whole box takes seconds per call
def test_power_264_radius_5_smoothing_6(subject):
    power = fetch_coords_power_2011()
    coords = np.vstack((power.rois["x"], power.rois["y"], power.rois["z"])).T
    _compare(
        dict(_cls="NiftiSpheresMasker", seeds=coords, radius=5.0, smoothing_fwhm=6, **CLEAN),
        subject,
        check_float32=slice(None, None, 4),  # float32: 66 of the 264 spheres, all over the brain
    )


def test_labels_atlas_of_the_synthetic_data(subject):
    _compare(
        dict(
            _cls="NiftiLabelsMasker", labels_img=subject[3].labels_img, smoothing_fwhm=6, **CLEAN
        ),
        subject,
    )
