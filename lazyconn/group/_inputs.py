"""Checking a group run's inputs on the client, before any cluster starts.

A missing file or a confounds table of the wrong length would otherwise be found on a worker,
after the cluster has started, behind a worker's log. Here every subject is checked (paths
exist; confound rows match the run's volumes, read from the header, which is cheap) and every
bad subject is named in one message.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pandas as pd

from lazyconn._utils import find_stack_level, is_path_like
from lazyconn.exceptions import InputFileError, InputNotFoundError, ParameterError, TRWarning
from lazyconn.image import LazyImage, load


def _n_rows(item, storage_options) -> int | None:
    """Rows of one confounds entry (None when unknown); raises InputNotFoundError."""
    from lazyconn.io.confounds import read_confounds_file

    if isinstance(item, (pd.DataFrame, np.ndarray)):
        return len(item)
    if is_path_like(item):
        try:
            return read_confounds_file(item, storage_options=storage_options)[0].shape[0]
        except InputNotFoundError:
            raise
        except InputFileError:
            return None  # unreadable: the subject's task reports it, as before
    return None


def bad_inputs_error(problems, missing, n_subjects):
    """One error naming every bad subject (InputNotFoundError when a file is missing)."""
    listing = "\n".join(f"  - subject {name!r}: {text}" for name, text in problems.items())
    cls = InputNotFoundError if missing else ParameterError
    return cls(
        f"{len(problems)} of {n_subjects} subjects have bad inputs (checked before any "
        f"computation starts):\n{listing}"
    )


def check_inputs(records, t_r, storage_options=None):
    """Problems of each subject's inputs, and runs whose header contradicts ``t_r``.

    Returns ``(problems, missing, t_r_conflicts)``: subject name -> message, the names whose
    problem is a missing file, and ``[(name, header t_r)]``.
    """
    problems, missing, conflicts = {}, set(), []
    for s in records:
        issues, n_volumes = [], None
        img = s.img
        run = None
        if isinstance(img, LazyImage):
            run = img
        elif is_path_like(img):
            try:
                run = load(img, storage_options=storage_options)
            except InputNotFoundError as exc:
                issues.append(str(exc))
                missing.add(s.name)
            except (InputFileError, ValueError, TypeError):
                pass  # unreadable: the subject's task reports it, as before
        elif hasattr(img, "shape"):
            n_volumes = img.shape[3] if len(img.shape) == 4 else None
        if run is not None and run.ndim == 4:
            n_volumes = run.shape[3]
            header_t_r = run.t_r
            if t_r is not None and header_t_r and not math.isclose(t_r, header_t_r, rel_tol=1e-3):
                conflicts.append((s.name, header_t_r))
        items = s.confounds if isinstance(s.confounds, (list, tuple)) else [s.confounds]
        for k, item in enumerate(x for x in items if x is not None):
            where = "confounds" if len(items) == 1 else f"confounds[{k}]"
            try:
                rows = _n_rows(item, storage_options)
            except InputNotFoundError:
                issues.append(f"{where} file {os.fspath(item)!r} does not exist")
                missing.add(s.name)
                continue
            if rows is not None and n_volumes is not None and rows != n_volumes:
                issues.append(
                    f"{where} has {rows} rows but the run has {n_volumes} volumes; expected "
                    "one confound row per volume"
                )
        if issues:
            problems[s.name] = "; ".join(issues)
    return problems, missing, conflicts


def warn_t_r(t_r, conflicts, n_subjects) -> None:
    """One warning naming both values (nilearn, like lazyconn, uses the given t_r)."""
    if not conflicts:
        return
    name, header = conflicts[0]
    others = f" and {len(conflicts) - 1} other run(s)" if len(conflicts) > 1 else ""
    warnings.warn(
        f"t_r={t_r!r} (the masker's) differs from the repetition time in the header of "
        f"subject {name!r}{others} ({header:g} s; {len(conflicts)} of {n_subjects} runs). "
        "The masker's t_r is used for filtering, as in nilearn: check that it is right.",
        TRWarning,
        stacklevel=find_stack_level(),
    )
