"""Seeds and random-walker segmentation of one 3-D map (eager numpy/scipy kernels).

These reproduce nilearn 0.14.1's ``_utils/ndimage.peak_local_max`` and
``_utils/segmentation.random_walker`` (nilearn's copy of scikit-image 0.11.3's algorithm)
operation for operation, so ``RegionExtractor(extractor="local_regions")`` splits maps into
exactly nilearn's regions. scikit-image's current ``random_walker`` is not a substitute: its
weights, beta scaling and handling of inactive voxels have changed since 0.11.3 and it labels
thousands of voxels differently on the same map and seeds.

Maps are small (one 3-D volume at a time), so everything here works on whole numpy arrays.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.linalg import cg

from lazyconn._utils import warn
from lazyconn.exceptions import DimensionError

__all__ = ["peak_local_max", "random_walker"]


def peak_local_max(image, min_distance=10, threshold_abs=0.0, threshold_rel=0.1):
    """Boolean mask of the local maxima of ``image`` (nilearn's ``peak_local_max``).

    A voxel is a peak if it equals the maximum of its ``(2 * min_distance + 1)``-wide
    neighbourhood (zero outside the image) and exceeds
    ``max(threshold_rel * max(image), threshold_abs)``. Plateaus give several peak voxels;
    a constant image gives none.
    """
    image = np.asarray(image)
    out = np.zeros_like(image, dtype=bool)
    if np.all(image == image.flat[0]):
        return out
    image = image.copy()
    size = 2 * min_distance + 1
    image_max = ndimage.maximum_filter(image, size=size, mode="constant")
    image *= image == image_max
    peak_threshold = max(np.max(image.ravel()) * threshold_rel, threshold_abs)
    out[image > peak_threshold] = True
    return out


# --------------------------------------------------------------------------- graph
def _edges_and_gradients(data, spacing, mask):
    """The graph's edges ``(2, E)`` between neighbours along z, then y, then x (nilearn's
    order, each in C order), only those joining two active voxels of ``mask`` (all without
    one), and their squared gradients summed over the channels.

    Only the kept edges are built: nilearn builds every edge of the box and its gradient,
    then drops those touching inactive voxels (~17 MiB of temporaries for a 48 x 59 x 50
    map, most of it for edges outside the map). The values are the same, element for
    element (the same operations on the same voxels).
    """
    shape = data.shape[:3]
    edges, gradients = [], []
    for axis in (2, 1, 0):
        lo, hi = [slice(None)] * 3, [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        lo, hi = tuple(lo), tuple(hi)
        if mask is None:
            first = np.arange(np.prod(shape)).reshape(shape)[lo].ravel()
            pairs = [
                (data[lo + (c,)].ravel(), data[hi + (c,)].ravel()) for c in range(data.shape[-1])
            ]
        else:
            where = np.nonzero(mask[lo] & mask[hi])
            first = np.ravel_multi_index(where, shape)
            pairs = [
                (data[lo + (c,)][where], data[hi + (c,)][where]) for c in range(data.shape[-1])
            ]
        stride = int(np.prod(shape[axis + 1 :]))
        edges.append(np.vstack((first, first + stride)))
        gradients.append(sum((np.abs(a - b) / spacing[axis]) ** 2 for a, b in pairs))
    return np.hstack(edges), np.concatenate(gradients)


def _edge_weights(gradients, data, beta, eps):
    # the std is over the whole box (its trailing channel axis included)
    beta /= 10 * data.std()
    gradients *= beta
    weights = np.exp(-gradients)
    weights += eps
    return weights


def _laplacian(edges, weights):
    n = edges.max() + 1
    diag = np.arange(n)
    i_idx = np.hstack((edges[0], edges[1]))
    j_idx = np.hstack((edges[1], edges[0]))
    data = np.hstack((-weights, -weights))
    lap = sparse.coo_matrix((data, (i_idx, j_idx)), shape=(n, n))
    connect = -np.ravel(lap.sum(axis=1))
    lap = sparse.coo_matrix(
        (np.hstack((data, connect)), (np.hstack((i_idx, diag)), np.hstack((j_idx, diag)))),
        shape=(n, n),
    )
    return lap.tocsr()


def _build_laplacian(data, spacing, mask, beta):
    edges, gradients = _edges_and_gradients(data, spacing, mask)
    weights = _edge_weights(gradients, data, beta=beta, eps=1.0e-10)
    if mask is not None:
        # renumber the nodes that remain (those on a kept edge)
        order = np.searchsorted(np.unique(edges.ravel()), np.arange(edges.max() + 1))
        edges = order[edges.astype(np.int64)]
    return _laplacian(edges, weights)


def _build_ab(lap, labels):
    labels = labels[labels >= 0]
    indices = np.arange(labels.size)
    unlabeled = indices[labels == 0]
    seeds = indices[labels > 0]
    b = lap[unlabeled][:, seeds]
    lap = lap[unlabeled][:, unlabeled]
    rhs = []
    for lab in range(1, labels.max() + 1):
        fs = sparse.csr_matrix(labels[seeds] == lab).transpose()
        rhs.append(b * fs)
    return lap, rhs


def _solve_cg(lap, rhs, tol):
    lap = lap.tocsc()
    x = np.array([cg(lap, -b.todense(), rtol=tol, atol=0)[0] for b in rhs])
    return np.argmax(x, axis=0)


def random_walker(data, labels, beta=130.0, tol=1.0e-3):
    """Random-walker segmentation of a 3-D map from seed labels (nilearn's algorithm).

    Parameters
    ----------
    data : ndarray (x, y, z)
        The map to segment (unit spacing on every axis, as nilearn uses it).
    labels : int ndarray, same shape
        Seeds: positive integers; 0 = voxels to label; negative = inactive voxels, removed
        from the graph.
    beta : float, default=130
        Diffusion penalty; divided by ``10 * data.std()`` (std over the whole box).
    tol : float, default=1e-3
        Relative tolerance of the conjugate-gradient solves (``atol=0``, ``x0=0``).

    Returns
    -------
    ndarray of int32 labels; voxels that cannot be reached from a seed keep -1. Without
    unlabelled voxels or without seeds, a warning is given and ``labels`` returned.
    """
    out_labels = np.copy(labels)
    if (labels != 0).all():
        warn(
            "Random walker only segments unlabeled areas, where labels == 0. No zero valued "
            "areas in labels were found. Returning provided labels."
        )
        return out_labels
    if (labels == 0).all():
        warn("Random walker received no seed label. Returning provided labels.")
        return out_labels
    if data.ndim != 3:
        raise DimensionError(f"data has shape {data.shape}; expected a 3-D map.")
    dims = data.shape
    data = np.asarray(data)
    if data.dtype.kind != "f":
        data = data.astype(np.float64)  # sklearn's as_float_array: float32/64 kept
    data = data[..., np.newaxis]
    spacing = np.ones(3)
    labels = np.copy(labels)
    label_values = np.unique(labels)
    if np.any(np.diff(label_values) != 1):  # consecutive labels
        active = labels >= 0
        labels[active] = np.searchsorted(np.unique(labels[active]), labels[active]).astype(
            labels.dtype
        )
    labels = labels.astype(np.int32)
    if np.any(labels < 0):
        # unlabelled voxels no seed can reach, and seeds with nothing to label: inactive
        filled = ndimage.binary_propagation(labels > 0, mask=labels >= 0)
        labels[np.logical_and(np.logical_not(filled), labels == 0)] = -1
        filled = ndimage.binary_propagation(labels == 0, mask=labels >= 0)
        labels[np.logical_and(labels > 0, np.logical_not(filled))] = -1
    if (labels == -1).all():
        warn(
            "Random walker only segments unlabeled areas, where labels == 0. Data provided "
            "only contains isolated seeds and isolated pixels. Returning provided labels."
        )
        return out_labels
    mask = labels >= 0 if np.any(labels < 0) else None
    lap = _build_laplacian(data, spacing, mask, beta)
    lap, rhs = _build_ab(lap, labels)
    x = _solve_cg(lap, rhs, tol)
    x = (x + 1).astype(labels.dtype)
    flat = np.ravel(labels)
    flat[flat == 0] = x
    return flat.reshape(dims)
