"""Test helpers of the group pipeline: picklable toy per-subject steps and a shared LocalCluster.

They live in the package (not in tests/) so that dask.distributed worker processes can
unpickle them.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import pytest


class CorrcoefStep:
    """Toy per-subject step: Pearson correlation of a (T, K) array or ``.npy`` file.

    ``sleep`` seconds are spent per subject so that a test can act mid-run; ``calls_dir``
    (a directory) gets one file per call so tests can count what was recomputed.
    """

    def __init__(self, sleep: float = 0.0, calls_dir=None):
        self.sleep = sleep
        self.calls_dir = calls_dir

    def get_params(self, deep=True):
        return {"sleep": self.sleep}

    def __call__(self, subject):
        data = subject.img
        if isinstance(data, (str, os.PathLike)):
            data = np.load(data)
        data = np.asarray(data, dtype=np.float64)
        if data.ndim != 2:
            raise ValueError(f"expected a (T, K) array, got shape {data.shape}")
        if self.calls_dir is not None:
            stamp = f"{subject.name}-{os.getpid()}-{time.perf_counter_ns()}"
            open(os.path.join(self.calls_dir, stamp), "w").close()
        if self.sleep:
            time.sleep(self.sleep)
        return np.corrcoef(data, rowvar=False)


def sum_count(matrices):
    """Toy partial of a mean: (sum, count) in float64."""
    return np.sum(matrices, axis=0, dtype=np.float64), len(matrices)


def add_sum_counts(partials):
    """Toy combine of (sum, count) partials."""
    return sum(p[0] for p in partials), sum(p[1] for p in partials)


def toy_study(n_subjects: int, n_times: int = 40, n_regions: int = 5, seed: int = 0):
    """Per-subject (T, K) arrays with a planted shared correlation structure."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((n_regions, n_regions))
    return [rng.standard_normal((n_times, n_regions)) @ mixing for _ in range(n_subjects)]


@pytest.fixture(scope="session")
def group_client():
    """One LocalCluster (2 single-threaded worker processes) shared by the cluster tests."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        yield client


#: World coordinates (mm) of the seeds planted by :func:`tiny_study`.
TINY_SEEDS = ((-4.0, -3.0, 6.0), (8.0, 9.0, 3.0), (-1.0, 12.0, 15.0))


def tiny_study(directory, n_subjects: int = 4, shape=(10, 11, 12, 40), seed: int = 0):
    """Small 4-D runs (``.nii`` files) with correlated signals planted at :data:`TINY_SEEDS`.

    Returns (paths, confounds): a list of paths and a list of (T, 2) confound arrays.
    """
    import nibabel as nib

    rng = np.random.default_rng(seed)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = [-13.0, -12.0, -9.0]
    ijk = np.indices(shape[:3]).reshape(3, -1).T
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    mixing = np.array([[1.0, 0.6, 0.0], [0.0, 0.8, 0.5], [0.3, 0.0, 1.0]])
    paths, confounds = [], []
    for s in range(n_subjects):
        n_t = shape[3]
        data = 100.0 + rng.standard_normal(shape)
        latent = rng.standard_normal((n_t, 3)) @ mixing
        conf = rng.standard_normal((n_t, 2))
        for k, centre in enumerate(TINY_SEEDS):
            near = np.linalg.norm(world - np.asarray(centre), axis=1) <= 7.0
            i, j, m = ijk[near].T
            data[i, j, m, :] += 3.0 * latent[:, k] + conf @ np.array([1.0, -0.5])
        img = nib.Nifti1Image(data.astype(np.float32), affine)
        img.header.set_xyzt_units("mm", "sec")
        img.header.set_zooms((3.0, 3.0, 3.0, 2.0))
        path = os.path.join(os.fspath(directory), f"sub-{s:02d}_bold.nii")
        nib.save(img, path)
        paths.append(path)
        confounds.append(conf)
    return paths, confounds
