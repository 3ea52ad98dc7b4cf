"""make_synthetic_fmri: layout, file formats, determinism, and that nilearn recovers the truth."""

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from lazyconn.datasets import make_synthetic_fmri
from lazyconn.exceptions import OutputExistsError, ParameterError, ParameterTypeError

SMALL = {"n_timepoints": 40, "resolution": 8, "n_networks": 3}

MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_synthetic_fmri(2, data_dir=tmp_path_factory.mktemp("small"), **SMALL)


def _md5(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def test_layout_and_names(small):
    root = Path(small.data_dir)
    assert small.subjects == ["sub-01", "sub-02"]
    for sub, func, conf in zip(small.subjects, small.func, small.confounds, strict=True):
        assert Path(func) == (
            root
            / sub
            / "func"
            / f"{sub}_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
        )
        assert Path(conf) == root / sub / "func" / f"{sub}_task-rest_desc-confounds_timeseries.tsv"
        assert Path(func).is_file() and Path(conf).is_file()
        assert (
            root
            / sub
            / "func"
            / f"{sub}_task-rest_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz"
        ).is_file()
    description = json.loads((root / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert not list(root.rglob("*.part*"))
    assert small.t_r == 2.0


def test_bold_image_matches_nilearn_grid(small):
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    img = nib.load(small.func[0])
    template = load_mni152_template(resolution=8)
    assert img.shape == template.shape + (40,) == (26, 30, 25, 40)
    np.testing.assert_array_equal(img.affine, template.affine)
    assert img.get_data_dtype() == np.float32
    assert img.header.get_zooms() == (8.0, 8.0, 8.0, 2.0)
    assert img.header.get_xyzt_units() == ("mm", "sec")
    data = img.get_fdata(dtype=np.float32)
    mask = nib.load(small.mask).get_fdata() > 0
    np.testing.assert_array_equal(mask, load_mni152_brain_mask(resolution=8).get_fdata() > 0)
    assert np.all(data[~mask] == 0)
    assert data[mask].min() > 100  # positive BOLD-like baseline, so EPI masks work
    assert 500 < data[mask].mean() < 2000


def test_confounds_table_like_fmriprep(small):
    for path in small.confounds:
        raw = Path(path).read_text().splitlines()
        header = raw[0].split("\t")
        table = pd.read_csv(path, sep="\t")
        assert list(table.columns) == header
        expected = (
            ["global_signal", "csf", "white_matter", "framewise_displacement"]
            + [f"a_comp_cor_{k:02d}" for k in range(6)]
            + [c for c in header if c.startswith("cosine")]
            + [name for m in MOTION for name in (m, f"{m}_derivative1")]
        )
        assert header == expected
        assert len(table) == 40
        # fMRIPrep writes n/a exactly in the first row of FD and of the derivatives
        first = raw[1].split("\t")
        na_cols = {c for c, v in zip(header, first, strict=True) if v == "n/a"}
        assert na_cols == {"framewise_displacement"} | {f"{m}_derivative1" for m in MOTION}
        assert not any("n/a" in line for line in raw[2:])
        assert table.iloc[1:].notna().all().all()
        motion = table[MOTION].to_numpy()
        np.testing.assert_allclose(
            table[[f"{m}_derivative1" for m in MOTION]].to_numpy()[1:], np.diff(motion, axis=0)
        )
        diff = np.abs(np.diff(motion, axis=0))
        fd = diff[:, :3].sum(1) + 50 * diff[:, 3:].sum(1)
        np.testing.assert_allclose(table["framewise_displacement"].to_numpy()[1:], fd)
        compcor = table[[f"a_comp_cor_{k:02d}" for k in range(6)]].to_numpy()
        np.testing.assert_allclose(compcor.T @ compcor, np.eye(6), atol=1e-6)


def test_reduced_confounds_pass_to_nilearn_as_paths(small):
    from nilearn.maskers import NiftiLabelsMasker

    from lazyconn.datasets.synthetic import REDUCED_CONFOUNDS

    for full, reduced in zip(small.confounds, small.reduced_confounds, strict=True):
        assert Path(reduced).name == Path(full).name.replace(
            "desc-confounds", "desc-reducedConfounds"
        )
        table = pd.read_csv(reduced, sep="\t")
        assert list(table.columns) == list(REDUCED_CONFOUNDS) and len(REDUCED_CONFOUNDS) == 15
        expected = pd.read_csv(full, sep="\t")[list(REDUCED_CONFOUNDS)].fillna(0.0)
        pd.testing.assert_frame_equal(table, expected, check_exact=True)
    masker = NiftiLabelsMasker(small.labels_img, standardize="zscore_sample")
    from_path = masker.fit_transform(small.func[-1], confounds=small.reduced_confounds[-1])
    from_array = masker.fit_transform(small.func[-1], confounds=expected.to_numpy())
    np.testing.assert_allclose(from_path, from_array, atol=1e-10)
    assert np.isfinite(from_path).all()


def test_4mm_fixture_grid(synthetic_fmri_4mm):
    img = nib.load(synthetic_fmri_4mm.func[0])
    assert img.shape == (50, 59, 48, 60)
    assert (nib.load(synthetic_fmri_4mm.mask).get_fdata() > 0).sum() == 29398  # as nilearn
    # 4 regions per network, each a separate blob
    from scipy import ndimage

    maps = nib.load(synthetic_fmri_4mm.maps).get_fdata()
    for k in range(maps.shape[3]):
        assert ndimage.label(maps[..., k] > 0, structure=np.ones((3, 3, 3)))[1] == 4


def test_global_csf_wm_are_means_of_the_data(small):
    data = nib.load(small.func[1]).get_fdata()
    mask = nib.load(small.mask).get_fdata() > 0
    table = pd.read_csv(small.confounds[1], sep="\t")
    np.testing.assert_allclose(table["global_signal"], data[mask].mean(axis=0), rtol=1e-6)
    # CSF darker than white matter on the T1-like baseline
    assert table["csf"].mean() < table["white_matter"].mean()


def test_deterministic_and_prefix_stable(small, tmp_path):
    same = make_synthetic_fmri(2, data_dir=tmp_path / "same", **SMALL)

    def digests(root):
        return {p.relative_to(root): _md5(p) for p in Path(root).rglob("*") if p.is_file()}

    assert digests(same.data_dir) == digests(small.data_dir)  # every file, byte for byte
    assert len(digests(same.data_dir)) == 5 + 4 * 2 + 1
    again = make_synthetic_fmri(3, data_dir=tmp_path / "again", **SMALL)
    for k in range(2):
        assert _md5(again.func[k]) == _md5(small.func[k])
        assert _md5(again.confounds[k]) == _md5(small.confounds[k])
    assert _md5(again.func[0]) != _md5(again.func[1])
    other = make_synthetic_fmri(1, data_dir=tmp_path / "other", random_state=1, **SMALL)
    assert _md5(other.func[0]) != _md5(small.func[0])


# Digests of the `small` dataset written by generator version 4 before the module was split
# into a package (commit b1351a1). The uncompressed NIfTI bytes and the tables, so the pin does
# not depend on the zlib build. A deliberate change of the data bumps _GENERATOR_VERSION and
# these digests together.
PINNED_V4 = {
    "sub-01/func/sub-01_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz": (
        "8524b80775aaf3b91bac8c5c82e4d0d8"
    ),
    "truth/space-MNI152NLin2009cAsym_res-8mm_desc-regions_dseg.nii.gz": (
        "915da167ceae7a702cc6a9f6acec2662"
    ),
    "truth/space-MNI152NLin2009cAsym_res-8mm_desc-networks_probseg.nii.gz": (
        "c68078b6377b07955ddea8a1eeaf1d3a"
    ),
    "sub-01/func/sub-01_task-rest_desc-confounds_timeseries.tsv": (
        "689158debfb059d0c690c69b53e03a76"
    ),
    "sub-02/func/sub-02_task-rest_desc-reducedConfounds_timeseries.tsv": (
        "6e97d533c182f76c6e0498f368eaaae6"
    ),
    "truth/regions.tsv": "fb8ddc97ba0df421344d0a96cfc607f5",
    "truth/region_correlation.tsv": "2d3a46af037a56758684a6fa105e0c02",
}


def test_same_bytes_as_the_pinned_generator(small):
    import gzip

    from lazyconn.datasets.synthetic._generate import _GENERATOR_VERSION

    assert _GENERATOR_VERSION == 4
    for name, digest in PINNED_V4.items():
        raw = Path(small.data_dir, name).read_bytes()
        if name.endswith(".gz"):
            raw = gzip.decompress(raw)
        assert hashlib.md5(raw).hexdigest() == digest, name


def test_reuses_a_complete_dataset_and_refuses_other_params(small, tmp_path):
    first = make_synthetic_fmri(1, data_dir=tmp_path, **SMALL)
    stamp = Path(first.func[0]).stat().st_mtime_ns
    digest = _md5(first.func[0])
    second = make_synthetic_fmri(1, data_dir=tmp_path, **SMALL)
    assert Path(second.func[0]).stat().st_mtime_ns == stamp
    with pytest.raises(OutputExistsError, match="already holds a synthetic dataset"):
        make_synthetic_fmri(1, data_dir=tmp_path, random_state=3, **SMALL)
    bigger = make_synthetic_fmri(2, data_dir=tmp_path, random_state=3, overwrite=True, **SMALL)
    assert bigger.func[0] == first.func[0]
    assert _md5(bigger.func[0]) != digest
    # overwriting removes the old dataset's files (here sub-02), and only those
    (tmp_path / "notes.txt").write_text("mine")
    make_synthetic_fmri(1, data_dir=tmp_path, overwrite=True, **SMALL)
    assert not (tmp_path / "sub-02").exists()
    assert _md5(first.func[0]) == digest
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_default_data_dir_is_a_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAZYCONN_DATA", str(tmp_path))
    a = make_synthetic_fmri(1, **SMALL)
    assert Path(a.data_dir).parent == tmp_path / "synthetic_fmri"
    b = make_synthetic_fmri(1, **SMALL)
    assert a.data_dir == b.data_dir
    c = make_synthetic_fmri(1, random_state=5, **SMALL)
    assert c.data_dir != a.data_dir


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"n_subjects": 0}, ParameterError, r"n_subjects=0 is not valid"),
        ({"n_subjects": 1.5}, ParameterTypeError, r"n_subjects=1.5 has type float"),
        ({"n_networks": 7}, ParameterError, r"n_networks=7 is not valid; expected an int in \[1"),
        ({"n_timepoints": 10}, ParameterError, r"n_timepoints=10 is too small for 12"),
        ({"resolution": -2}, ParameterError, r"resolution=-2 is not valid"),
        ({"t_r": 0}, ParameterError, r"t_r=0 is not valid"),
        ({"random_state": "a"}, ParameterTypeError, r"random_state='a' has type str"),
        ({"data_dir": 3}, ParameterTypeError, r"data_dir=3 has type int"),
        ({"n_jobs": 0}, ParameterError, r"n_jobs=0 is not valid"),
        ({"nuisance": -1.0}, ParameterError, r"nuisance=-1.0 is not valid; expected a finite"),
    ],
)
def test_parameter_errors(kwargs, error, match, tmp_path):
    params = dict(SMALL, data_dir=tmp_path)
    params.update(kwargs)
    n_subjects = params.pop("n_subjects", 1)
    with pytest.raises(error, match=match):
        make_synthetic_fmri(n_subjects, **params)
    assert not list(tmp_path.iterdir())


# --- the planted truth --------------------------------------------------------------------


def test_planted_truth_is_consistent(small):
    labels = nib.load(small.labels_img)
    maps = nib.load(small.maps)
    assert labels.shape == maps.shape[:3] == (26, 30, 25)
    assert maps.shape[3] == len(small.networks) == 3
    np.testing.assert_array_equal(labels.affine, nib.load(small.func[0]).affine)
    lab = np.asarray(labels.dataobj)
    prob = maps.get_fdata()
    n_regions = len(small.region_names)
    assert n_regions == 12 == len(small.region_networks) == len(small.region_coords)
    assert sorted(np.unique(lab)) == list(range(n_regions + 1))
    assert np.all((prob >= 0) & (prob <= 1))
    # each region's voxels carry exactly its network's map, nothing else
    for k, network in enumerate(small.region_networks, start=1):
        net = small.networks.index(network)
        inside = lab == k
        assert np.all(prob[inside, net] > 0)
        assert np.all(np.delete(prob[inside], net, axis=1) == 0)
    assert np.all(prob[lab == 0] == 0)
    # centres: bilateral pairs mirrored about x = 0, each centre's voxel holds its label
    coords = small.region_coords
    np.testing.assert_array_equal(coords[0::2, 0], -coords[1::2, 0])
    np.testing.assert_array_equal(coords[0::2, 1:], coords[1::2, 1:])
    ijk = np.rint(np.linalg.solve(labels.affine, np.c_[coords, np.ones(len(coords))].T)[:3]).T
    for k, (i, j, kk) in enumerate(ijk.astype(int), start=1):
        assert lab[i, j, kk] == k
    # blobs of one network are separate components of its map (so region extraction splits them)
    from scipy import ndimage

    for net in range(len(small.networks)):
        _, n_components = ndimage.label(prob[..., net] > 0, structure=np.ones((3, 3, 3)))
        assert n_components == 4


def test_planted_correlation_values(small, tmp_path):
    corr = small.region_correlation
    np.testing.assert_array_equal(corr, corr.T)
    assert np.all(np.linalg.eigvalsh(corr) > 0)
    names, nets = small.region_names, small.region_networks
    for i in range(len(names)):
        for j in range(len(names)):
            if i == j:
                expected = 1.0
            elif nets[i] == nets[j] and names[i][:-2] == names[j][:-2]:
                expected = 0.75  # mirrored regions
            elif nets[i] == nets[j]:
                expected = 0.6
            else:
                a, b = small.networks.index(nets[i]), small.networks.index(nets[j])
                expected = 0.6 * small.network_correlation[a, b]
            assert corr[i, j] == pytest.approx(expected)
    full = make_synthetic_fmri(1, n_timepoints=40, resolution=8, data_dir=tmp_path, n_networks=6)
    assert full.networks[2] == "default_mode" and full.networks[4] == "salience"
    assert full.network_correlation[2, 4] == -0.5  # the anti-correlated pair


def test_region_signals_have_exactly_the_planted_correlation():
    from nilearn.signal import clean

    from lazyconn.datasets.synthetic._layout import build_layout
    from lazyconn.datasets.synthetic._timecourses import neural_signals

    layout = build_layout(8.0, 6, 10.0, 0)
    signals = neural_signals(np.random.default_rng(0), 50, 2.0, layout.region_correlation)
    np.testing.assert_allclose(np.corrcoef(signals.T), layout.region_correlation, atol=1e-10)
    # nilearn's detrending keeps them as they are
    detrended = clean(signals, detrend=True, standardize=None)
    np.testing.assert_allclose(detrended, signals - signals.mean(0), atol=1e-10)


# --- realism: nilearn's own pipeline recovers the truth -------------------------------------

CLEANING = ("trans_", "rot_", "a_comp_cor_", "cosine", "framewise_displacement")


@pytest.fixture
def realistic(synthetic_fmri):
    # the shared session fixture: 3 subjects, 100 volumes, 8 mm, 6 networks
    assert len(synthetic_fmri.func) == 3 and len(synthetic_fmri.region_names) == 24
    return synthetic_fmri


def _confounds(path):
    table = pd.read_csv(path, sep="\t").fillna(0)
    return table[[c for c in table.columns if c.startswith(CLEANING)]]


def _recovery(matrices, truth):
    iu = np.triu_indices(len(truth), 1)
    return np.array([np.corrcoef(m[iu], truth[iu])[0, 1] for m in matrices]), np.array(
        [np.abs(m[iu] - truth[iu]).mean() for m in matrices]
    )


@pytest.mark.parametrize("masker_kind", ["labels", "spheres"])
def test_nilearn_recovers_planted_connectome(realistic, masker_kind):
    from nilearn.connectome import ConnectivityMeasure
    from nilearn.maskers import NiftiLabelsMasker, NiftiSpheresMasker

    if masker_kind == "labels":
        masker = NiftiLabelsMasker(realistic.labels_img, standardize="zscore_sample", detrend=True)
    else:
        masker = NiftiSpheresMasker(
            realistic.region_coords, radius=8.0, standardize="zscore_sample", detrend=True
        )
    truth = realistic.region_correlation
    scores = {}
    for cleaned in (True, False):
        series = [
            masker.fit_transform(f, confounds=_confounds(c) if cleaned else None)
            for f, c in zip(realistic.func, realistic.confounds, strict=True)
        ]
        measure = ConnectivityMeasure(kind="correlation", standardize="zscore_sample")
        matrices = measure.fit_transform(series)
        scores[cleaned] = (*_recovery(matrices, truth), *_recovery([measure.mean_], truth))
    r_subject, mae_subject, r_mean, mae_mean = scores[True]
    # measured (3 subjects, 100 volumes, 8 mm): per subject r >= 0.92, group mean r ~ 0.98
    assert r_subject.min() > 0.85
    assert r_mean[0] > 0.95
    assert mae_mean[0] < 0.1
    # without confounds the nuisance dominates: measured r ~ 0.6 (labels), 0.78 (spheres)
    raw_subject, raw_mae, raw_mean, _ = scores[False]
    assert r_mean[0] - raw_mean[0] > 0.1
    assert np.all(r_subject > raw_subject + 0.05)
    assert np.all(mae_subject < 0.6 * raw_mae)


def test_without_nuisance_no_cleaning_is_needed(tmp_path):
    from nilearn.connectome import ConnectivityMeasure
    from nilearn.maskers import NiftiLabelsMasker

    data = make_synthetic_fmri(2, data_dir=tmp_path, nuisance=0.0, **dict(SMALL, n_timepoints=60))
    masker = NiftiLabelsMasker(data.labels_img, standardize="zscore_sample", detrend=True)
    series = [masker.fit_transform(f) for f in data.func]
    matrices = ConnectivityMeasure(kind="correlation").fit_transform(series)
    r, _ = _recovery(matrices, data.region_correlation)
    assert r.min() > 0.97  # measured 0.99: only white noise is left
    # the confounds are still written, the same as with nuisance (aCompCor directions too)
    noisy = make_synthetic_fmri(2, data_dir=tmp_path / "noisy", **dict(SMALL, n_timepoints=60))
    for clean_table, noisy_table in zip(data.confounds, noisy.confounds, strict=True):
        a, b = pd.read_csv(clean_table, sep="\t"), pd.read_csv(noisy_table, sep="\t")
        same = [c for c in a.columns if c not in ("global_signal", "csf", "white_matter")]
        pd.testing.assert_frame_equal(a[same], b[same])


def test_nilearn_epi_mask_finds_the_brain(realistic):
    from nilearn.masking import compute_epi_mask

    epi_mask = compute_epi_mask(realistic.func[0]).get_fdata() > 0
    brain = nib.load(realistic.mask).get_fdata() > 0
    dice = 2 * (epi_mask & brain).sum() / (epi_mask.sum() + brain.sum())
    assert dice > 0.95


@pytest.mark.slow
def test_nilearn_canica_recovers_planted_networks(tmp_path):
    from nilearn.decomposition import CanICA

    # 4 networks: the anti-correlated default_mode/salience pair (networks 5-6) tends to come
    # out of ICA as one bipolar component, so it is left out here.
    data = make_synthetic_fmri(
        6, data_dir=tmp_path, n_timepoints=100, resolution=8, n_networks=4, n_jobs=2
    )
    canica = CanICA(
        n_components=4,
        mask=data.mask,
        smoothing_fwhm=None,
        random_state=0,
        standardize="zscore_sample",
        detrend=True,
    )
    canica.fit(data.func, confounds=[_confounds(c).to_numpy() for c in data.confounds])
    mask = nib.load(data.mask).get_fdata() > 0
    truth = nib.load(data.maps).get_fdata()[mask]
    found = canica.components_img_.get_fdata()[mask]
    similarity = np.abs(np.corrcoef(truth.T, found.T)[:4, 4:])
    best = similarity.argmax(axis=1)
    # measured: best-match spatial correlation 0.75-0.82, one component per network
    assert sorted(best) == [0, 1, 2, 3]
    assert similarity.max(axis=1).min() > 0.6


def test_streams_volume_slabs_with_identical_output(small, tmp_path, monkeypatch):
    import tracemalloc

    from lazyconn.datasets.synthetic import _writers

    # one volume per slab gives byte-identical files (the random streams do not depend on it)
    monkeypatch.setattr(_writers, "_SLAB_BYTES", 1)
    one = make_synthetic_fmri(1, data_dir=tmp_path / "one", **SMALL)
    assert _md5(one.func[0]) == _md5(small.func[0])
    assert _md5(one.confounds[0]) == _md5(small.confounds[0])
    # memory is bounded by the slab, not by the run: 10x more volumes, same peak
    monkeypatch.setattr(_writers, "_SLAB_BYTES", 2 * 2**20)
    peaks = []
    for n_timepoints in (40, 400):
        tracemalloc.start()
        make_synthetic_fmri(
            1, data_dir=tmp_path / str(n_timepoints), **dict(SMALL, n_timepoints=n_timepoints)
        )
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    run_bytes = 26 * 30 * 25 * 400 * 4  # 31 MB; measured peaks: 21 MB for both runs,
    assert peaks[1] < peaks[0] + 0.1 * run_bytes  # mostly reading the 1 mm template


def test_lazyconn_load_reads_the_runs(small):
    import lazyconn

    img = lazyconn.load(small.func[0])
    assert img.t_r == 2.0
    np.testing.assert_array_equal(
        np.asarray(img.data.compute()), nib.load(small.func[0]).get_fdata(dtype=np.float32)
    )


@pytest.mark.parametrize("resolution", [5, 10, 12])
def test_every_region_has_voxels_at_any_resolution(resolution, tmp_path):
    from nilearn.maskers import NiftiLabelsMasker

    data = make_synthetic_fmri(
        1, data_dir=tmp_path, resolution=resolution, n_timepoints=30, n_networks=6
    )
    img = nib.load(data.func[0])
    # nilearn's template grid: the 1 mm box (197, 233, 189) in steps of `resolution`, + 1 voxel
    assert img.shape[:3] == tuple(int(np.ceil((n - 1) / resolution)) + 1 for n in (197, 233, 189))
    labels = np.asarray(nib.load(data.labels_img).dataobj)
    assert sorted(np.unique(labels)) == list(range(25))  # coarse grids keep a voxel per region
    series = NiftiLabelsMasker(data.labels_img, standardize=None).fit_transform(data.func[0])
    assert series.shape == (30, 24)
    assert np.isfinite(series).all() and (series > 0).all()
