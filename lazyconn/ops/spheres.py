"""Which voxels make up each sphere: exactly nilearn 0.14.1's rules (pure numpy).

nilearn (``maskers/nifti_spheres_masker.py::apply_mask_and_get_affinity``) builds a
KD-tree on the world coordinates of every candidate voxel of the image. We only look
at the voxels of a small box around each seed, which selects the same voxels:

1. candidates: every voxel of the grid, or the non-zero voxels of ``mask``;
2. the sphere: candidates whose world-space centre is at Euclidean distance
   ``<= radius`` from the seed (``radius=None`` matches nothing);
3. the nearest voxel ``round(inv(affine) @ seed)`` (numpy half-to-even rounding) is
   added if it is a candidate;
4. quirk kept on purpose: the first candidate (C order) whose *truncated* world
   coordinates equal the truncated seed coordinates is added too.

Known difference: on grids with fewer than 10 candidates scikit-learn's brute-force
neighbour search (dot-product distances) replaces the KD-tree in nilearn, which can move
voxels lying within rounding error of the sphere surface; lazyconn always uses exact
distances.
"""

from __future__ import annotations

import itertools

import numpy as np

from lazyconn.exceptions import ParameterError


def coord_transform_flat(x, y, z, affine):
    """nilearn's ``image.coord_transform`` on flattened coordinates (same arithmetic, so the
    same rounding); returns the three transformed 1-D arrays."""
    coords = np.c_[
        np.atleast_1d(x).flat,
        np.atleast_1d(y).flat,
        np.atleast_1d(z).flat,
        np.ones_like(np.atleast_1d(z).flat),
    ].T
    out = np.dot(affine, coords)
    return out[0], out[1], out[2]


def _voxel_box(world_lo, world_hi, inv_affine, shape):
    """Voxel index ranges (clipped to the grid) covering a world-space box, with 1 voxel margin."""
    corners = np.array(
        list(itertools.product(*zip(world_lo, world_hi, strict=True))), dtype=np.float64
    )
    ijk = np.dot(inv_affine[:3, :3], corners.T).T + inv_affine[:3, 3]
    lo = np.floor(ijk.min(axis=0)).astype(int) - 1
    hi = np.ceil(ijk.max(axis=0)).astype(int) + 2
    lo = np.clip(lo, 0, shape)
    hi = np.clip(hi, 0, shape)
    return lo, hi


def _local_candidates(lo, hi, shape, mask):
    """Flat C-order indices and ijk of the candidates of the box [lo, hi), in C order."""
    if np.any(hi <= lo):
        return np.empty(0, dtype=np.int64), np.empty((0, 3), dtype=np.int64)
    grids = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi, strict=True)), indexing="ij")
    ijk = np.stack([g.ravel() for g in grids], axis=1)
    if mask is not None:
        keep = mask[ijk[:, 0], ijk[:, 1], ijk[:, 2]]
        ijk = ijk[keep]
    flat = np.ravel_multi_index(ijk.T, shape)
    return flat, ijk


def sphere_voxels(seeds, affine, shape, radius, mask=None, allow_overlap=False):
    """Flat (C-order) voxel indices of each sphere, as nilearn selects them.

    Parameters
    ----------
    seeds : sequence of (x, y, z) world coordinates (mm)
    affine : (4, 4) array, the image's voxel-to-world transform
    shape : 3-tuple, the image's spatial shape
    radius : float or None, in mm
    mask : 3-D bool array on the same grid, or None (all voxels are candidates)
    allow_overlap : bool
        If False, a voxel shared by two spheres raises ``ParameterError``.

    Returns
    -------
    list of sorted int64 arrays, one per seed.
    """
    shape = tuple(int(s) for s in shape[:3])
    affine = np.asarray(affine, dtype=np.float64)
    inv_affine = np.linalg.inv(affine)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
    reach = 0.0 if radius is None else float(radius)
    spheres = []
    for seed in seeds:
        seed = [float(c) for c in seed]
        selected = set()
        # 2. the sphere itself (distances as sklearn's KD-tree computes them)
        lo, hi = _voxel_box(np.subtract(seed, reach), np.add(seed, reach), inv_affine, shape)
        flat, ijk = _local_candidates(lo, hi, shape, mask)
        if radius is not None and flat.size:
            wx, wy, wz = coord_transform_flat(ijk[:, 0], ijk[:, 1], ijk[:, 2], affine)
            d2 = (wx - seed[0]) ** 2
            d2 += (wy - seed[1]) ** 2
            d2 += (wz - seed[2]) ** 2
            selected.update(flat[np.sqrt(d2) <= radius].tolist())
        # 3. the nearest voxel, rounding half to even like np.round
        nearest = np.round(np.array(coord_transform_flat(*seed, inv_affine)).ravel()).astype(int)
        if (
            np.all(nearest >= 0)
            and np.all(nearest < shape)
            and (mask is None or mask[tuple(nearest)])
        ):
            selected.add(int(np.ravel_multi_index(tuple(nearest), shape)))
        # 4. nilearn's truncated-coordinates quirk: first match in C order
        target = [int(c) for c in seed]
        lo, hi = _voxel_box(np.subtract(target, 1.0), np.add(target, 1.0), inv_affine, shape)
        flat, ijk = _local_candidates(lo, hi, shape, mask)
        if flat.size:
            w = np.stack(coord_transform_flat(ijk[:, 0], ijk[:, 1], ijk[:, 2], affine), axis=1)
            hits = np.flatnonzero(np.all(w.astype(int) == target, axis=1))
            if hits.size:
                selected.add(int(flat[hits[0]]))
        spheres.append(np.array(sorted(selected), dtype=np.int64))

    empty = [i for i, s in enumerate(spheres) if s.size == 0]
    if empty:
        where = ", ".join(f"#{i} {tuple(float(c) for c in seeds[i])!r}" for i in empty)
        raise ParameterError(
            f"These spheres are empty: {empty}. seeds {where} (mm) lie outside the image "
            f"(shape {shape}, affine {affine.tolist()!r}) or its mask, with radius={radius!r}; "
            "expected seeds within the image's field of view."
        )
    if not allow_overlap and spheres:
        allv = np.concatenate(spheres)
        uniq, counts = np.unique(allv, return_counts=True)
        if np.any(counts >= 2):
            shared = set(uniq[counts >= 2].tolist())
            pairs = [i for i, s in enumerate(spheres) if shared.intersection(s.tolist())]
            raise ParameterError(
                f"Overlap detected between spheres: seeds {pairs} share "
                f"{len(shared)} voxel(s) with radius={radius!r} and allow_overlap=False; "
                "expected disjoint spheres (use a smaller radius or allow_overlap=True)."
            )
    return spheres
