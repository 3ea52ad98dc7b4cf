"""Errors and warnings raised by lazyconn.

Every error subclasses the builtin a nilearn or numpy user would already catch
(``ValueError``, ``TypeError``, ``FileNotFoundError``...), so existing
``except ValueError`` code keeps working.
"""


class LazyconnError(Exception):
    """Base class of every lazyconn error."""


class ParameterError(LazyconnError, ValueError):
    """A parameter has a value outside what the function accepts."""


class ParameterTypeError(LazyconnError, TypeError):
    """A parameter has a type the function does not accept."""


class DimensionError(LazyconnError, ValueError, TypeError):
    """An image or array has the wrong number of dimensions.

    A ``TypeError`` like nilearn's ``DimensionError`` (so ``except TypeError`` code written
    for nilearn catches it) and a ``ValueError`` like numpy's shape errors.
    """


class GridMismatchError(LazyconnError, ValueError):
    """Images that must share one voxel grid (shape and affine) do not."""


class InputFileError(LazyconnError, OSError):
    """A file cannot be read as what it should be (missing, truncated, wrong format)."""


class InputNotFoundError(InputFileError, FileNotFoundError, ValueError):
    """A path or URL does not exist.

    Also a ``ValueError``, the class nilearn raises for a missing image ("File not found").
    """


class OutputExistsError(LazyconnError, FileExistsError):
    """The destination exists and ``overwrite=True`` was not given."""


class OutputNotWritableError(LazyconnError, PermissionError):
    """The destination cannot be written (missing or read-only directory, denied access)."""


class ConfoundsNotFoundError(InputNotFoundError, ValueError):
    """No fMRIPrep confounds file next to a run (a ``ValueError`` too, as nilearn raises)."""


class MissingConfoundsError(LazyconnError, ValueError):
    """A confounds table lacks columns a denoising strategy needs; the message names them."""


class AccessDeniedError(InputFileError, PermissionError):
    """The storage refused the credentials (wrong key/secret, no permission on a path)."""


class IncompleteStoreError(InputFileError):
    """A zarr store lacks its completion marker (an interrupted conversion)."""


class MissingChunkError(InputFileError):
    """A chunk of a complete store is missing (deleted or lost): never read as zeros."""


class ChecksumError(InputFileError):
    """Stored bytes do not match the checksum recorded when they were written."""


class StoreLockedError(LazyconnError, FileExistsError):
    """Another process is writing this store (its host, pid and start time are named)."""


class NotFittedError(LazyconnError, ValueError, AttributeError):
    """An estimator was used before ``fit``.

    Subclasses the same builtins as :class:`sklearn.exceptions.NotFittedError`.
    """


class AllVolumesRemovedError(LazyconnError, ValueError):
    """``sample_mask`` removed every volume of a run."""


class SubjectError(LazyconnError, RuntimeError):
    """Processing one subject of a group run failed; the message names it."""


class UnguardedMainError(LazyconnError, RuntimeError):
    """A LocalCluster would be started from a script's unguarded top level: its worker
    processes re-run the script (multiprocessing's spawn), each starting a cluster again."""


class ClusterConnectionError(LazyconnError, ConnectionError):
    """A dask scheduler address does not answer; the message shows the address."""


class LazyconnWarning(UserWarning):
    """Base class of lazyconn's own warnings (the test suite turns them into errors)."""


class BoundingBoxError(LazyconnError, ValueError):
    """A resampling target's field of view contains none of the data (nilearn's name)."""


class TRWarning(LazyconnWarning):
    """A given ``t_r`` differs from the repetition time in the runs' headers."""


class MaskWarning(LazyconnWarning):
    """A computed mask is suspicious (e.g. empty), as nilearn's ``MaskWarning``."""


class IntegrityWarning(LazyconnWarning):
    """Stored data failed verification (e.g. a results-store entry) and is recomputed."""


class DataWarning(LazyconnWarning):
    """A run's values had to be changed to be used (e.g. NaN voxels read as zeros)."""
