"""
Group connectomes of a whole study, in parallel and cached
==========================================================

nilearn computes a group connectome with a loop over subjects::

    time_series = [masker.fit_transform(img, confounds=c) for img, c in zip(func, confounds)]
    measure = ConnectivityMeasure(kind="correlation")
    matrices = measure.fit_transform(time_series)

:class:`lazyconn.group.GroupConnectome` does the same as one dask graph: each subject's
chain (read -> clean -> extract -> matrix) runs in parallel on any dask scheduler (threads,
a ``LocalCluster``, a remote cluster), the matrices are reduced in a tree to the group mean
(the geometric mean for ``kind="tangent"``), and every subject's result is kept in a results
store, so a second run (or a run after a crash) computes only what is missing.

The synthetic study has a planted ground truth: networks of bilateral regions whose signals
have a known correlation. We extract the signals of spheres at the planted region centres and
check how well the group matrix recovers the truth, with and without the fMRIPrep confounds.

Run ``python examples/group_connectome.py`` (``LAZYCONN_EXAMPLES_SMALL=1`` for a quick run).
"""

import os
import time
from pathlib import Path

import numpy as np

from lazyconn import datasets
from lazyconn.connectome import ConnectivityMeasure
from lazyconn.group import GroupConnectome
from lazyconn.interfaces.fmriprep import load_confounds
from lazyconn.maskers import NiftiSpheresMasker

#: fMRIPrep confounds by noise component (nilearn's ``load_confounds``): high-pass cosines,
#: the 6 motion parameters, white-matter and CSF means, anatomical CompCor.
DENOISE = {"strategy": ("high_pass", "motion", "wm_csf", "compcor"), "motion": "basic"}


def off_diagonal(matrix):
    return matrix[np.triu_indices_from(matrix, k=1)]


def main(small=False, plot=True, data_dir=None, output_dir=None, client=None):
    """Run the example; returns the fitted GroupConnectome objects and recovery scores.

    ``client``: None (dask's threads) or ``"local"`` (a LocalCluster), or an address.
    """
    output_dir = Path(output_dir or "group_connectome_outputs")
    output_dir.mkdir(parents=True, exist_ok=True)

    ###########################################################################
    # A synthetic study with a planted connectome
    # -------------------------------------------
    study = datasets.make_synthetic_fmri(
        n_subjects=4 if small else 20,
        n_timepoints=60 if small else 120,
        resolution=8 if small else 4,
        data_dir=data_dir,
        all_confounds=True,  # every column of fMRIPrep's table that the strategies read
    )
    truth = study.region_correlation
    print(f"{len(study.func)} subjects, {len(study.region_names)} planted regions")

    ###########################################################################
    # fMRIPrep confounds, found next to each run as nilearn's ``load_confounds`` finds them
    # (same strategies, parameters and tables; ``sample_mask`` is None: no volume is removed).
    confounds, sample_masks = load_confounds(study.func, **DENOISE)

    ###########################################################################
    # Spheres at the planted region centres, cleaned as in nilearn's examples.
    masker = NiftiSpheresMasker(
        seeds=study.region_coords,
        radius=8 if small else 6,
        detrend=True,
        standardize="zscore_sample",
        low_pass=0.1,
        high_pass=0.01,
        t_r=study.t_r,
    )

    ###########################################################################
    # One graph for the whole study; results kept in ``cache_dir``.
    cache_dir = output_dir / "cache"
    start = time.perf_counter()
    group = GroupConnectome(
        masker,
        ConnectivityMeasure(kind="correlation"),
        cache_dir=cache_dir,
        client=client,
        progress=not small,
    )
    group.fit(study.func, confounds=confounds, sample_mask=sample_masks, subjects=study.subjects)
    first = time.perf_counter() - start
    print(f"correlation connectomes of {len(group.subjects_)} subjects in {first:.1f} s")

    ###########################################################################
    # Running again computes nothing: every subject comes from the results store.
    start = time.perf_counter()
    again = GroupConnectome(
        masker,
        ConnectivityMeasure(kind="correlation"),
        cache_dir=cache_dir,
        client=client,
        progress=False,
    )
    again.fit(study.func, confounds=confounds, sample_mask=sample_masks, subjects=study.subjects)
    print(
        f"re-run: {again.n_cached_} of {len(again.subjects_)} subjects cached, "
        f"{time.perf_counter() - start:.2f} s"
    )

    ###########################################################################
    # How well is the planted truth recovered?
    # Pearson correlation between the off-diagonal entries of the group matrix and of the
    # planted region correlation.
    recovery = np.corrcoef(off_diagonal(group.group_matrix_), off_diagonal(truth))[0, 1]
    without = GroupConnectome(
        masker,
        ConnectivityMeasure(kind="correlation"),
        cache_dir=cache_dir,
        client=client,
        progress=False,
    )
    without.fit(study.func, subjects=study.subjects)
    recovery_raw = np.corrcoef(off_diagonal(without.group_matrix_), off_diagonal(truth))[0, 1]
    print(
        f"recovery of the planted correlation: {recovery:.3f} with confounds, "
        f"{recovery_raw:.3f} without"
    )

    ###########################################################################
    # Tangent space: the group mean is the geometric mean of the covariances, and every
    # subject's matrix is its deviation from it.
    tangent = GroupConnectome(
        masker,
        ConnectivityMeasure(kind="tangent"),
        cache_dir=cache_dir,
        client=client,
        progress=False,
    )
    tangent.fit(study.func, confounds=confounds, sample_mask=sample_masks, subjects=study.subjects)
    print(f"tangent matrices: {tangent.subject_matrices_.shape}")

    if plot:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            from nilearn import plotting
        except ImportError as exc:
            print(f"Plots skipped: {exc.name} is not installed (pip install 'lazyconn[plot]').")
        else:
            fig, axes = plt.subplots(1, 2, figsize=(11, 5))
            plotting.plot_matrix(
                truth,
                labels=study.region_names,
                vmin=-1,
                vmax=1,
                axes=axes[0],
                title="planted",
                colorbar=False,
            )
            plotting.plot_matrix(
                group.group_matrix_,
                labels=study.region_names,
                vmin=-1,
                vmax=1,
                axes=axes[1],
                title="recovered (group mean)",
            )
            fig.savefig(output_dir / "group_matrices.png")
            display = plotting.plot_connectome(
                group.group_matrix_,
                study.region_coords,
                edge_threshold="90%",
                title="Group connectome",
            )
            display.savefig(output_dir / "group_connectome.png")
            display.close()
            plt.close("all")
    return {
        "group": group,
        "again": again,
        "tangent": tangent,
        "recovery": recovery,
        "recovery_without_confounds": recovery_raw,
        "study": study,
    }


if __name__ == "__main__":
    main(small=os.environ.get("LAZYCONN_EXAMPLES_SMALL") == "1", client="local")
