"""fMRIPrep confounds by denoising strategy: nilearn's ``load_confounds`` and
``load_confounds_strategy`` (same parameters, defaults, column choices and outputs).

The confounds table (``*_desc-confounds_timeseries.tsv``, or the older ``_regressors.tsv``)
and its JSON sidecar are found next to each run from the run's BIDS entities, as nilearn
does, on local paths or fsspec URLs (``s3://...``).
"""

from __future__ import annotations

import itertools
import os
import re
import warnings

import numpy as np
import pandas as pd

from lazyconn._utils import check_in, find_stack_level, is_path_like
from lazyconn.exceptions import (
    AllVolumesRemovedError,
    ConfoundsNotFoundError,
    InputFileError,
    MissingConfoundsError,
    ParameterError,
    ParameterTypeError,
)
from lazyconn.io.confounds import fill_first_row, read_confounds_frame, read_json_sidecar

#: Noise components a ``strategy`` may list (nilearn's ``ConfoundStrategy``).
ALL_CONFOUNDS = (
    "motion",
    "high_pass",
    "wm_csf",
    "global_signal",
    "compcor",
    "ica_aroma",
    "tedana",
    "scrub",
    "non_steady_state",
)
CONFOUND_MODEL = ("basic", "power2", "derivatives", "full")
COMPCOR_TYPES = (
    "anat_combined",
    "anat_separated",
    "temporal",
    "temporal_anat_combined",
    "temporal_anat_separated",
)
_SUFFIXES = {
    "basic": (),
    "derivatives": ("derivative1",),
    "power2": ("power2",),
    "full": ("derivative1", "power2", "derivative1_power2"),
}
_MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
_COMPCOR_PREFIXES = {
    "temporal_anat_combined": ["t", "a"],
    "temporal_anat_separated": ["t", "a", "w", "c"],
    "temporal": ["t"],
    "anat_combined": ["a"],
    "anat_separated": ["a", "w", "c"],
}
_ANAT_MASKS = {"combined": ["combined"], "separated": ["WM", "CSF"], None: None}
#: Image names each input kind must match (nilearn's patterns; lazyconn adds stores).
_PREPROC = re.compile(r"(_space-.*)?_desc-preproc_bold\.(nii\.gz|nii|zarr)/?$")
_AROMA = re.compile(r"_desc-smoothAROMAnonaggr_bold")

#: The preset strategies of :func:`load_confounds_strategy` (nilearn's table).
PRESET_STRATEGIES = {
    "simple": {
        "strategy": ("high_pass", "motion", "wm_csf"),
        "motion": "full",
        "wm_csf": "basic",
        "global_signal": None,
        "demean": True,
    },
    "scrubbing": {
        "strategy": ("high_pass", "motion", "wm_csf", "scrub"),
        "motion": "full",
        "wm_csf": "full",
        "scrub": 5,
        "fd_threshold": 0.5,
        "std_dvars_threshold": 1.5,
        "global_signal": None,
        "demean": True,
    },
    "compcor": {
        "strategy": ("high_pass", "motion", "compcor"),
        "motion": "full",
        "n_compcor": "all",
        "compcor": "anat_combined",
        "global_signal": None,
        "demean": True,
    },
    "ica_aroma": {
        "strategy": ("high_pass", "wm_csf", "ica_aroma"),
        "wm_csf": "basic",
        "ica_aroma": "full",
        "global_signal": None,
        "demean": True,
    },
}


# --- finding the files --------------------------------------------------------------------


def _split(url: str) -> tuple[str, str]:
    """(folder, file name) of a path or URL."""
    url = url.rstrip("/")
    head, _, name = url.rpartition("/")
    if os.sep != "/" and "://" not in url:  # pragma: no cover - Windows paths
        head, name = os.path.split(url)
    return head, name


def _entities(name: str) -> dict:
    """BIDS entities of a file name, in order (nilearn's ``parse_bids_filename``)."""
    parts = name.split("_")
    entities = {}
    for part in parts[:-1]:
        key, _, value = part.partition("-")
        entities[key] = value or None
    return entities


def _candidates(name: str) -> list[str]:
    """Confounds file names nilearn accepts for a run, longest first."""
    entities = _entities(name)
    entities["desc"] = "confounds"
    keys = list(entities)
    stems = {
        "_".join(f"{k}-{entities[k]}" for k in subset)
        for n in range(1, len(keys) + 1)
        for subset in itertools.combinations(keys, n)
        if "desc" in subset
    }
    names = [s + suffix for suffix in ("_timeseries.tsv", "_regressors.tsv") for s in stems]
    return sorted(names, key=len, reverse=True)


def _check_image_name(url: str, where: str, full_aroma: bool) -> None:
    name = _split(url)[1]
    if full_aroma:
        if not _AROMA.search(name):
            raise ParameterError(
                f"{where}={url!r} is not valid for ica_aroma='full'; expected fMRIPrep's "
                "ICA-AROMA output, a file named '..._desc-smoothAROMAnonaggr_bold.nii.gz' "
                "(or use ica_aroma='basic' with the preprocessed run)."
            )
        return
    if not _PREPROC.search(name):
        raise ParameterError(
            f"{where}={url!r} is not an fMRIPrep preprocessed run; expected a file named "
            "'sub-<label>[_...]_desc-preproc_bold.nii.gz' (or .nii, or a lazyconn .zarr store "
            "of the same name) next to its '..._desc-confounds_timeseries.tsv'."
        )


def find_confounds_file(img, *, storage_options=None, full_aroma=False, where="img_files") -> str:
    """The fMRIPrep confounds table next to run ``img`` (a path or URL), as nilearn finds it.

    Raises :class:`~lazyconn.exceptions.ConfoundsNotFoundError` when there is none (naming
    the folder and the names looked for), :class:`~lazyconn.exceptions.InputFileError`
    when there are several.
    """
    from lazyconn.io._fs import check_url, get_fs, redact

    url = check_url(where, img)
    _check_image_name(url, where, full_aroma)
    folder, name = _split(url)
    found = []
    for candidate in _candidates(name):
        path = f"{folder}/{candidate}" if folder else candidate
        fs, fs_path = get_fs(path, storage_options)
        if fs.isfile(fs_path):
            found.append(path)
    url = redact(url)
    if not found:
        raise ConfoundsNotFoundError(
            f"{where}={url!r} has no fMRIPrep confounds file next to it; expected "
            f"{_candidates(name)[0]!r} (or a shorter BIDS name ending in "
            f"'_desc-confounds_timeseries.tsv') in {folder or '.'!r}."
        )
    if len(found) > 1:
        raise InputFileError(
            f"{where}={url!r} has more than one confounds file next to it: {found}; expected "
            "exactly one."
        )
    return found[0]


# --- the noise components -----------------------------------------------------------------


def _with_suffixes(params, model):
    return list(params) + [f"{p}_{s}" for p in params for s in _SUFFIXES[model]]


def _containing(table, keyword):
    return [c for c in table.columns if keyword in c]


def _compcor_columns(meta, compcor, n_compcor):
    """nilearn's ``find_compcor``: CompCor columns chosen from the JSON sidecar."""
    mask_type = compcor.split("_")[-1] if "_" in compcor else None
    anat_masks = _ANAT_MASKS[mask_type if mask_type in _ANAT_MASKS else None]
    chosen = []
    for prefix in _COMPCOR_PREFIXES[compcor]:
        n_named = sum(f"{prefix}_comp_cor" in key for key in meta)
        names = [f"{prefix}_comp_cor_{k:02d}" for k in range(n_named)]
        groups = (
            [[c for c in names if meta[c]["Mask"] in mask] for mask in anat_masks]
            if prefix == "a"
            else [names]
        )
        for cols in groups:
            chosen += cols if n_compcor == "all" else cols[:n_compcor]
    return chosen


def _optimize_scrub(outliers, n_scans, scrub):
    """nilearn's ``optimize_scrub``: also drop segments shorter than ``scrub`` volumes."""
    if outliers[0] < scrub:
        outliers = np.asarray(list(range(outliers[0])) + list(outliers))
    if n_scans - (outliers[-1] + 1) < scrub:
        outliers = np.asarray(list(outliers) + list(range(outliers[-1], n_scans)))
    gaps = np.diff(outliers)
    for i in np.where((gaps > 1) & (gaps < scrub + 1))[0]:
        outliers = np.asarray(list(outliers) + list(range(outliers[i] + 1, outliers[i + 1])))
    return np.sort(np.unique(outliers))


def _component(table, component, params, meta):
    """(columns DataFrame, missing column names) of one noise component."""
    if component == "non_steady_state":
        return table[_containing(table, "non_steady_state")], []
    if component == "high_pass":
        return table[_containing(table, "cosine")], []
    if component in ("motion", "wm_csf", "global_signal"):
        base = {"motion": _MOTION, "wm_csf": ["csf", "white_matter"]}.get(component, [component])
        wanted = _with_suffixes(base, params[component])
    elif component == "compcor":
        wanted = _compcor_columns(meta or {}, params["compcor"], params["n_compcor"])
        if not wanted:
            return None, [f"{params['compcor']} CompCor columns listed in the JSON sidecar"]
    elif component == "ica_aroma":
        if params["ica_aroma"] == "full":
            return table[[]], []  # the denoising is in the AROMA image itself
        wanted = _containing(table, "aroma")
        if not wanted:
            return None, ["aroma_motion_XX (ICA-AROMA noise components)"]
    elif component == "scrub":
        missing = [c for c in ("framewise_displacement", "std_dvars") if c not in table]
        if missing:
            return None, missing
        return _scrub_regressors(table, params), []
    else:  # "tedana" is refused before
        raise AssertionError(component)
    missing = [c for c in wanted if c not in table.columns]
    return (None, missing) if missing else (table[wanted], [])


def _scrub_regressors(table, params):
    n_scans = len(table)
    fd = np.where(table["framewise_displacement"] > params["fd_threshold"])[0]
    dvars = np.where(table["std_dvars"] > params["std_dvars_threshold"])[0]
    outliers = np.sort(np.unique(np.concatenate((fd, dvars))))
    if params["scrub"] > 0 and len(outliers) > 0:
        outliers = _optimize_scrub(outliers, n_scans, params["scrub"])
    regressors = pd.DataFrame(np.transpose(np.eye(n_scans)[outliers]).astype(int))
    regressors.columns = [f"motion_outlier_{k}" for k in range(regressors.shape[1])]
    return regressors


def _prepare_output(confounds, demean, where, params):
    """Outlier columns -> sample_mask; first-row n/a filled; demeaned (nilearn's order)."""
    outlier_cols = sorted(
        c for c in confounds.columns if "motion_outlier" in c or "non_steady_state" in c
    )
    kept = sorted(set(confounds.columns) - set(outlier_cols))
    sample_mask = None
    if outlier_cols:
        outliers = confounds.loc[:, outlier_cols].T.drop_duplicates().T
        sample_mask = np.where(outliers.sum(axis=1).to_numpy() == 0)[0]
        if sample_mask.size == 0:
            raise AllVolumesRemovedError(
                f"{where}: every one of its {len(confounds)} volumes is a motion outlier or "
                f"a non-steady-state volume (scrub={params['scrub']!r}, fd_threshold="
                f"{params['fd_threshold']!r}, std_dvars_threshold="
                f"{params['std_dvars_threshold']!r}); expected a run long enough to keep a "
                "volume: raise the thresholds, lower scrub, or leave this run out."
            )
    confounds = confounds.loc[:, kept]
    if confounds.size != 0:
        confounds = pd.DataFrame(
            fill_first_row(confounds.to_numpy(dtype=np.float64)), columns=confounds.columns
        )
        if demean:
            rows = slice(None) if sample_mask is None else sample_mask
            confounds = confounds - confounds.iloc[rows].mean(axis=0)
    return confounds, sample_mask


def _load_one(img, strategy, demean, params, storage_options, where):
    full_aroma = "ica_aroma" in strategy and params["ica_aroma"] == "full"
    path = find_confounds_file(
        img, storage_options=storage_options, full_aroma=full_aroma, where=where
    )
    table = read_confounds_frame(path, storage_options=storage_options)
    camel = [c for c in table.columns if c != c.lower() and c != c.upper() and "_" not in c]
    if camel:
        raise InputFileError(
            f"confounds file {path!r} has camel-case column names ({camel[:3]}...): fMRIPrep "
            "1.0/1.1 output; expected the tables of fMRIPrep >= 1.2."
        )
    try:
        float(table.columns[0])
    except ValueError:
        pass
    else:
        raise InputFileError(
            f"confounds file {path!r} has no header; expected fMRIPrep's named columns."
        )
    sidecar = re.sub(r"\.tsv$", ".json", path)
    anat_compcor = "compcor" in strategy and "anat" in params["compcor"]
    try:
        meta = read_json_sidecar(sidecar, storage_options=storage_options)
    except InputFileError as exc:
        if anat_compcor:
            raise ConfoundsNotFoundError(
                f"{where}={os.fspath(img)!r}: strategy 'compcor' (compcor="
                f"{params['compcor']!r}) needs the JSON sidecar {sidecar!r} (fMRIPrep >= 1.4 "
                f"writes it), which cannot be read: {exc}"
            ) from exc
        meta = None
    parts, missing = [], {}
    for component in ["non_steady_state", *strategy]:
        if component == "non_steady_state" and parts:
            continue  # listed in strategy too: detected once
        columns, lacking = _component(table, component, params, meta)
        if lacking:
            missing[component] = lacking
        elif columns is not None:
            parts.append(columns)
    if missing:
        detail = "; ".join(
            f"{c!r} ({c}={params[c]!r}) needs {cols}"
            if c in params and c in ("motion", "wm_csf", "global_signal", "compcor", "ica_aroma")
            else f"{c!r} needs {cols}"
            for c, cols in missing.items()
        )
        raise MissingConfoundsError(
            f"confounds file {path!r} lacks columns the strategy needs: {detail}. Expected "
            "an fMRIPrep table with these columns, or another strategy."
        )
    confounds = pd.concat(parts, axis=1) if parts else pd.DataFrame(index=table.index)
    return _prepare_output(confounds, demean, f"{where}={os.fspath(img)!r}", params)


def _check_strategy(strategy):
    if not isinstance(strategy, (tuple, list)):
        raise ParameterError(
            f"strategy={strategy!r} has type {type(strategy).__name__}; expected a tuple or "
            f"list of noise components among {ALL_CONFOUNDS}."
        )
    if len(strategy) == 0:
        warnings.warn(
            "strategy is empty, confounds will return None.",
            UserWarning,
            stacklevel=find_stack_level(),
        )
    for component in strategy:
        if component == "non_steady_state":
            warnings.warn(
                "Non-steady state volumes are always detected. It doesn't need to be supplied "
                "as part of the strategy. Supplying non_steady_state in strategy will not have "
                "additional effect.",
                UserWarning,
                stacklevel=find_stack_level(),
            )
        check_in("strategy", component, ALL_CONFOUNDS)
    if "tedana" in strategy:
        raise ParameterError(
            "strategy=('tedana', ...) is not supported by lazyconn (tedana's outputs are read "
            "by nilearn.interfaces.fmriprep.load_confounds); expected other noise components."
        )
    if "compcor" in strategy and "high_pass" not in strategy:
        raise ParameterError(
            f"strategy={tuple(strategy)!r} has 'compcor' without 'high_pass'; expected "
            "'high_pass' too (fMRIPrep's CompCor components are computed on high-passed data)."
        )


def _runs(img_files):
    """(list of run paths/URLs, whether a single run was given)."""
    if is_path_like(img_files):
        return [img_files], True
    if isinstance(img_files, (list, tuple)) and img_files:
        for i, item in enumerate(img_files):
            if not is_path_like(item):
                kind = "a list" if isinstance(item, (list, tuple)) else type(item).__name__
                raise ParameterTypeError(
                    f"img_files[{i}]={item!r} is {kind}; expected a path or URL of an fMRIPrep "
                    "preprocessed run (.nii.gz, .nii or a lazyconn .zarr store). GIFTI pairs "
                    "and CIFTI are not supported by lazyconn."
                )
        return list(img_files), False
    raise ParameterTypeError(
        f"img_files={img_files!r} has type {type(img_files).__name__}; expected a path or URL "
        "of an fMRIPrep preprocessed run, or a non-empty list of them."
    )


def load_confounds(
    img_files,
    strategy=("motion", "high_pass", "wm_csf"),
    motion="full",
    scrub=5,
    fd_threshold=0.5,
    std_dvars_threshold=1.5,
    wm_csf="basic",
    global_signal="basic",
    compcor="anat_combined",
    n_compcor="all",
    ica_aroma="full",
    tedana="aggressive",
    demean=True,
    *,
    storage_options=None,
):
    """Load fMRIPrep confounds by noise component, as ``nilearn.interfaces.fmriprep``.

    Same parameters, defaults and results as nilearn 0.14.1's ``load_confounds``, for runs
    whose fMRIPrep confounds table (and JSON sidecar) sit next to them.

    Parameters
    ----------
    img_files : str, os.PathLike, or list of them
        fMRIPrep preprocessed runs (``..._desc-preproc_bold.nii.gz``; ``.nii`` and lazyconn
        ``.zarr`` stores of the same name are accepted too), local paths or fsspec URLs.
        The confounds file ``..._desc-confounds_timeseries.tsv`` is found next to each run
        from its BIDS entities. For ``ica_aroma="full"``: the
        ``..._desc-smoothAROMAnonaggr_bold.nii.gz`` runs.
    strategy : tuple or list of str, default=("motion", "high_pass", "wm_csf")
        Noise components: ``"motion"``, ``"high_pass"`` (``cosineXX``), ``"wm_csf"``,
        ``"global_signal"``, ``"compcor"`` (needs ``"high_pass"``), ``"ica_aroma"``,
        ``"scrub"``. Non-steady-state volumes (``non_steady_state_outlier_XX``) are always
        removed through ``sample_mask``.
    motion : {"basic", "power2", "derivatives", "full"}, default="full"
        6 motion parameters, plus quadratic terms, derivatives, or both and the squared
        derivatives (24).
    scrub : int, default=5
        After removing volumes above ``fd_threshold`` or ``std_dvars_threshold``, also remove
        segments shorter than ``scrub`` volumes (0: only the outliers).
    fd_threshold : float, default=0.5
        Framewise displacement threshold (mm) of ``"scrub"``.
    std_dvars_threshold : float, default=1.5
        Standardized DVARS threshold of ``"scrub"``.
    wm_csf : {"basic", "power2", "derivatives", "full"}, default="basic"
        White-matter and CSF mean signals, expanded as ``motion``.
    global_signal : {"basic", "power2", "derivatives", "full"}, default="basic"
        Global signal, expanded as ``motion``.
    compcor : str, default="anat_combined"
        ``"anat_combined"``, ``"anat_separated"``, ``"temporal"``,
        ``"temporal_anat_combined"`` or ``"temporal_anat_separated"``; the columns are
        chosen from the JSON sidecar (their ``Mask``).
    n_compcor : "all" or int, default="all"
        CompCor components kept (per mask for the separated kinds).
    ica_aroma : {"full", "basic"}, default="full"
        ``"full"``: the runs are the AROMA-denoised images, no regressor is added;
        ``"basic"``: the ``aroma_motion_XX`` noise components are regressors.
    tedana : str, default="aggressive"
        Kept for nilearn's signature; the ``"tedana"`` component is not supported.
    demean : bool, default=True
        Subtract each confound's mean (over the kept volumes when some are removed).
    storage_options : dict, optional
        fsspec options for URLs (lazyconn only).

    Returns
    -------
    confounds : pandas.DataFrame or list of them (None if ``strategy`` is empty)
        The selected columns in alphabetical order, the first-row ``n/a`` of derivatives
        filled with the second row's value, demeaned if ``demean``.
    sample_mask : None, numpy.ndarray of int, or list of them
        Indices of the kept volumes (None when no volume is removed); pass it as
        ``sample_mask`` to a masker's ``transform`` or :func:`lazyconn.signal.clean`.

    Notes
    -----
    Differences from nilearn, on purpose: a run with no volume left after scrubbing raises
    :class:`~lazyconn.exceptions.AllVolumesRemovedError` (nilearn warns and returns an empty
    ``sample_mask`` that fails later); a table lacking some of a component's columns names
    them all (nilearn raises a ``KeyError`` for partial sets of ``wm_csf`` columns);
    ``"tedana"`` and GIFTI/CIFTI runs are not supported. Errors are lazyconn classes that
    subclass ``ValueError`` like nilearn's.
    """
    _check_strategy(strategy)
    for name, value, allowed in (
        ("motion", motion, CONFOUND_MODEL),
        ("wm_csf", wm_csf, CONFOUND_MODEL),
        ("global_signal", global_signal, CONFOUND_MODEL),
        ("compcor", compcor, COMPCOR_TYPES),
        ("ica_aroma", ica_aroma, ("full", "basic")),
    ):
        if name in strategy:
            check_in(name, value, allowed)
    if (
        "compcor" in strategy
        and n_compcor != "all"
        and (isinstance(n_compcor, bool) or not isinstance(n_compcor, (int, np.integer)))
    ):
        raise ParameterError(
            f"n_compcor={n_compcor!r} is not valid; expected 'all' or an int >= 0."
        )
    params = {
        "motion": motion,
        "scrub": scrub,
        "fd_threshold": fd_threshold,
        "std_dvars_threshold": std_dvars_threshold,
        "wm_csf": wm_csf,
        "global_signal": global_signal,
        "compcor": compcor,
        "n_compcor": n_compcor,
        "ica_aroma": ica_aroma,
    }
    runs, single = _runs(img_files)
    confounds, masks = [], []
    for i, run in enumerate(runs):
        where = "img_files" if single else f"img_files[{i}]"
        conf, mask = _load_one(run, list(strategy), demean, params, storage_options, where)
        confounds.append(conf)
        masks.append(mask)
    if single:
        confounds, masks = confounds[0], masks[0]
    if len(strategy) == 0:
        return None, masks
    return confounds, masks


def load_confounds_strategy(img_files, denoise_strategy="simple", **kwargs):
    """Load fMRIPrep confounds with a preset denoising strategy, as nilearn's function.

    Parameters
    ----------
    img_files : str, os.PathLike, or list of them
        As :func:`load_confounds`.
    denoise_strategy : {"simple", "scrubbing", "compcor", "ica_aroma"}, default="simple"
        The preset (see :data:`PRESET_STRATEGIES`): ``"simple"`` high-pass + 24 motion + WM/CSF
        means; ``"scrubbing"`` the same with WM/CSF ``"full"`` and scrubbing (FD > 0.5 mm or
        standardized DVARS > 1.5, segments < 5 volumes); ``"compcor"`` high-pass + 24 motion +
        anatomical CompCor; ``"ica_aroma"`` high-pass + WM/CSF on the AROMA-denoised runs.
    **kwargs
        The preset's tunable parameters of :func:`load_confounds` (``motion``,
        ``wm_csf``, ``global_signal`` (adds the global signal), ``scrub``,
        ``fd_threshold``, ``std_dvars_threshold``, ``compcor``, ``n_compcor``, ``demean``),
        and ``storage_options``. Others are ignored with a warning, as in nilearn.

    Returns
    -------
    confounds, sample_mask
        As :func:`load_confounds`.
    """
    check_in("denoise_strategy", denoise_strategy, PRESET_STRATEGIES)
    parameters = dict(PRESET_STRATEGIES[denoise_strategy])
    tunable = [k for k in parameters if k not in ("strategy", "ica_aroma")]
    storage_options = kwargs.pop("storage_options", None)
    for key in tunable:
        value = kwargs.pop(key, None)
        if value is not None:
            parameters[key] = value
        if key == "global_signal":
            if isinstance(value, str):
                parameters["strategy"] += ("global_signal",)
            else:
                parameters.pop("global_signal", None)
    if kwargs:
        warnings.warn(
            f"The following parameters are not needed for the selected strategy "
            f"'{denoise_strategy}': {list(kwargs)}; parameters accepted: {tunable}",
            UserWarning,
            stacklevel=find_stack_level(),
        )
    return load_confounds(img_files, storage_options=storage_options, **parameters)
