"""nilearn's warnings, emitted by lazyconn on the same input (docs/nilearn-parity.md).

Each case calls nilearn 0.14.1 and lazyconn on the same input and checks both emit a
warning of nilearn's category whose message matches the same pattern. The audit table
in docs/nilearn-parity.md lists every nilearn warning of the mirrored modules and says
which ones are deliberately not emitted (value-dependent) or not applicable.
"""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest
from nilearn import image as n_image
from nilearn import maskers as n_maskers
from nilearn import masking as n_masking
from nilearn import regions as n_regions
from nilearn import signal as n_signal
from nilearn._utils import segmentation as n_segmentation
from nilearn.connectome import connectivity_matrices as n_connectivity

import lazyconn
from lazyconn import image as l_image
from lazyconn import maskers as l_maskers
from lazyconn import masking as l_masking
from lazyconn import regions as l_regions
from lazyconn import signal as l_signal
from lazyconn.connectome import _linalg as l_linalg
from lazyconn.ops import segmentation as l_segmentation
from lazyconn.testing.maskers import SHAPE, lazy, tiny_affine, tiny_run

AFF = tiny_affine()


def _vol(data, affine=AFF):
    return nib.Nifti1Image(np.asarray(data), affine)


def _labels():
    data = np.zeros(SHAPE, np.int32)
    data[1:4, 1:5, 1:6] = 1
    data[4:7, 3:8, 3:9] = 2
    return _vol(data)


def _maps():
    labels = np.asarray(_labels().dataobj)
    return _vol(np.stack([labels == k for k in (1, 2)], -1).astype("f4"))


def _mask(box=(slice(None),) * 3):
    data = np.zeros(SHAPE, np.int8)
    data[box] = 1
    return _vol(data)


def _coarse_run(n_t=6):
    aff = AFF.copy()
    aff[:3, :3] *= 2
    rng = np.random.default_rng(0)
    return nib.Nifti1Image(rng.standard_normal((4, 4, 5, n_t)).astype(np.float32), aff)


def _coarse_mask():
    aff = AFF.copy()
    aff[:3, :3] *= 2
    return nib.Nifti1Image(np.ones((4, 4, 5), np.int8), aff)


def _no_sform():
    img = _vol(np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE))
    img.set_sform(None, code=0)
    return img


def _signals(n_t=20, n_f=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n_t, n_f)) + 5


def _fitted(module, name, fit_arg=None, **kwargs):
    """(masker fitted on ``fit_arg``): quiet fit, so only the call under test warns."""
    masker = getattr(module, name)(**kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return masker.fit(fit_arg)


def _both(func):
    """A case whose call is the same for both libraries, given the module tuple."""
    return (lambda: func(_NILEARN), lambda: func(_LAZYCONN))


class _Mods:
    def __init__(self, image, maskers, masking, regions, signal, lazy_input):
        self.image, self.maskers, self.masking = image, maskers, masking
        self.regions, self.signal, self.lazy_input = regions, signal, lazy_input


_NILEARN = _Mods(n_image, n_maskers, n_masking, n_regions, n_signal, lambda img: img)
_LAZYCONN = _Mods(l_image, l_maskers, l_masking, l_regions, l_signal, lazy)


def _int64_too_large(m):
    data = np.zeros(SHAPE, np.int64)
    data[0, 0, 0] = 2**40
    return m.image.new_img_like(_labels(), data)


def _cosine_in_confounds(m):
    n_t, t_r = 30, 2.0
    drift = np.cos(np.pi * np.arange(n_t)[:, None] * (np.arange(1, 4) / n_t))
    return m.signal.clean(_signals(n_t), confounds=drift, filter="cosine", high_pass=0.01, t_r=t_r)


def _labels_masked(m, **kwargs):
    masker = m.maskers.NiftiLabelsMasker(_labels(), mask_img=_mask(np.s_[:4]), **kwargs)
    return masker.fit_transform(m.lazy_input(tiny_run(n_t=5)))


def _maps_masked(m, **kwargs):
    masker = m.maskers.NiftiMapsMasker(_maps(), mask_img=_mask(np.s_[:4]), **kwargs)
    return masker.fit_transform(m.lazy_input(tiny_run(n_t=5)))


def _label_lost_in_resampling(m):
    labels = np.asarray(_labels().dataobj).copy()
    labels[4:7, 3:8, 3:9] = 0
    labels[5, 6, 7] = 3  # a one-voxel label between the coarse grid's sample points
    masker = m.maskers.NiftiLabelsMasker(_vol(labels), resampling_target="data")
    return masker.fit(m.lazy_input(_coarse_run()))


def _with_nan(img):
    data = np.asarray(img.dataobj).astype(np.float32)
    data[0, 0, 0] = np.nan
    return nib.Nifti1Image(data, img.affine)


def _transform_other_grid(m, name, **kwargs):
    masker = _fitted(m.maskers, name, None, **kwargs)
    return masker.transform(m.lazy_input(_coarse_run()))


def _mask_at_transform(m, name, **kwargs):
    # fitted without images: the mask stays on its own grid until transform
    masker = _fitted(m.maskers, name, None, mask_img=_coarse_mask(), **kwargs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(labels|maps) at transform.*")
        warnings.filterwarnings("ignore", message=".*were removed.*")
        return masker.transform(m.lazy_input(tiny_run(n_t=5)))


# (id, nilearn's category, pattern both messages match, the call made with each library)
CASES = [
    # ---------------------------------------------------------------- image
    (
        "smooth_img fwhm=0",
        UserWarning,
        "Setting it to None",
        lambda m: m.image.smooth_img(m.lazy_input(tiny_run(n_t=2)), 0),
    ),
    (
        "crop_img of zeros",
        UserWarning,
        "No values above",
        lambda m: m.image.crop_img(_vol(np.zeros(SHAPE, np.float32))),
    ),
    (
        "new_img_like int64",
        UserWarning,
        "64-bit ints",
        lambda m: m.image.new_img_like(_labels(), np.ones(SHAPE, np.int64)),
    ),
    (
        "new_img_like int64 too large",
        UserWarning,
        "64-bit ints, and some values too large",
        _int64_too_large,
    ),
    (
        "math_img unused image",
        UserWarning,
        "not mentioned in the formula",
        lambda m: m.image.math_img("a * 2", a=_labels(), b=_labels()),
    ),
    (
        "concat_imgs other affine",
        UserWarning,
        "Affine is different across subjects",
        lambda m: m.image.concat_imgs(
            [_labels(), _vol(np.ones(SHAPE, np.int32), 2 * AFF)], auto_resample=True
        ),
    ),
    (
        "resample_img int cast",
        UserWarning,
        "Casting data from int32 to float32",
        lambda m: m.image.resample_img(_labels(), target_affine=2 * AFF[:3, :3]),
    ),
    (
        "resample_img no sform",
        UserWarning,
        "has no sform in its header",
        lambda m: m.image.resample_img(_no_sform(), target_affine=2 * AFF[:3, :3]),
    ),
    (
        "threshold_img above max",
        UserWarning,
        "must not exceed",
        lambda m: m.image.threshold_img(_labels(), 5.0, copy_header=True),
    ),
    (
        "threshold_img below min",
        UserWarning,
        "must not be less than",
        lambda m: m.image.threshold_img(
            _vol(-np.asarray(_labels().dataobj, np.float32)),
            -5.0,
            two_sided=False,
            copy_header=True,
        ),
    ),
    (
        "threshold_img non-finite",
        UserWarning,
        "Non-finite values detected",
        lambda m: m.image.threshold_img(_with_nan(_labels()), 0.5, copy_header=True),
    ),
    # ---------------------------------------------------------------- masking
    (
        "compute_background_mask empty",
        UserWarning,
        "Computed an empty mask",
        lambda m: m.masking.compute_background_mask(_vol(np.zeros(SHAPE + (2,), np.float32))),
    ),
    # ---------------------------------------------------------------- signal
    (
        "clean bool standardize",
        FutureWarning,
        "boolean values for 'standardize'",
        lambda m: m.signal.clean(_signals(), standardize=True),
    ),
    (
        "clean cutoff without filter",
        UserWarning,
        "No filter type selected",
        lambda m: m.signal.clean(_signals(), filter=False, low_pass=0.1, t_r=2.0),
    ),
    (
        "clean cosine low_pass",
        UserWarning,
        "low_pass is not implemented for filter='cosine'",
        lambda m: m.signal.clean(
            _signals(), filter="cosine", low_pass=0.1, high_pass=0.01, t_r=2.0
        ),
    ),
    (
        "clean confounds unstandardized",
        UserWarning,
        "one must perform detrend",
        lambda m: m.signal.clean(
            _signals(),
            confounds=_signals(seed=1)[:, :1],
            detrend=False,
            standardize_confounds=False,
        ),
    ),
    (
        "clean detrend one sample",
        UserWarning,
        "Detrending of 3D signal",
        lambda m: m.signal.clean(_signals(n_t=1), detrend=True, standardize=None),
    ),
    (
        "clean standardize one sample",
        UserWarning,
        "Standardization of 3D signal",
        lambda m: m.signal.clean(_signals(n_t=1), detrend=False, standardize="zscore_sample"),
    ),
    (
        "clean psc zero mean",
        UserWarning,
        "psc standardization strategy is meaningless",
        lambda m: m.signal.clean(np.c_[_signals(n_f=1), np.zeros(20)], standardize="psc"),
    ),
    (
        "butterworth above Nyquist",
        UserWarning,
        "Nyquist",
        lambda m: m.signal.butterworth(_signals(), sampling_rate=0.5, low_pass=0.4),
    ),
    (
        "butterworth equal cut-offs",
        UserWarning,
        "unfiltered",
        lambda m: m.signal.butterworth(_signals(), sampling_rate=0.5, low_pass=0.4, high_pass=0.3),
    ),
    (
        "cosine drift saturates",
        UserWarning,
        "High-pass filter will span all accessible",
        lambda m: m.signal.clean(_signals(), filter="cosine", high_pass=0.4, t_r=2.0),
    ),
    (
        "cosine drift not created",
        UserWarning,
        "Cosine filter was not created",
        lambda m: m.signal.clean(_signals(n_t=4), filter="cosine", high_pass=0.001, t_r=2.0),
    ),
    (
        "cosine drift in confounds",
        UserWarning,
        r"Cosine filter\(s\) exist in user supplied",
        _cosine_in_confounds,
    ),
    # ---------------------------------------------------------------- maskers
    (
        "NiftiMasker mask_args unsupported",
        UserWarning,
        "not supported by ?the masking strategy",
        lambda m: m.maskers.NiftiMasker(mask_args={"bogus": 1}).fit(m.lazy_input(tiny_run(n_t=3))),
    ),
    (
        "MultiNiftiMasker mask_args unsupported",
        UserWarning,
        "not supported by ?the masking strategy",
        lambda m: m.maskers.MultiNiftiMasker(mask_args={"bogus": 1}).fit(
            [m.lazy_input(tiny_run(n_t=3))]
        ),
    ),
    (
        "NiftiMasker mask and imgs",
        RuntimeWarning,
        "Generation of a mask has been requested",
        lambda m: m.maskers.NiftiMasker(mask_img=_mask()).fit(m.lazy_input(tiny_run(n_t=3))),
    ),
    (
        "MultiNiftiMasker mask and imgs",
        RuntimeWarning,
        "Generation of a mask has been requested",
        lambda m: m.maskers.MultiNiftiMasker(mask_img=_mask()).fit(
            [m.lazy_input(tiny_run(n_t=3))]
        ),
    ),
    (
        "MultiNiftiMasker 'template'",
        UserWarning,
        "Masking strategy 'template' is deprecated",
        lambda m: m.maskers.MultiNiftiMasker(mask_strategy="template").fit(
            [m.lazy_input(tiny_run(n_t=3))]
        ),
    ),
    (
        "NiftiMasker imgs resampled",
        UserWarning,
        "resampled to the mask_img resolution",
        lambda m: _fitted(m.maskers, "NiftiMasker", mask_img=_mask()).transform(
            m.lazy_input(_coarse_run())
        ),
    ),
    (
        "NiftiMasker inverse_transform bool",
        UserWarning,
        "Casting boolean input",
        lambda m: _fitted(m.maskers, "NiftiMasker", mask_img=_mask()).inverse_transform(
            np.ones(int(np.prod(SHAPE)), bool)
        ),
    ),
    (
        "NiftiLabelsMasker inverse_transform bool",
        UserWarning,
        "Casting boolean input",
        lambda m: _fitted(m.maskers, "NiftiLabelsMasker", labels_img=_labels()).inverse_transform(
            np.ones(2, bool)
        ),
    ),
    (
        "NiftiLabelsMasker labels at transform",
        UserWarning,
        "Resampling labels at transform",
        lambda m: _transform_other_grid(m, "NiftiLabelsMasker", labels_img=_labels()),
    ),
    (
        "NiftiLabelsMasker mask at transform",
        UserWarning,
        "Resampling mask at transform",
        lambda m: _mask_at_transform(m, "NiftiLabelsMasker", labels_img=_labels()),
    ),
    (
        "NiftiLabelsMasker images at transform",
        UserWarning,
        "Resampling images at transform",
        lambda m: _transform_other_grid(
            m, "NiftiLabelsMasker", labels_img=_labels(), resampling_target="labels"
        ),
    ),
    (
        "NiftiLabelsMasker label lost in resampling",
        UserWarning,
        "After resampling the label image to the data image, the following labels were removed",
        _label_lost_in_resampling,
    ),
    (
        "NiftiLabelsMasker labels masked out",
        UserWarning,
        "After applying mask to the labels image, the following labels were removed",
        _labels_masked,
    ),
    (
        "NiftiLabelsMasker keep_masked_labels",
        FutureWarning,
        '"keep_masked_labels" parameter will be removed',
        lambda m: _labels_masked(m, keep_masked_labels=True),
    ),
    (
        "NiftiMapsMasker maps at transform",
        UserWarning,
        "Resampling maps at transform",
        lambda m: _transform_other_grid(m, "NiftiMapsMasker", maps_img=_maps()),
    ),
    (
        "NiftiMapsMasker mask at transform",
        UserWarning,
        "Resampling mask at transform",
        lambda m: _mask_at_transform(m, "NiftiMapsMasker", maps_img=_maps()),
    ),
    (
        "NiftiMapsMasker images at transform",
        UserWarning,
        "Resampling images at transform",
        lambda m: _transform_other_grid(
            m, "NiftiMapsMasker", maps_img=_maps(), resampling_target="maps"
        ),
    ),
    (
        "NiftiMapsMasker maps masked out",
        UserWarning,
        "After applying mask to the maps image, maps with the following indices were removed",
        _maps_masked,
    ),
    (
        "NiftiMapsMasker keep_masked_maps",
        FutureWarning,
        '"keep_masked_maps" parameter will be removed',
        lambda m: _maps_masked(m, keep_masked_maps=True),
    ),
    (
        "NiftiMasker mask non-finite",
        UserWarning,
        "Non-finite values detected",
        lambda m: m.maskers.NiftiMasker(mask_img=_with_nan(_mask())).fit(),
    ),
    (
        "NiftiLabelsMasker labels non-finite",
        UserWarning,
        "Non-finite values detected",
        lambda m: m.maskers.NiftiLabelsMasker(_with_nan(_labels())).fit_transform(
            m.lazy_input(tiny_run(n_t=3))
        ),
    ),
    (
        "NiftiLabelsMasker fewer names than labels",
        UserWarning,
        "Too many indices for the names",
        lambda m: m.maskers.NiftiLabelsMasker(_labels(), labels=["Background", "a"]).fit(),
    ),
    (
        "NiftiLabelsMasker more names than labels",
        UserWarning,
        "Too many names for the indices",
        lambda m: m.maskers.NiftiLabelsMasker(
            _labels(), labels=["Background", "a", "b", "c"]
        ).fit(),
    ),
    # ---------------------------------------------------------------- regions
    (
        "img_to_signals_labels return_masked_atlas=False",
        FutureWarning,
        '"return_masked_atlas" parameter will be removed',
        lambda m: m.regions.img_to_signals_labels(
            tiny_run(n_t=3), _labels(), return_masked_atlas=False
        ),
    ),
    (
        "connected_regions nothing above threshold",
        UserWarning,
        "No supra threshold regions was found",
        lambda m: m.regions.connected_regions(
            _vol(np.zeros(SHAPE + (1,), np.float32)), min_region_size=1, smoothing_fwhm=None
        ),
    ),
]


@pytest.mark.parametrize(
    ("category", "pattern", "call"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_warning_like_nilearn(category, pattern, call):
    for mods in (_NILEARN, _LAZYCONN):
        # other warnings of the call (e.g. a dtype cast) are not under test here
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            with pytest.warns(category, match=pattern):
                call(mods)


def _random_walker_cases():
    data = np.random.default_rng(0).random((4, 4, 4))
    return [
        ("no zero label", data, np.ones((4, 4, 4), int), "No zero valued areas"),
        ("no seed", data, np.zeros((4, 4, 4), int), "received no seed label"),
    ]


@pytest.mark.parametrize(
    ("data", "labels", "pattern"),
    [c[1:] for c in _random_walker_cases()],
    ids=[c[0] for c in _random_walker_cases()],
)
def test_random_walker_warnings_like_nilearn(data, labels, pattern):
    with pytest.warns(UserWarning, match=pattern):
        n_segmentation.random_walker(data, labels.copy())
    with pytest.warns(UserWarning, match=pattern):
        l_segmentation.random_walker(data, labels.copy())


def test_geometric_mean_not_converged_like_nilearn():
    rng = np.random.default_rng(0)
    mats = [(a @ a.T + np.eye(4)) for a in rng.standard_normal((3, 4, 4))]
    pattern = "Maximum number of iterations 1 reached"
    with pytest.warns(UserWarning, match=pattern):
        n_connectivity._geometric_mean(mats, max_iter=1, tol=1e-20)
    with pytest.warns(UserWarning, match=pattern):
        l_linalg._geometric_mean(mats, max_iter=1, tol=1e-20)


def test_canica_critical_threshold_like_nilearn():
    from nilearn.decomposition import CanICA as NilearnCanICA

    from lazyconn.decomposition import CanICA

    runs = [tiny_run(seed=s, n_t=20) for s in range(2)]
    kwargs = {"n_components": 2, "threshold": 2.0, "mask": _mask(), "random_state": 0}
    for cls, imgs in ((NilearnCanICA, runs), (CanICA, [lazy(r) for r in runs])):
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            with pytest.warns(UserWarning, match=r"obtained a critical threshold \(= 0.0 perc"):
                cls(**kwargs).fit(imgs)


def test_negative_cutoff_is_an_error_where_nilearn_warns():
    """A deliberate difference (docs/nilearn-parity.md): nilearn filters at eps."""
    with pytest.warns(UserWarning, match="too low"):
        n_signal.butterworth(_signals(), sampling_rate=0.5, high_pass=-0.01)
    with pytest.raises(ValueError, match=r"high_pass=-0.01 is not valid"):
        l_signal.butterworth(_signals(), sampling_rate=0.5, high_pass=-0.01)


def test_lazyconn_warnings_are_user_warnings():
    """lazyconn's own category is a UserWarning, so nilearn-style filters catch it."""
    assert issubclass(lazyconn.exceptions.LazyconnWarning, UserWarning)
