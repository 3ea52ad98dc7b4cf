"""Package-wide defaults (dtype policy, chunk sizes)."""

from __future__ import annotations

import numpy as np

#: Target size of one stored chunk, in bytes. A chunk holds a spatial block with
#: the whole time axis, so temporal steps never rechunk.
DEFAULT_CHUNK_BYTES = 32 * 2**20


def float_dtype_for(dtype: np.dtype) -> np.dtype:
    """nilearn's promotion rule: floats kept; 8-byte ints -> float64; other ints -> float32."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return dtype
    if dtype.kind in "iub" and dtype.itemsize == 8:
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def mean_dtype(dtype) -> np.dtype:
    """dtype of a temporal mean of ``dtype`` voxels (numpy's ``mean``: ints -> float64)."""
    return np.mean(np.zeros(1, dtype=dtype)).dtype


def default_chunks(shape: tuple[int, ...], dtype, target_bytes: int = DEFAULT_CHUNK_BYTES):
    """Spatial blocks with the whole time axis (and whole volume for 3-D if small).

    The x, y, z block edges are shrunk evenly (largest first) until one chunk holds
    about ``target_bytes``; the time axis is never split.
    """
    itemsize = np.dtype(dtype).itemsize
    block = list(shape[:3])
    per_voxel = itemsize * (int(shape[3]) if len(shape) == 4 else 1)
    while np.prod(block) * per_voxel > target_bytes and max(block) > 1:
        axis = int(np.argmax(block))
        block[axis] = max(1, (block[axis] + 1) // 2)
    return tuple(block) + tuple(shape[3:])


#: Decompositions: the stacked per-subject reductions (n_subjects x n_components, V) are
#: read back into memory for the group step up to this many bytes (the seeds' 20 x 8 rows
#: at 4 mm: 18 MB); a larger stack stays in its scratch file, and the group step (PCA, ridge
#: loadings, online dictionary learning, final coding) reads it in column blocks of a few
#: MiB, so that its memory does not grow with the number of subjects. The estimators'
#: ``memory_budget`` parameter overrides it.
DECOMPOSITION_MEMORY_BUDGET = 32 * 2**20

#: Decompositions: a run that is not streamed (read in time slabs, a .nii.gz) whose cleaned
#: (T, V) matrix takes at most this many bytes is computed once and kept for the two products
#: of its reduction; a longer one is read twice (Gram matrix, then projection). A streamed
#: run (``lazyconn.ops.voxels.VoxelStream``) is never held, whatever its length: its cleaned
#: columns go to a temporary file for the projection.
DECOMPOSITION_SUBJECT_BYTES = 256 * 2**20

#: ``NiftiMasker.transform`` (compute=True) computes a run whose (T, V) signals take more
#: than this many bytes (float32) by streaming its blocks (``lazyconn.ops.voxels.
#: VoxelStream``: the output plus the open voxel groups in memory, one thread) instead
#: of in dask's graph (blocks in parallel, but for a 1200-volume 2 mm run ~4 GB besides
#: the output, whatever the order the tasks run in).
STREAM_RUN_BYTES = 256 * 2**20

#: Decompositions: on glibc, ``fit`` (and each subject task's process) fixes malloc's mmap
#: threshold at this many bytes (``mallopt(M_MMAP_THRESHOLD)``), the value the LocalCluster's
#: workers get too (``group._cluster.WORKER_MALLOC``). Fixing it also keeps glibc's trim
#: threshold at 128 KiB (glibc's dynamic threshold raises both after the first large free, and
#: freed blocks then stay in each thread's heap: peak RSS ~1.6x the live data with two
#: subjects in flight, session 4). Larger arrays are mmaps, returned when freed. Not lower:
#: at 1 MiB every chunk-sized array was a fresh mmap whose pages fault in again, and two
#: threads then contend on the process's memory map (a 20 x 168 fit: 1.2 M page faults, 6 s
#: of system time, the reductions 15.9 s on one thread and hardly faster on two; at 32 MiB
#: 0.4 M faults, 2.8 s, 8.4 s on two threads; peak RSS ~330 -> ~380 MiB; benchmarks/README,
#: #9 session 6). The setting is process-wide and stays; None leaves malloc alone.
MALLOC_MMAP_THRESHOLD = 32 * 2**20
