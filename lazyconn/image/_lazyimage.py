"""LazyImage: a dask array with the affine and header of a NIfTI image."""

from __future__ import annotations

import dask.array as da
import nibabel as nib
import numpy as np
from nibabel.spatialimages import SpatialFirstSlicer

from lazyconn.config import default_chunks
from lazyconn.exceptions import DimensionError, ParameterError, ParameterTypeError


class LazyArrayProxy:
    """``LazyImage.dataobj``: a nibabel-style array proxy over the image's dask array.

    As nibabel's ``ArrayProxy``: ``np.asarray(proxy)`` reads (computes) every voxel;
    ``proxy[key]`` reads only the chunks the slice touches and returns numpy.

    Parameters
    ----------
    data : dask.array.Array
        The image's voxels.
    """

    is_proxy = True

    def __init__(self, data: da.Array):
        self._data = data

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self._data.shape)

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def dtype(self) -> np.dtype:
        return self._data.dtype

    def __array__(self, dtype=None, copy=None):
        arr = np.asarray(self._data.compute())
        return arr if dtype is None else arr.astype(dtype, copy=False)

    def __getitem__(self, key):
        return np.asarray(self._data[key].compute())

    def __repr__(self) -> str:
        return f"<LazyArrayProxy shape={self.shape} dtype={self.dtype}>"


class _LazySlicer(SpatialFirstSlicer):
    """``img.slicer[...]`` without reading voxels: the result is a LazyImage."""

    def __init__(self, img):
        # nibabel only trusts its own classes to be spatial-axes-first; a LazyImage is.
        self.img = img

    def __getitem__(self, slicer):
        try:
            slicer = self.check_slicing(slicer)
        except ValueError as err:
            raise IndexError(*err.args) from None
        data = self.img.data[slicer]
        if any(dim == 0 for dim in data.shape):
            raise IndexError("Empty slice requested")
        return LazyImage(data, self.slice_affine(slicer), self.img.header, source=self.img.source)


class LazyImage(nib.Nifti1Image):
    """A 3-D or 4-D image whose voxels are a dask array; a ``nibabel.Nifti1Image``.

    Parameters
    ----------
    data : dask.array.Array or numpy.ndarray
        Voxels, shape (x, y, z) or (x, y, z, t). 4-D runs are chunked in spatial
        blocks with the whole time axis in each chunk (see ``docs/format.md``).
    affine : (4, 4) array
        Voxel-to-world (mm) transform.
    header : nibabel.Nifti1Header, optional
        Header kept for writing the image back; a fresh one is made if omitted.
    extra : dict, optional
        nibabel's metadata that the format cannot store.
    file_map : dict, optional
        nibabel's file map (unused by lazyconn; a LazyImage writes with ``to_filename``).
    dtype : numpy dtype, optional
        Cast the voxels to this dtype (lazily), as nibabel's ``dtype`` argument.
    source : str, optional
        Where the voxels come from (a path or URL without credentials), for ``repr``.

    A LazyImage is a ``nibabel.Nifti1Image`` whose ``dataobj`` is a
    :class:`LazyArrayProxy`, so nibabel- and nilearn-style code (``get_fdata()``,
    ``np.asarray(img.dataobj)``, ``img.dataobj[..., 0]``, ``img.slicer[...]``,
    ``get_data_dtype()``, ``to_filename``, ``nilearn.plotting``) works on it as it is:
    reading voxels computes them, as nibabel reads them from the file, and only what is
    read (``get_fdata`` caches the result, as nibabel does). ``img.data`` is the dask
    array itself. The header's data dtype is the voxels' dtype (uint8 for bool voxels),
    its shape the voxels' shape and its s/q-forms follow ``affine``; unlike images made by
    nilearn's ``new_img_like``, ``cal_min``/``cal_max`` are not filled (that needs the
    voxels).

    Images opened from a file or store also keep the file's unscaled voxels and
    header bytes (private), so ``to_zarr`` and ``to_nifti(filename)`` write them back
    losslessly; ``with_data`` drops them.
    """

    def __init__(
        self,
        data,
        affine,
        header=None,
        extra=None,
        file_map=None,
        dtype=None,
        *,
        source: str | None = None,
        _raw=None,
    ):
        if not isinstance(data, da.Array):
            if isinstance(data, (np.ndarray, LazyArrayProxy)) or nib.is_proxy(data):
                if isinstance(data, LazyArrayProxy):
                    data = data._data
                else:
                    data = np.asarray(data)
                    data = da.from_array(data, chunks=default_chunks(data.shape, data.dtype))
            else:
                raise ParameterTypeError(
                    f"data={type(data).__name__} object; expected a dask or numpy array."
                )
        if data.ndim not in (3, 4):
            raise DimensionError(
                f"data has shape {data.shape} ({data.ndim}-D); expected a 3-D or 4-D image."
            )
        affine = np.asarray(affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise DimensionError(f"affine has shape {affine.shape}; expected (4, 4).")
        if dtype is not None:
            data = data.astype(dtype)
        # NIfTI has no bool type: bool voxels are described as uint8 (nibabel's choice).
        header_dtype = np.uint8 if data.dtype == bool else data.dtype
        # A header with the dtype already set: nibabel would set it from the voxels' dtype,
        # which fails for bool.
        stand_in = nib.Nifti1Header()
        stand_in.set_data_dtype(header_dtype)
        super().__init__(LazyArrayProxy(data), affine, stand_in, extra, file_map)
        if header is None:
            self._affine2header()  # as nibabel does for an image made without a header
        else:
            header = header.copy()
            header.set_data_shape(data.shape)
            header.set_data_dtype(header_dtype)
            self._header = header
            if type(header) is nib.Nifti1Header:
                self.update_header()
        self.data = data
        self.source = source
        # (unscaled dask array in x,y,z,t order, NIfTI header bytes, NiftiFile or None,
        # stored temporal mean or None) of the source file or store.
        self._raw = _raw
        # How the voxels were made from other volumes by a step on each volume alone
        # (image._runarray.Volumewise, set by smooth_img), or None.
        self._volumewise = None

    @property
    def slicer(self):
        """nibabel's ``img.slicer[...]``: a LazyImage of the slice (nothing is read)."""
        return _LazySlicer(self)

    def to_filename(self, filename, **kwargs) -> None:
        """Write a ``.nii``/``.nii.gz`` file (nibabel's method; same as ``to_nifti(filename)``).

        Parameters
        ----------
        filename : str or path
            Destination path or fsspec URL ending in ``.nii`` or ``.nii.gz``.
        **kwargs
            ``storage_options`` (fsspec options) only; nibabel's ``dtype`` is not
            supported (ParameterError): cast with ``with_data`` first.
        """
        from lazyconn.io.writers import write_nifti

        storage_options = kwargs.pop("storage_options", None)
        if kwargs:
            raise ParameterError(
                f"to_filename got unsupported keyword arguments {sorted(kwargs)!r}; expected "
                "only storage_options."
            )
        write_nifti(self, filename, storage_options=storage_options)

    def get_data_dtype(self) -> np.dtype:
        """The data dtype in the header (the voxels' dtype; uint8 for bool voxels)."""
        return self._header.get_data_dtype()

    # array-like facts -------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def chunks(self) -> tuple[tuple[int, ...], ...]:
        return self.data.chunks

    @property
    def zooms(self) -> tuple[float, ...]:
        """Voxel sizes in mm (from the affine), plus TR for 4-D images if known."""
        return tuple(float(z) for z in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    @property
    def t_r(self) -> float | None:
        """Repetition time in seconds, from the header (None if absent or 3-D)."""
        if self.ndim != 4:
            return None
        zooms = self.header.get_zooms()
        if len(zooms) < 4 or not zooms[3]:
            return None
        t_r = float(zooms[3])
        units = (
            self.header.get_xyzt_units()[1] if hasattr(self.header, "get_xyzt_units") else "sec"
        )
        if units == "msec":
            t_r /= 1000.0
        elif units == "usec":
            t_r /= 1e6
        return t_r

    # conversions ------------------------------------------------------------
    def to_nifti(self, filename=None, *, storage_options=None) -> nib.Nifti1Image:
        """A ``nibabel.Nifti1Image`` of the voxels (for nilearn.plotting), or write a file.

        Without ``filename`` the voxels are computed into memory. With ``filename`` (a
        ``.nii``/``.nii.gz`` path or URL) the image is written there with bounded memory,
        slab by slab (``lazyconn.io.writers.write_nifti``: it never holds the whole image),
        and the written file is returned, opened without reading its voxels (nibabel's
        ``nibabel.load`` for a local path, :func:`lazyconn.load` for a URL). An image opened
        from a file or store is written back unchanged (same header bytes, unscaled voxels
        and scaling), byte for byte for ``.nii``; other images as nibabel's ``to_filename``
        writes them (the same decompressed bytes; the gzip bytes differ because ISA-L
        compresses, and are nibabel's byte for byte when ``isal`` cannot be imported).

        Parameters
        ----------
        filename : str or path, optional
            Destination ``.nii`` / ``.nii.gz`` path or fsspec URL.
        storage_options : dict, optional
            fsspec options for a URL ``filename``.

        Returns
        -------
        nibabel.Nifti1Image
        """
        if filename is not None:
            from lazyconn.image._load import load
            from lazyconn.io._fs import is_local, local_path
            from lazyconn.io.writers import write_nifti

            write_nifti(self, filename, storage_options=storage_options)
            if is_local(str(filename)):
                return nib.load(local_path(str(filename)))
            return load(filename, storage_options=storage_options)
        header = self.header.copy()
        header.set_data_dtype(self.dtype)
        # The data are already scaled; do not let a stored slope rescale them again.
        header.set_slope_inter(None, None)
        img = nib.Nifti1Image(np.asarray(self.data.compute()), self.affine, header)
        return img

    def to_zarr(
        self,
        dst,
        *,
        chunks=None,
        compressor="default",
        overwrite: bool = False,
        storage_options: dict | None = None,
        compute: bool = True,
        batch_bytes: int | None = None,
        progress: bool = False,
    ):
        """Write the image as a lazyconn NIfTI-Zarr store (see ``docs/format.md``).

        Parameters
        ----------
        dst : str or path
            Local path or fsspec URL of the store (a directory).
        chunks : tuple of int, optional
            Stored chunk shape (x, y, z[, t]); default: spatial blocks of about 32 MB with
            the whole time axis.
        compressor : "default", None, dict or zarr codec
            "default" is Blosc LZ4 level 5 with byte shuffle; a dict gives other Blosc
            options (e.g. ``{"cname": "zstd", "clevel": 1, "shuffle": "bitshuffle"}`` for
            ~15% smaller, ~4x slower stores); None stores raw bytes.
        overwrite : bool
            Replace an existing store at ``dst``.
        storage_options : dict, optional
            fsspec options (credentials, endpoint) for ``dst``; never written to the store.
        compute : bool
            If False, return a dask Delayed that writes the voxels and then the completion
            marker (one graph: ``batch_bytes`` does not apply).
        batch_bytes : int, optional
            Memory budget of a computed result: the store is written in batches of
            spatial block-rows (one x-block, one y-block, all z, whole time axis), each
            batch one ``dask.compute`` of at most ``batch_bytes`` of output (at least one
            row). Default ``lazyconn.io.writers.DEFAULT_BATCH_BYTES`` (128 MiB); peak memory
            is a few times a batch (the halos of smoothing, float64 intermediates). A
            result that fits is written in one graph, like a larger ``batch_bytes``.
            lazyconn addition (bounds dask's scheduler, which otherwise keeps most blocks
            of a smoothed-and-cleaned run alive). Unused when the image is an unmodified
            NIfTI file (the streaming conversion is used).
        progress : bool
            Show a progress line across batches (stderr).

        The completion marker is written after the last batch: an interrupted write
        leaves a store that ``lazyconn.load`` refuses.
        """
        from lazyconn.io.writers import write_store

        return write_store(
            self,
            dst,
            chunks=chunks,
            compressor=compressor,
            overwrite=overwrite,
            storage_options=storage_options,
            compute=compute,
            batch_bytes=batch_bytes,
            progress=progress,
        )

    def __array__(self, dtype=None, copy=None):
        arr = np.asarray(self.data.compute())
        return arr if dtype is None else arr.astype(dtype)

    def with_data(self, data, *, affine=None) -> LazyImage:
        """A new LazyImage on the same grid (same header) with other voxels."""
        return LazyImage(
            data,
            self.affine if affine is None else affine,
            self.header,
            source=self.source,
        )

    def __repr__(self) -> str:
        chunk = tuple(c[0] for c in self.data.chunks)
        nbytes = self.data.nbytes
        size = f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"
        zooms = "x".join(f"{z:g}" for z in self.zooms)
        parts = [
            f"shape={self.shape}",
            f"dtype={self.dtype}",
            f"voxel={zooms} mm",
        ]
        if self.t_r is not None:
            parts.append(f"t_r={self.t_r:g} s")
        parts += [f"chunks={chunk} ({self.data.npartitions} chunks)", f"size={size}"]
        if self.source:
            parts.append(f"source={self.source!r}")
        return f"<LazyImage {' '.join(parts)}>"
