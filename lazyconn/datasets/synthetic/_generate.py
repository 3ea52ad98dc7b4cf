"""``make_synthetic_fmri``: parameters, file names, the dataset cache, and the Bunch returned."""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from lazyconn._utils import check_int, check_positive, check_type, is_path_like
from lazyconn.datasets.synthetic import _writers
from lazyconn.datasets.synthetic._layout import build_layout
from lazyconn.datasets.synthetic._truth import NETWORKS
from lazyconn.exceptions import OutputExistsError, ParameterError, ParameterTypeError

# Bump when the generated data change, so cached datasets are regenerated.
_GENERATOR_VERSION = 4

SPACE = "MNI152NLin2009cAsym"
TASK = "rest"

_DESCRIPTION = (
    "Synthetic resting-state fMRI made by lazyconn.datasets.make_synthetic_fmri, laid out like "
    "fMRIPrep derivatives, with planted networks of bilateral regions and a known "
    "region-to-region correlation matrix (see the function's docstring)."
)


def make_synthetic_fmri(
    n_subjects: int = 10,
    *,
    n_timepoints: int = 100,
    resolution: float = 4,
    t_r: float = 2.0,
    n_networks: int = 6,
    region_radius: float = 10.0,
    nuisance: float = 1.0,
    random_state=0,
    data_dir=None,
    overwrite: bool = False,
    n_jobs: int = 1,
    all_confounds: bool = False,
) -> Bunch:
    """Write synthetic resting-state fMRI with a planted connectome, laid out like fMRIPrep.

    Each subject gets a 4-D float32 BOLD run on the MNI ICBM152 grid at ``resolution`` mm
    (the grid of ``nilearn.datasets.load_mni152_template(resolution)``), non-zero inside the
    template's brain mask, and an fMRIPrep-like confounds table. The data contain a known
    ground truth (networks of bilateral regions with a known correlation matrix) buried under
    realistic nuisance signals that the confounds describe, so a correct pipeline recovers the
    truth and cleaning with the confounds measurably helps.

    Parameters
    ----------
    n_subjects : int, default=10
        Number of subjects (``sub-01``, ``sub-02``...; 3 digits from 100 subjects).
    n_timepoints : int, default=100
        Volumes per run. Must be at least ``n_regions + 3`` (so the planted correlation can be
        exact; ``n_regions = 4 * n_networks``).
    resolution : float, default=4
        Voxel size in mm. 4 mm gives shape (50, 59, 48) like nilearn's development dataset
        grid, 8 mm (26, 30, 25) for quick tests.
    t_r : float, default=2.0
        Repetition time in seconds, written in the header (pixdim[4], units mm and s).
    n_networks : int, default=6
        Number of planted networks, the first ones of :data:`NETWORKS` (1 to 6): visual,
        somatomotor, default_mode, frontoparietal, salience, limbic.
    region_radius : float, default=10.0
        Radius (mm) of each planted region. Its voxels carry the region's signal with a
        Gaussian weight of sigma ``0.6 * region_radius``, cut at the radius. Up to ~14 mm the
        regions stay apart (a voxel between two regions goes to the nearer one).
    nuisance : float, default=1.0
        Scale of the nuisance signals (motion artifacts, physiology, drift) in the voxels.
        0 gives clean data (the confounds files are still written); values below 1 make
        voxel-level decompositions of uncleaned data easier (see Notes).
    random_state : int, numpy Generator or RandomState, or None, default=0
        Seed. Subject ``i`` uses a seed derived from it and ``i``, so the same seed gives
        byte-identical files, and the first subjects do not depend on ``n_subjects``.
    data_dir : str or pathlib.Path, optional
        Root folder of the dataset. Default: ``$LAZYCONN_DATA/synthetic_fmri/<key>`` (else
        ``~/lazyconn_data/...``) where ``<key>`` hashes the parameters. A folder already holding
        a complete dataset with the same parameters is reused without writing anything.
    overwrite : bool, default=False
        Regenerate into a ``data_dir`` that holds a dataset made with other parameters (else
        :class:`~lazyconn.exceptions.OutputExistsError`).
    n_jobs : int, default=1
        Subjects written in parallel (threads; -1 = all CPUs). Files do not depend on it.
    all_confounds : bool, default=False
        Also write the columns nilearn's ``load_confounds`` strategies read
        (:mod:`lazyconn.interfaces.fmriprep`): ``*_power2``, ``*_derivative1`` and
        ``*_derivative1_power2`` of the motion parameters, ``global_signal``, ``csf`` and
        ``white_matter``; ``dvars`` and ``std_dvars`` (standardized by the run's median
        DVARS, where fMRIPrep uses an AR(1) expectation); ``a_comp_cor_06``-``07`` (white
        matter), ``08``-``09`` (CSF) and ``t_comp_cor_00``-``02``; ``aroma_motion_01``-``03``
        (the motion's principal time courses: no ICA-AROMA is run and no
        ``desc-smoothAROMAnonaggr`` image is written); and the JSON sidecar
        ``..._desc-confounds_timeseries.json`` giving each CompCor column's ``Mask``
        (``combined``, ``WM``, ``CSF``). Off by default, so the basic table keeps its 22
        columns (fewer regressors than volumes in short test runs).

    Returns
    -------
    data : :class:`sklearn.utils.Bunch`
        Dictionary-like object, as nilearn's fetchers return, with:

        - ``func``: list of str, paths of the BOLD runs
          ``sub-XX/func/sub-XX_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz``.
        - ``confounds``: list of str, paths of ``sub-XX_task-rest_desc-confounds_timeseries.tsv``:
          columns ``global_signal, csf, white_matter, framewise_displacement,
          a_comp_cor_00`` ... ``a_comp_cor_05``, ``cosineXX`` (discrete cosine basis, 128 s
          cut-off, as many as fMRIPrep writes), then ``trans_x, trans_x_derivative1, trans_y``
          ... ``rot_z_derivative1``. As in fMRIPrep, ``framewise_displacement`` and the
          ``*_derivative1`` columns are ``n/a`` in the first row (fill them before using the
          table as nilearn confounds, e.g. ``pd.read_csv(path, sep="\\t").fillna(0)``).
        - ``reduced_confounds``: list of str, paths of
          ``sub-XX_task-rest_desc-reducedConfounds_timeseries.tsv``: the 15 columns
          nilearn's ``fetch_development_fmri(reduce_confounds=True)`` keeps (``trans_x`` ...
          ``rot_z``, ``framewise_displacement``, ``a_comp_cor_00`` ... ``05``, ``csf``,
          ``white_matter``), with the first-row ``n/a`` replaced by 0, so the paths can be
          passed as ``confounds=`` to nilearn's or lazyconn's maskers as they are.
        - ``mask``: str, path of the brain mask (uint8, also written per subject as
          ``..._desc-brain_mask.nii.gz``); nilearn's ``load_mni152_brain_mask(resolution)``.
        - ``t_r``: float, the repetition time.
        - ``subjects``: list of str, subject ids.
        - ``maps``: str, path of the planted network maps, a 4-D float32 image with one
          volume per network in [0, 1]: the weight with which each voxel carries its
          network's signal (zero outside the network's regions).
        - ``labels_img``: str, path of the planted regions, a 3-D int32 image, 0 background,
          ``k`` for region ``k`` (1-based, the order of ``region_names``).
        - ``networks``: list of str, network names (the volumes of ``maps``).
        - ``region_names``: list of str, ``"<network>_<blob>_<L|R>"`` for labels 1..n.
        - ``region_networks``: list of str, the network of each region.
        - ``region_coords``: (n_regions, 3) ndarray, planted region centres in MNI mm
          (usable as ``NiftiSpheresMasker`` seeds).
        - ``region_correlation``: (n_regions, n_regions) ndarray, the planted correlation of
          the region signals (see Notes).
        - ``network_correlation``: (n_networks, n_networks) ndarray.
        - ``data_dir``: str, the dataset root. It also holds ``dataset_description.json``
          (parameters and file list, written last: a dataset without it is incomplete) and,
          in ``truth/``, ``regions.tsv`` (index, name, network, x, y, z) and
          ``region_correlation.tsv``.
        - ``description``: str.

    Notes
    -----
    The planted truth. Each network has 4 regions: two blobs per hemisphere, mirrored about
    x = 0 (left region first). Region signals are built per subject so that their sample
    correlation equals ``region_correlation`` exactly, after removing a constant and a linear
    trend (nilearn's ``detrend``): 1 on the diagonal, 0.75 between mirrored regions, 0.6
    between other regions of one network, and ``0.6 * network_correlation`` between networks,
    where the network correlation is 0.3 for visual-somatomotor, default_mode-limbic and
    frontoparietal-salience, -0.5 (anti-correlated) for default_mode-salience, else 0.
    Region signals have a BOLD-like autocorrelation (Gaussian smoothing over 2 s). ICA tends
    to return the anti-correlated pair as one bipolar component.

    Voxel ``v`` at time ``t`` holds ``B_v (1 + 0.03 w_v s_r(t))`` + nuisance + noise, where
    ``B_v`` is a positive baseline (400 + 1000 x template: ~600-1400 in the brain, 0 outside),
    ``w_v`` the region weight (the ``maps`` value: a Gaussian of sigma ``0.6 *
    region_radius`` cut at ``region_radius``) and ``s_r`` the unit-variance signal of the
    voxel's region. Nuisance, with spatially varying weights: head motion through the image
    gradient (``I(x - d) ~ I(x) - grad I . d`` for the six rigid-body parameters, strongest at
    tissue edges), an intensity drop proportional to framewise displacement, a global-like
    (1 %, stronger in CSF) and a spatially structured (0.6 %) physiological signal, and a
    linear plus half-cosine drift. Noise is white, 0.6-1 % of the baseline. Values are
    rounded to multiples of 1/16 (far below the noise; it makes compression faster).

    The confounds are what fMRIPrep would measure: the motion parameters (mm, rad) and their
    backward differences, Power's framewise displacement (head radius 50 mm), the means of
    the written data over the brain (``global_signal``), dark (CSF) and bright (white matter)
    template voxels, and aCompCor: the top 6 temporal components (unit norm) of the
    high-passed nuisance in white matter + CSF voxels outside the regions (computed from the
    noise-free nuisance, which has the same principal directions as the noisy data in
    expectation). Together with ``cosineXX`` and ``framewise_displacement`` they span the
    nuisance exactly, so cleaning with them recovers the planted correlation up to sampling
    error; ``global_signal`` also contains the neural signals (regressing it shifts
    correlations, as in real data). With 100 volumes at 8 mm, nilearn's
    ``NiftiLabelsMasker`` + ``ConnectivityMeasure`` recovers ``region_correlation`` with a
    correlation of ~0.92 per subject and ~0.98 for the group mean (~0.6 without confounds).

    The nuisance is widespread while the planted regions are small (~5 % of the brain), so
    voxel-level decompositions (``CanICA``, ``DictLearning``) of *uncleaned* data find the
    nuisance rather than the networks: pass ``confounds=data.reduced_confounds`` (or the
    cleaned tables) to their ``fit``, or lower ``nuisance``. With confounds, ``CanICA`` with
    ``n_components=4`` on 6 subjects x 100 volumes at 8 mm (``n_networks=4``) matches every
    planted map with a spatial correlation of ~0.75-0.8.

    Memory stays small: one subject and one slab of volumes at a time (64 MB budget).
    Generating 20 subjects at 4 mm x 100 volumes costs ~9 s of CPU (half of it compression);
    ``n_jobs=2`` writes two subjects at a time.

    lazyconn-specific (nilearn has no such generator).
    """
    params, n_jobs = _check_params(**locals())  # first statement: locals() are the arguments
    root = _dataset_root(data_dir, params)
    paths = _Paths.of(root, n_subjects, resolution, all_confounds)
    layout = build_layout(
        float(resolution), n_networks, float(region_radius), params["seed"], float(nuisance)
    )
    found = _read_description(paths.description)
    if found is None or found["Parameters"] != params:
        if found is not None:
            if not overwrite:
                raise OutputExistsError(
                    f"data_dir={str(root)!r} already holds a synthetic dataset made with other "
                    f"parameters ({found['Parameters']!r}); pass overwrite=True or another "
                    "data_dir."
                )
            _remove_dataset(root, paths.description, found["Files"])
        _write_dataset(layout, paths, params, n_jobs)
    return _bunch(layout, paths, t_r)


def _seed_from(random_state):
    if random_state is None:
        return int(np.random.SeedSequence().entropy % 2**63)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**63))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31))
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ParameterError(
                f"random_state={random_state!r} is not valid; expected an int >= 0."
            )
        return int(random_state)
    raise ParameterTypeError(
        f"random_state={random_state!r} has type {type(random_state).__name__}; expected an "
        "int, a numpy Generator or RandomState, or None."
    )


def _check_params(
    *, n_subjects, n_timepoints, resolution, t_r, n_networks, region_radius, nuisance, **others
):
    """Validate the parameters; return the recorded parameters and the number of threads."""
    random_state, overwrite, n_jobs = others["random_state"], others["overwrite"], others["n_jobs"]
    n_subjects = check_int("n_subjects", n_subjects, low=1, type_error=ParameterTypeError)
    n_networks = check_int(
        "n_networks", n_networks, low=1, high=len(NETWORKS), type_error=ParameterTypeError
    )
    n_regions = 4 * n_networks
    n_timepoints = check_int("n_timepoints", n_timepoints, low=1, type_error=ParameterTypeError)
    if n_timepoints < n_regions + 3:
        raise ParameterError(
            f"n_timepoints={n_timepoints!r} is too small for {n_regions} planted regions; "
            f"expected at least {n_regions + 3} (or fewer n_networks)."
        )
    check_positive("resolution", resolution)
    check_positive("t_r", t_r)
    check_positive("region_radius", region_radius)
    check_positive("nuisance", nuisance, strict=False)
    check_type("overwrite", overwrite, bool, "a bool")
    n_jobs = check_int("n_jobs", n_jobs, low=-1, type_error=ParameterTypeError)
    if n_jobs == 0:
        raise ParameterError("n_jobs=0 is not valid; expected a positive int or -1 (all CPUs).")
    if n_jobs == -1:
        n_jobs = os.cpu_count() or 1
    params = {
        "generator_version": _GENERATOR_VERSION,
        "n_subjects": n_subjects,
        "n_timepoints": n_timepoints,
        "resolution": float(resolution),
        "t_r": float(t_r),
        "n_networks": n_networks,
        "region_radius": float(region_radius),
        "nuisance": float(nuisance),
        "seed": _seed_from(random_state),
    }
    check_type("all_confounds", others["all_confounds"], bool, "a bool")
    if others["all_confounds"]:  # only then: datasets made without it keep their key
        params["all_confounds"] = True
    return params, n_jobs


def _default_data_dir() -> Path:
    return Path(os.environ.get("LAZYCONN_DATA", Path.home() / "lazyconn_data"))


def _dataset_root(data_dir, params):
    """``data_dir``, or a cache folder keyed by a hash of the parameters."""
    if data_dir is None:
        key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
        return _default_data_dir() / "synthetic_fmri" / key
    if is_path_like(data_dir):
        return Path(data_dir)
    raise ParameterTypeError(
        f"data_dir={data_dir!r} has type {type(data_dir).__name__}; expected a path or None."
    )


def _subject_ids(n_subjects):
    width = max(2, len(str(n_subjects)))
    return [f"sub-{i:0{width}d}" for i in range(1, n_subjects + 1)]


@dataclass(frozen=True)
class _Paths:
    """Every file of a dataset, named as fMRIPrep names its derivatives."""

    root: Path
    subjects: list[str]
    func: list[Path]
    confounds: list[Path]
    sub_masks: list[Path]
    sidecars: list[Path]
    truth_dir: Path
    mask: Path
    maps: Path
    labels: Path
    description: Path

    @classmethod
    def of(cls, root, n_subjects, resolution, all_confounds=False):
        subjects = _subject_ids(n_subjects)
        func_dirs = [root / sub / "func" for sub in subjects]
        func = [
            d / f"{s}_task-{TASK}_space-{SPACE}_desc-preproc_bold.nii.gz"
            for d, s in zip(func_dirs, subjects, strict=True)
        ]
        confounds = [
            d / f"{s}_task-{TASK}_desc-confounds_timeseries.tsv"
            for d, s in zip(func_dirs, subjects, strict=True)
        ]
        sub_masks = [
            d / f"{s}_task-{TASK}_space-{SPACE}_desc-brain_mask.nii.gz"
            for d, s in zip(func_dirs, subjects, strict=True)
        ]
        truth_dir = root / "truth"
        grid = f"space-{SPACE}_res-{resolution:g}mm"
        return cls(
            root=root,
            subjects=subjects,
            func=func,
            confounds=confounds,
            sub_masks=sub_masks,
            sidecars=[_writers.sidecar_path(c) for c in confounds] if all_confounds else [],
            truth_dir=truth_dir,
            mask=truth_dir / f"{grid}_desc-brain_mask.nii.gz",
            maps=truth_dir / f"{grid}_desc-networks_probseg.nii.gz",
            labels=truth_dir / f"{grid}_desc-regions_dseg.nii.gz",
            description=root / "dataset_description.json",
        )

    @property
    def reduced_confounds(self):
        return [_writers.reduced_path(c) for c in self.confounds]

    @property
    def files(self):
        """The files listed in ``dataset_description.json``, in the order written there."""
        truth = [
            self.mask,
            self.maps,
            self.labels,
            self.truth_dir / "regions.tsv",
            self.truth_dir / "region_correlation.tsv",
        ]
        return (
            truth
            + self.func
            + self.confounds
            + self.reduced_confounds
            + self.sub_masks
            + self.sidecars
        )


def _read_description(path: Path) -> dict | None:
    """Parameters and files of the dataset recorded in ``path`` (None if there is none)."""
    if not path.exists():
        return None
    try:
        found = json.loads(path.read_text())["GeneratedBy"][0]
        return {"Parameters": found["Parameters"], "Files": list(found["Files"])}
    except (ValueError, KeyError, IndexError, TypeError):
        return {"Parameters": None, "Files": []}


def _remove_dataset(root, description_path, files):
    """Delete a previous dataset's files (nothing else) and the folders they leave empty."""
    description_path.unlink()  # the folder is incomplete until the end
    for name in files:
        (root / name).unlink(missing_ok=True)
        for parent in (root / name).parents:
            if parent == root or any(parent.iterdir()):
                break
            parent.rmdir()


def _write_dataset(layout, paths, params, n_jobs):
    """Write the truth and every subject, then the description (which marks it complete)."""
    _writers.write_truth(layout, paths.truth_dir, paths.mask, paths.maps, paths.labels)
    n_subjects = len(paths.subjects)
    seeds = np.random.SeedSequence(params["seed"]).spawn(n_subjects)

    def write(k):
        paths.func[k].parent.mkdir(parents=True, exist_ok=True)
        _writers.write_image(paths.sub_masks[k], layout.mask.astype(np.uint8), layout.affine)
        _writers.write_subject(
            layout,
            params["n_timepoints"],
            params["t_r"],
            seeds[k],
            paths.func[k],
            paths.confounds[k],
            bool(paths.sidecars),
        )

    # zlib and numpy release the GIL, so threads overlap compression and generation
    with ThreadPoolExecutor(max_workers=min(n_jobs, n_subjects)) as pool:
        for future in [pool.submit(write, k) for k in range(n_subjects)]:
            future.result()
    description = {
        "Name": "lazyconn synthetic resting-state fMRI",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": "lazyconn.datasets.make_synthetic_fmri",
                "Parameters": params,
                "Files": [str(f.relative_to(paths.root)) for f in paths.files],
            }
        ],
    }
    paths.description.write_text(json.dumps(description, indent=2))


def _bunch(layout, paths, t_r):
    return Bunch(
        func=[str(p) for p in paths.func],
        confounds=[str(p) for p in paths.confounds],
        reduced_confounds=[str(p) for p in paths.reduced_confounds],
        mask=str(paths.mask),
        t_r=float(t_r),
        subjects=list(paths.subjects),
        maps=str(paths.maps),
        labels_img=str(paths.labels),
        networks=list(layout.network_names),
        region_names=list(layout.region_names),
        region_networks=list(layout.region_networks),
        region_coords=layout.region_coords.copy(),
        region_correlation=layout.region_correlation.copy(),
        network_correlation=layout.network_correlation.copy(),
        data_dir=str(paths.root),
        description=_DESCRIPTION,
    )
