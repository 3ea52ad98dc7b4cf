"""Canonical ICA (nilearn's ``CanICA``) over lazily computed per-subject reductions."""

from __future__ import annotations

import numbers
from operator import itemgetter

import numpy as np

from lazyconn._utils import warn
from lazyconn.decomposition._base import CoreThreads, _BaseDecomposition, _check_positive_int
from lazyconn.decomposition._multi_pca import group_pca
from lazyconn.exceptions import ParameterError, ParameterTypeError
from lazyconn.group._engine import ONE_BLAS_THREAD


class CanICA(_BaseDecomposition):
    """Canonical Independent Component Analysis (nilearn's ``CanICA``), out of core.

    Each subject's run is read, smoothed, masked and cleaned (the embedded
    ``MultiNiftiMasker``) and reduced to its ``n_components`` leading singular vectors in
    one task per subject (chunk by chunk, never holding the run); the group step then runs
    scikit-learn's functions on the stacked reductions exactly as nilearn 0.14.1 does: CCA
    normalisation, ``randomized_svd``, ``fastica`` from ``n_init`` seeds (the run with the
    sparsest maps kept), thresholding and sign flips.

    Parameters
    ----------
    mask : 3-D image, NiftiMasker or MultiNiftiMasker, optional
        Mask (or masker) of the data; computed from the runs with ``mask_strategy`` if None.
        A masker's own parameters are used, with nilearn's "Overriding provided-default
        estimator parameters" UserWarning listing those that differ from the estimator's.
        A plain ``NiftiMasker`` is accepted too (nilearn 0.14.1 requires a MultiNiftiMasker).
    n_components : int, default=20
        Number of components to extract.
    smoothing_fwhm : float, optional, default=6
        Gaussian smoothing of the runs, in mm.
    do_cca : bool, default=True
        Scale every subject's reduced rows to unit norm before the group PCA.
    threshold : None, 'auto' or float, default='auto'
        None: no thresholding. 'auto': keep ``n_voxels`` entries over all maps (ratio 1).
        A float ratio in [0, n_components]: keep ``ratio * n_voxels`` entries.
    n_init : int, default=10
        Number of FastICA restarts.
    random_state : int, RandomState or None, default=None
        Seed of the per-subject and group randomized SVDs and of the FastICA seeds.
    standardize : {'zscore_sample', 'psc', True, False, None}, default=True
        Temporal standardisation of each voxel (True is 'zscore_sample').
    standardize_confounds : bool, default=True
        z-score the confounds before regressing them out.
    detrend : bool, default=True
        Remove linear trends.
    low_pass, high_pass : float, optional
        Butterworth cut-off frequencies in Hz (need ``t_r``).
    t_r : float, optional
        Repetition time in seconds.
    dtype : dtype, 'auto' or None, optional
        Data type of ``transform``'s output (float dtypes also apply to the fit, as nilearn).
    target_affine, target_shape : optional
        Resample the mask (and the runs) to this grid.
    mask_strategy : str, default='epi'
        'background', 'epi', 'whole-brain-template', 'gm-template' or 'wm-template'.
    mask_args : dict, optional
        Extra arguments of the mask-computing function.
    memory : str or path, optional
        lazyconn: nothing is cached with joblib; a path is where the scratch files of the
        group step (the stacked reductions, written while the subjects run; DictLearning's
        voxel-major training file) are written (default: the temporary directory; removed
        at the end of ``fit``, on failure too).
    memory_level : int, default=0
        Accepted for compatibility; no effect.
    n_jobs : int, default=1
        Accepted for compatibility; subjects run in parallel on dask's scheduler (see
        ``client``), FastICA restarts sequentially.
    verbose : int, default=0
        > 0: nilearn's ``[Class.fit]`` step lines and a progress bar of subjects, on stderr
        (nilearn prints its lines on stdout); the embedded masker gets ``verbose - 1``.
    client : None, "local", str or distributed.Client, optional
        lazyconn only, keyword. Where the per-subject reductions run: None: dask's current
        scheduler (threads, or your ``distributed.Client`` when it is dask's default);
        "local": a ``LocalCluster`` of ``n_workers`` processes started
        for ``fit``; an address or a ``distributed.Client``: that cluster.
    n_workers : int, optional
        lazyconn only, keyword. Workers of ``client="local"`` (default: the usable cores).
    memory_budget : int, optional
        lazyconn only, keyword. Bytes up to which the stacked reductions (n_subjects x
        n_components, V) are held in memory for the group step (default
        ``lazyconn.config.DECOMPOSITION_MEMORY_BUDGET``, 32 MiB: the seeds' 20 subjects at
        4 mm take 18 MB). While the subjects run, the reductions are written to a scratch
        file in any case (in ``memory``), so that the stack does not add to their memory; a
        stack within the budget is then read back whole, and a larger one is never held:
        the group step reads it in column blocks of a few MiB (see Notes), so that its
        memory does not grow with the number of subjects.
    cache_dir : str or path, optional
        lazyconn only, keyword. A results store (as ``lazyconn.group.GroupConnectome``'s)
        of the per-subject reductions: a later ``fit`` reads back every subject whose run,
        confounds, mask, cleaning parameters, ``n_components`` and random draws are
        unchanged, and computes only the others. (nilearn's ``memory`` joblib cache plays
        this role there; here ``memory`` only places the out-of-core stack.)

    Attributes
    ----------
    components_ : numpy.ndarray (n_components, n_voxels)
        The ICA maps, thresholded, peak positive.
    components_img_ : nibabel.Nifti1Image
        ``components_`` as a 4-D image (one component per volume).
    variance_ : numpy.ndarray (n_components,)
        Singular values of the group PCA.
    masker_ : MultiNiftiMasker
        The fitted masker.
    mask_img_ : nibabel.Nifti1Image
        The mask.
    maps_masker_ : NiftiMapsMasker
        Used by ``transform`` and ``inverse_transform``.
    n_elements_ : int
        Number of components.
    n_cached_ : int
        lazyconn only: subjects whose reduction was read back from ``cache_dir``.
    timings_ : dict
        lazyconn only: seconds per stage of ``fit`` (``mask``, ``reductions``: the
        per-subject pass, ``group``) and of the per-subject pass (``compute``...).

    Notes
    -----
    Differences from nilearn 0.14.1, all deliberate:

    - Per-subject reduction: the same numbers as nilearn's (``_fast_svd``: scikit-learn's
      ``randomized_svd`` of the run with 7 or 4 power iterations, or an exact SVD for small
      problems), computed differently. nilearn holds each whole (T, V) run and multiplies
      it ~16 times; lazyconn accumulates the run's (T, T) Gram matrix over voxel chunks,
      replays the randomized range finder in T-space from the same random test matrix
      (which depends only on T, not on the voxels), then projects the run once (a second
      pass, or the same pass for runs streamed or under
      ``lazyconn.config.DECOMPOSITION_SUBJECT_BYTES``).
      The Gram route was chosen over ``dask.array.linalg.tsqr`` / ``svd_compressed``
      because T is small: one T x T matrix per chunk sum, no tall-skinny QR of a (V, T)
      array and no extra passes over the data for the power iterations. The reductions
      equal nilearn's to float32 rounding (nilearn computes in float32, lazyconn in
      float64), and the components match stock nilearn's with |spatial r| > 0.999 on the
      tests' planted-network study; CanICA's also on the seeds' 20-subject study (4 mm,
      168 volumes: >= 0.97 without confounds, 1.0 with). DictLearning's there match only
      in part, because nilearn's own group step (``dict_learning_online``) is unstable on
      that study: a relative perturbation of 1e-6 of the stacked reductions moves some of
      nilearn's maps to |r| < 0.1 of its unperturbed ones (1e-7 does not), and lazyconn's
      cleaned runs differ from nilearn's by float32 rounding (about one ulp); there the
      components can also come in another order than nilearn's (every comparison matches
      them one to one, Hungarian), and so can the regions extracted from them. lazyconn's
      maps recover the planted networks at least as well
      (``benchmarks/README.md``). The random
      draws follow nilearn's with ``n_jobs=1``: an int ``random_state`` gives every subject
      the same test matrix; a ``RandomState`` (or None, numpy's global one) advances from
      subject to subject in input order, wherever the subjects run. (A randomized SVD
      only approximates the run's leading singular vectors on noise-dominated runs;
      lazyconn keeps nilearn's approximation so that changing the import changes nothing.)
    - Above ``memory_budget`` the group PCA reads the stack from its scratch file in column
      blocks (``lazyconn.decomposition._stack.STACK_BLOCK_BYTES``, 4 MiB): the CCA norms,
      then scikit-learn's ``randomized_svd`` replayed step by step (the same random test
      matrix from the same generator, LU-normalised power iterations, QR, SVD and sign
      flips), each product with the stack summed over the blocks (the CCA scaling applied
      to the small factors), 9 reads of the stack in all. The components agree with the in-memory path's to float rounding (summed in
      another order), and the generator is left where scikit-learn leaves it, so FastICA's
      seeds are the same.
    - The group step runs on one BLAS thread, as the per-subject reductions do, so the
      components do not depend on the number of cores. nilearn's group SVD uses every
      BLAS thread, whose count changes its last bits; DictLearning's online learning can
      amplify them into different maps.
    - ``n_components`` larger than a run's length warns (nilearn keeps the run's length
      silently); larger than all runs together is an error.
    - A run that is constant inside the mask warns, naming it.
    - On glibc, ``fit`` fixes malloc's mmap threshold of the process (and of the worker
      processes running subjects) at ``lazyconn.config.MALLOC_MMAP_THRESHOLD`` (32 MiB), so
      that freed memory returns to the system instead of staying in each thread's heap
      (see that setting; None leaves malloc alone).
    """

    def __init__(
        self,
        mask=None,
        n_components=20,
        smoothing_fwhm=6,
        do_cca=True,
        threshold="auto",
        n_init=10,
        random_state=None,
        standardize=True,
        standardize_confounds=True,
        detrend=True,
        low_pass=None,
        high_pass=None,
        t_r=None,
        dtype=None,
        target_affine=None,
        target_shape=None,
        mask_strategy="epi",
        mask_args=None,
        memory=None,
        memory_level=0,
        n_jobs=1,
        verbose=0,
        *,
        client=None,
        n_workers=None,
        memory_budget=None,
        cache_dir=None,
    ):
        self.mask = mask
        self.n_components = n_components
        self.smoothing_fwhm = smoothing_fwhm
        self.do_cca = do_cca
        self.threshold = threshold
        self.n_init = n_init
        self.random_state = random_state
        self.standardize = standardize
        self.standardize_confounds = standardize_confounds
        self.detrend = detrend
        self.low_pass = low_pass
        self.high_pass = high_pass
        self.t_r = t_r
        self.dtype = dtype
        self.target_affine = target_affine
        self.target_shape = target_shape
        self.mask_strategy = mask_strategy
        self.mask_args = mask_args
        self.memory = memory
        self.memory_level = memory_level
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.client = client
        self.n_workers = n_workers
        self.memory_budget = memory_budget
        self.cache_dir = cache_dir

    def _check_params(self):
        _check_threshold(self.threshold, self.n_components)
        _check_positive_int("n_init", self.n_init)
        if not isinstance(self.do_cca, (bool, np.bool_)):
            raise ParameterTypeError(
                f"do_cca={self.do_cca!r} has type {type(self.do_cca).__name__}; expected "
                "True or False."
            )

    def _raw_fit(self, data):
        """Group PCA then ICA on the stacked reductions ``data`` (N, V)."""
        components, self.variance_ = group_pca(
            data, self.n_components, self.do_cca, self.random_state
        )
        self.components_ = components
        self._unmix_components(components)
        return self

    def _unmix_components(self, components):
        """nilearn's ``CanICA._unmix_components``: FastICA restarts, sparsest kept,
        threshold, peak-positive signs."""
        from scipy.stats import scoreatpercentile
        from sklearn.decomposition import fastica
        from sklearn.utils import check_random_state

        rng = check_random_state(self.random_state)
        seeds = rng.randint(np.iinfo(np.int32).max, size=self.n_init)
        # FastICA is unstable in float32 (nilearn's note): float64.
        u = components.T.astype(np.float64)
        # One BLAS thread: FastICA's products and its whitening SVD are (n_components, V),
        # too small to share (on 2 cores, 2 OpenBLAS threads took 1.5-10x longer).
        with ONE_BLAS_THREAD, _Cube() as cube:
            results = (
                fastica(u, whiten="arbitrary-variance", fun=cube, random_state=seed)[2].T
                for seed in seeds
            )
            ica_maps, _ = min(
                ((m, np.sum(np.abs(m), axis=1).max()) for m in results), key=itemgetter(-1)
            )
        ratio = None
        if isinstance(self.threshold, float):
            ratio = self.threshold
        elif self.threshold == "auto":
            ratio = 1.0
        if ratio is not None:
            abs_maps = np.abs(ica_maps)
            percentile = 100.0 - (100.0 / len(ica_maps)) * ratio
            if percentile <= 0:
                warn(
                    f"CanICA obtained a critical threshold (= {percentile} percentile): no "
                    "threshold is applied. Decrease threshold or adjust n_components."
                )
            else:
                cutoff = scoreatpercentile(abs_maps, percentile)
                ica_maps[abs_maps < cutoff] = 0.0
        self.components_ = ica_maps.astype(components.dtype)
        for component in self.components_:
            if component.max() < -component.min():
                component *= -1


class _Cube(CoreThreads):
    """scikit-learn's FastICA nonlinearity ``fun="cube"``, ``(x**3, (3 * x**2).mean(axis=-1))``
    on the (n_components, n_voxels) projections, the same numbers, with the cubes (numpy's
    ``pow``, most of FastICA's time) computed a band of rows per thread on the usable cores
    (numpy releases the GIL; each element is the same ``pow``). A context manager: its
    threads live for one ``_unmix_components``, all restarts."""

    def __call__(self, x):
        cubes = np.empty_like(x)

        def cube(rows):
            band = slice(rows[0], rows[-1] + 1)
            np.power(x[band], 3, out=cubes[band])

        self.map(cube, np.arange(len(x)))
        return cubes, (3 * x**2).mean(axis=-1)


def _check_threshold(threshold, n_components):
    if threshold is None or (isinstance(threshold, str) and threshold == "auto"):
        return
    if isinstance(threshold, float):
        if threshold > n_components:
            raise ParameterError(
                "Threshold must not be higher than number of maps. Number of maps is "
                f"{n_components} and you provided threshold={threshold!r}."
            )
        if threshold < 0:
            raise ParameterError(f"threshold={threshold!r} is negative; expected >= 0.")
        return
    hint = (
        " (an int: write it as a float, e.g. 2.0)" if isinstance(threshold, numbers.Number) else ""
    )
    raise ParameterError(
        f"Threshold must be None, 'auto' or float. You provided threshold={threshold!r} of type "
        f"{type(threshold).__name__}{hint}."
    )
