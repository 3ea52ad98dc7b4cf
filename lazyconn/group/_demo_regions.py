"""``lazyconn demo --workflow regions``: nilearn's region-extraction workflow, end to end.

Simulates a study with planted networks, converts the runs to Zarr, learns 8 dictionary
maps (``DictLearning``), splits them into regions (``RegionExtractor``: ratio_n_voxels 0.5,
local_regions, 1350 mm³), computes a correlation connectome per subject and their mean as
one graph (:func:`lazyconn.group.region_connectome`), and writes the maps, the regions, the
matrices, plots and a report of how well the planted regions (Dice) and correlations were
recovered. No network.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from lazyconn.datasets import make_synthetic_fmri
from lazyconn.datasets.recovery import connectome_recovery, match_regions
from lazyconn.group._demo import Stages, check_size, convert_study

#: Study sizes: the default (a few minutes on 2 cores) and ``--small`` (well under a minute).
DEFAULT = {"n_subjects": 10, "n_timepoints": 120, "resolution": 4.0}
SMALL = {"n_subjects": 4, "n_timepoints": 80, "resolution": 8.0}

#: The seed's parameters (nilearn's plot_extract_regions_dictlearning_maps).
DICT_LEARNING = {
    "n_components": 8,
    "smoothing_fwhm": 6.0,
    "standardize": "zscore_sample",
    "random_state": 0,
}
EXTRACTOR = {
    "threshold": 0.5,
    "thresholding_strategy": "ratio_n_voxels",
    "extractor": "local_regions",
    "min_region_size": 1350,
    "standardize": "zscore_sample",
    "standardize_confounds": True,
}


#: The confounds (``lazyconn.interfaces.fmriprep.load_confounds``): the 6 motion parameters
#: and the white-matter and CSF means, demeaned (nilearn's ``"motion"`` and ``"wm_csf"``
#: components, ``"basic"``). The seed's reduced table adds 6 CompCor columns, linearly
#: dependent on the CSF and white-matter means in the synthetic data (regressing them
#: removes a direction of rounding noise, on which two implementations then disagree), and
#: the framewise displacement, which fMRIPrep's strategies use for scrubbing only.
DENOISE = {"strategy": ("motion", "wm_csf"), "motion": "basic", "wm_csf": "basic"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This workflow has no options of its own (the common ones are in :mod:`lazyconn.cli`)."""
    del parser


def _plots(output: Path, result, study) -> list[str]:
    """Maps, regions and matrix figures (nilearn's plotting, the optional ``plot`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from nilearn import plotting
    except ImportError as exc:
        return [f"plots skipped: {exc.name} is not installed (pip install 'lazyconn[plot]')"]
    written = []
    regions = result.extractor.regions_img_
    n = regions.shape[-1]
    for name, img, title in (
        ("maps.png", result.maps_img, "Dictionary learning maps"),
        ("regions.png", regions, f"{n} regions from 8 maps"),
    ):
        display = plotting.plot_prob_atlas(img, view_type="filled_contours", title=title)
        display.savefig(output / name)
        display.close()
        written.append(name)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    plotting.plot_matrix(
        result.mean_matrix, vmin=-1, vmax=1, axes=axes[0], title="mean correlation (regions)"
    )
    match = result.match.match
    seen = match >= 0
    sub = np.full(study.region_correlation.shape, np.nan)
    idx = np.flatnonzero(seen)
    sub[np.ix_(idx, idx)] = result.mean_matrix[np.ix_(match[idx], match[idx])]
    np.fill_diagonal(sub, 1.0)
    plotting.plot_matrix(
        np.where(np.triu(np.ones_like(sub, dtype=bool)), study.region_correlation, sub),
        labels=study.region_names,
        vmin=-1,
        vmax=1,
        axes=axes[1],
        title="planted (upper) vs recovered (lower)",
    )
    fig.savefig(output / "matrices.png", bbox_inches="tight")
    written.append("matrices.png")
    coords = plotting.find_probabilistic_atlas_cut_coords(regions)
    display = plotting.plot_connectome(
        result.mean_matrix, coords, edge_threshold="90%", title="mean correlation"
    )
    display.savefig(output / "connectome.png")
    display.close()
    written.append("connectome.png")
    plt.close("all")
    return written


def run_demo(
    output,
    *,
    n_subjects=None,
    small=False,
    n_workers=2,
    client="local",
    progress=True,
    stream=None,
) -> dict:
    """Run the regions demo into ``output``; return the results and timings.

    Parameters
    ----------
    output : str or Path
    n_subjects : int, optional (>= 2)
    small : bool
        The small study (8 mm, 4 subjects).
    n_workers : int
        Workers of the LocalCluster (``client="local"``).
    client : "local", None, address or distributed.Client
    progress : bool
    stream : file, default sys.stdout
    """
    from lazyconn.decomposition import DictLearning
    from lazyconn.group.regions import region_connectome
    from lazyconn.image import load
    from lazyconn.interfaces.fmriprep import load_confounds
    from lazyconn.regions import RegionExtractor

    stream = sys.stdout if stream is None else stream
    size = check_size(SMALL if small else DEFAULT, n_subjects, n_workers)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    stages = Stages(progress)
    start = time.perf_counter()

    study = stages.run(
        f"simulating {size['n_subjects']} subjects",
        make_synthetic_fmri,
        size["n_subjects"],
        n_timepoints=size["n_timepoints"],
        resolution=size["resolution"],
        nuisance=0.2,
        data_dir=output / "data",
        overwrite=True,
    )
    stores = stages.run(
        "converting the runs to Zarr", convert_study, study, output, size, progress
    )
    result = stages.run(
        "DictLearning -> RegionExtractor -> correlation connectomes",
        region_connectome,
        stores,
        DictLearning(**DICT_LEARNING, client=client, n_workers=n_workers),
        RegionExtractor(**EXTRACTOR),
        confounds=load_confounds(study.func, **DENOISE)[0],
        subjects=list(study.subjects),
        cache_dir=output / "cache",
        client=client,
        n_workers=n_workers,
        progress=progress,
    )
    result.match = match_regions(result.extractor.regions_img_, study.labels_img)
    result.recovery = connectome_recovery(
        result.mean_matrix, result.match.match, study.region_correlation
    )
    load(result.maps_img).to_nifti(output / "maps.nii.gz")
    load(result.extractor.regions_img_).to_nifti(output / "regions.nii.gz")
    np.save(output / "mean_matrix.npy", result.mean_matrix)
    np.save(output / "subject_matrices.npy", result.group.subject_matrices_)
    plots = stages.run("plotting", _plots, output, result, study)
    stages["total"] = time.perf_counter() - start
    (output / "report.md").write_text(_report(study, result, stages, plots, size))
    print(
        f"[lazyconn demo] done in {stages['total']:.1f} s; see {output / 'report.md'}",
        file=stream,
    )
    return {"output": output, "result": result, "stages": stages, "plots": plots, "study": study}


def _report(study, result, stages, plots, size) -> str:
    regions = result.extractor.regions_img_
    match, rec = result.match, result.recovery
    lines = [
        "# lazyconn demo: region extraction (nilearn's seed-001 workflow)",
        "",
        f"Study: {size['n_subjects']} synthetic subjects, {size['n_timepoints']} volumes at "
        f"{size['resolution']:g} mm, {len(study.networks)} planted networks of "
        f"{len(study.region_names)} regions.",
        "",
        f"DictLearning({', '.join(f'{k}={v!r}' for k, v in DICT_LEARNING.items())}) -> "
        f"RegionExtractor({', '.join(f'{k}={v!r}' for k, v in EXTRACTOR.items())}) -> "
        "ConnectivityMeasure(kind='correlation') per subject -> mean.",
        "",
        f"**{regions.shape[-1]} regions** extracted from 8 maps (regions per map: "
        f"{np.bincount(result.extractor.index_, minlength=8).tolist()}).",
        "",
        "## Recovery of the planted truth",
        "",
        f"- Planted regions matched by an extracted region: {rec.coverage:.0%}; mean best "
        f"Dice {match.mean_dice:.2f} (median {np.median(match.dice):.2f}).",
        f"- Planted correlations vs the mean matrix at the matched regions: r = {rec.r:.2f}, "
        f"mean absolute difference {rec.mae:.2f} over {rec.n_pairs} pairs.",
        "",
        "| planted region | network | best Dice | extracted region |",
        "| --- | --- | --- | --- |",
    ]
    for name, net, d, m in zip(
        study.region_names, study.region_networks, match.dice, match.match, strict=True
    ):
        lines.append(f"| {name} | {net} | {d:.2f} | {m if m >= 0 else '-'} |")
    lines += ["", "## Stages (seconds)", ""]
    lines += [f"- {k}: {v:.1f}" for k, v in stages.items()]
    lines += [
        "",
        "## Files",
        "",
        "- maps.nii.gz, regions.nii.gz, mean_matrix.npy, subject_matrices.npy",
    ]
    lines += [f"- {p}" for p in plots]
    return "\n".join(lines) + "\n"


def run(args) -> int:
    """Run ``lazyconn demo --workflow regions`` from parsed arguments (see :mod:`lazyconn.cli`)."""
    run_demo(
        os.fspath(args.output),
        n_subjects=args.n_subjects,
        small=args.small,
        n_workers=args.n_workers,
        client=args.scheduler if args.scheduler else "local",
        progress=not args.no_progress,
    )
    return 0
