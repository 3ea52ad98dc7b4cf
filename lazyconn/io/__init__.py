"""Storage: lazy NIfTI reading, the lazyconn Zarr store, streaming conversion, fsspec URLs.

Modules (imported on use, so ``import lazyconn`` stays cheap):
``nifti`` (picklable NIfTI file handle, header eager, voxels per chunk),
``store`` (the NIfTI-Zarr store format, see ``docs/format.md``),
``convert`` (``lazyconn.convert``: streaming NIfTI(.gz) -> zarr),
``writers`` (``LazyImage.to_zarr`` / ``to_nifti(filename)``), ``_fs`` (URLs, credentials),
``confounds`` (confound files).
"""

from lazyconn.io._fs import StorageOptions

__all__ = ["StorageOptions"]
