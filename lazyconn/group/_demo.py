"""``lazyconn demo``: the whole connectome workflow on a synthetic study, end to end.

Makes a synthetic fMRIPrep-like study, converts it to Zarr, extracts Power-264 sphere signals
(radius 5 mm; smoothing, detrend, standardize, band-pass 0.01-0.1 Hz, t_r from the data,
fMRIPrep confounds found by ``load_confounds``) and partial-correlation connectomes for every
subject on a LocalCluster, aggregates them and writes matrices, plots and a report (planted
truth vs recovered). No network.

The data generators come from ``lazyconn.datasets``, a layer below this one.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from lazyconn._utils import check_int
from lazyconn.datasets import fetch_coords_power_2011, make_synthetic_fmri

#: Study size: the default (about a minute or two on 2 cores) and ``--small`` (seconds).
DEFAULT = {"n_subjects": 10, "n_timepoints": 100, "resolution": 4.0}
SMALL = {"n_subjects": 4, "n_timepoints": 60, "resolution": 8.0}

#: fMRIPrep confounds (``lazyconn.interfaces.fmriprep.load_confounds``): high-pass cosines, the
#: 6 motion parameters, white-matter and CSF means and anatomical CompCor, as nilearn's
#: examples use (few regressors: the demo's runs are short).
DENOISE = {"strategy": ("high_pass", "motion", "wm_csf", "compcor"), "motion": "basic"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``lazyconn demo`` that only this workflow has (none: the common ones are
    declared by :mod:`lazyconn.cli`)."""
    del parser


#: Name of the block of ROIs outside every planted region.
UNPLANTED = "no planted signal"


def planted_labels(coords: np.ndarray, study, radius: float = 10.0):
    """Planted region (index, -1 if none) and network of each ROI centre.

    An ROI belongs to a planted region when its centre lies within ``radius`` mm (the
    generator's default ``region_radius``) of the region's centre.
    """
    dist = np.sqrt(((coords[:, None, :] - study.region_coords[None]) ** 2).sum(axis=-1))
    region = np.where(dist.min(axis=1) <= radius, dist.argmin(axis=1), -1)
    network = [study.region_networks[r] if r >= 0 else UNPLANTED for r in region]
    return region, network


def planted_order(network: list[str], networks: list[str]):
    """ROI order grouped by planted network (unplanted last) and the blocks (name, start, stop)."""
    names = [*networks, UNPLANTED]
    rank = np.array([names.index(n) for n in network])
    order = np.argsort(rank, kind="stable")
    blocks, start = [], 0
    for k, name in enumerate(names):
        size = int((rank == k).sum())
        if size:
            blocks.append((name, start, start + size))
            start += size
    return order, blocks


def planted_matrix(region: np.ndarray, study) -> np.ndarray:
    """The planted correlation between ROIs (their regions'; 0 where an ROI is unplanted)."""
    inside = region >= 0
    truth = np.zeros((len(region), len(region)))
    idx = np.flatnonzero(inside)
    truth[np.ix_(idx, idx)] = study.region_correlation[np.ix_(region[idx], region[idx])]
    np.fill_diagonal(truth, 1.0)
    return truth


def compare_with_truth(matrix: np.ndarray, region: np.ndarray, study) -> dict:
    """How the recovered matrix relates to the planted truth (numbers for the report).

    Returns the mean recovered value over ROI pairs grouped by their planted relation, and
    the Pearson correlation between recovered and planted values over pairs of planted ROIs
    in different regions.
    """
    truth = planted_matrix(region, study)
    n = len(region)
    iu = np.triu_indices(n, k=1)
    inside = (region[iu[0]] >= 0) & (region[iu[1]] >= 0)
    same_region = inside & (region[iu[0]] == region[iu[1]])
    planted = truth[iu]
    values = matrix[iu]
    groups = {
        "same planted region": same_region,
        "same network, other region": inside & ~same_region & (planted >= 0.5),
        "linked networks (+)": inside & (planted > 0) & (planted < 0.5),
        "anti-correlated networks (-)": inside & (planted < 0),
        "unlinked planted regions": inside & (planted == 0),
        "pairs with an unplanted ROI": ~inside,
    }
    means = {
        name: (float(values[sel].mean()), int(sel.sum()))
        for name, sel in groups.items()
        if sel.any()
    }
    between = inside & ~same_region
    r = float(np.corrcoef(values[between], planted[between])[0, 1]) if between.sum() > 2 else None
    return {"means": means, "pearson": r, "n_planted_rois": int((region >= 0).sum())}


def _plots(output: Path, matrix: np.ndarray, coords: np.ndarray, region, network, study):
    """Matrix (ordered by planted network, next to the truth) and connectome plots.

    Needs the ``plot`` extra (matplotlib, nilearn.plotting); else skipped with a note.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        from nilearn import plotting  # optional: pip install "lazyconn[plot]"
    except ImportError as exc:
        return [f"plots skipped: {exc.name} is not installed (pip install 'lazyconn[plot]')"]
    import matplotlib.pyplot as plt

    shown = matrix.copy()
    np.fill_diagonal(shown, 0)
    bound = float(np.abs(shown).max()) or 1.0
    order, blocks = planted_order(network, study.networks)
    truth = planted_matrix(region, study)
    np.fill_diagonal(truth, 0)
    planted = [b for b in blocks if b[0] != UNPLANTED]
    n_in = planted[-1][2] if planted else 0
    inner = order[:n_in]
    bound_in = float(np.abs(shown[np.ix_(inner, inner)]).max()) or 1.0
    fig, axes = plt.subplots(1, 3, figsize=(18, 6.2), layout="constrained")
    panels = (
        (truth, inner, planted, 1.0, f"Planted correlation ({n_in} ROIs in planted regions)"),
        (shown, inner, planted, bound_in, "Recovered partial correlation, same ROIs"),
        (
            shown,
            order,
            [("planted", 0, n_in), (UNPLANTED, n_in, len(order))],
            bound,
            "Recovered, all 264 ROIs",
        ),
    )
    for ax, (values, rows, parts, vmax, title) in zip(axes, panels, strict=True):
        image = ax.imshow(
            values[np.ix_(rows, rows)], cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="none"
        )
        for _, start, _stop in parts[1:]:
            ax.axhline(start - 0.5, color="k", lw=0.6)
            ax.axvline(start - 0.5, color="k", lw=0.6)
        centres = [(start + stop - 1) / 2 for _, start, stop in parts]
        labels = [f"{name} ({stop - start})" for name, start, stop in parts]
        ax.set_xticks(centres, labels, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(centres, labels, fontsize=8)
        ax.set_title(title, fontsize=10)
        fig.colorbar(image, ax=ax, shrink=0.7)
    fig.suptitle(
        "Group connectome vs the planted truth, Power-264 ROIs ordered by planted network"
    )
    fig.savefig(output / "matrix.png", dpi=100)
    plt.close("all")
    display = plotting.plot_connectome(
        shown,
        coords,
        edge_threshold="99.9%",
        node_size=10,
        colorbar=True,
        title="Group connectome (strongest 0.1 %)",
    )
    display.savefig(output / "connectome.png", dpi=100)
    display.close()
    plt.close("all")
    return ["matrix.png", "connectome.png"]


def check_size(base: dict, n_subjects, n_workers) -> dict:
    """A demo's study size (``base``, with ``n_subjects`` if given), checked."""
    size = dict(base)
    if n_subjects is not None:
        size["n_subjects"] = check_int("n_subjects", n_subjects, low=2, expected="an integer >= 2")
    check_int("n_workers", n_workers, low=1, expected="an integer >= 1")
    return size


class Stages(dict):
    """Seconds per named stage of a demo, each announced on stderr when ``progress``."""

    def __init__(self, progress: bool):
        super().__init__()
        self.progress = progress

    def run(self, name, func, *args, **kwargs):
        if self.progress:
            print(f"[lazyconn demo] {name}...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        out = func(*args, **kwargs)
        self[name] = time.perf_counter() - t0
        return out


def convert_study(study, output: Path, size: dict, progress: bool) -> list[str]:
    """Zarr stores of the study's runs; complete stores of an earlier run are reused."""
    from lazyconn.image import load
    from lazyconn.io.convert import convert

    # One folder per study size, so stores of another size are never taken for these.
    zarr_dir = output / "zarr" / f"{size['n_timepoints']}tp-{size['resolution']:g}mm"
    zarr_dir.mkdir(parents=True, exist_ok=True)
    stores = [str(zarr_dir / f"{s}.zarr") for s in study.subjects]
    todo = []
    for src, dst in zip(study.func, stores, strict=True):
        try:
            load(dst)
        except Exception:  # missing or incomplete: (re)convert
            todo.append((src, dst))
    if todo:
        convert([s for s, _ in todo], [d for _, d in todo], overwrite=True, progress=progress)
    return stores


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
    """Run the demo into ``output``; return what was written and the timings.

    Parameters
    ----------
    output : str or Path
    n_subjects : int, optional
    small : bool
    n_workers : int
    client : "local", None, address or distributed.Client
        Passed to :class:`GroupConnectome` (``"local"`` starts a LocalCluster).
    progress : bool
        Show progress (stage lines and progress bars) on stderr.
    stream : file, default sys.stdout
        Where the final summary line goes.
    """
    # Imported here so that building the command line parser stays cheap.
    from lazyconn.connectome import ConnectivityMeasure
    from lazyconn.group.pipeline import GroupConnectome
    from lazyconn.image import load
    from lazyconn.interfaces.fmriprep import load_confounds
    from lazyconn.maskers import NiftiSpheresMasker

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
        all_confounds=True,  # every column of fMRIPrep's table that the strategies read
        n_timepoints=size["n_timepoints"],
        resolution=size["resolution"],
        data_dir=output / "data",
        overwrite=True,
    )
    stores = stages.run(
        "converting the runs to Zarr", convert_study, study, output, size, progress
    )

    first = load(stores[0])
    t_r = first.t_r
    power = fetch_coords_power_2011()
    coords = power.rois[["x", "y", "z"]].to_numpy()
    masker = NiftiSpheresMasker(
        seeds=coords,
        radius=5.0,
        smoothing_fwhm=6,
        detrend=True,
        standardize="zscore_sample",
        low_pass=0.1,
        high_pass=0.01,
        t_r=t_r,
    )
    measure = ConnectivityMeasure(kind="partial correlation")
    # found next to each run, as nilearn's load_confounds_strategy finds them
    confounds, sample_masks = load_confounds(study.func, **DENOISE)
    where = (
        f"a LocalCluster of {n_workers} workers"
        if client == "local"
        else "dask's local threads"
        if client is None
        else f"the scheduler {client!r}"
    )
    group = stages.run(
        f"Power-264 signals and partial correlations on {where}",
        GroupConnectome(
            masker,
            measure,
            cache_dir=output / "cache",
            client=client,
            n_workers=n_workers,
            progress=progress,
        ).fit,
        stores,
        confounds=confounds,
        sample_mask=sample_masks,
        subjects=list(study.subjects),
    )
    stages.run("writing matrices", _write_matrices, output, group, coords)
    region, network = planted_labels(coords, study)
    truth = compare_with_truth(group.group_matrix_, region, study)
    plots = stages.run(
        "plotting", _plots, output, group.group_matrix_, coords, region, network, study
    )
    stages["total"] = time.perf_counter() - start
    columns = list(confounds[0].columns)
    report = _report(output, study, first, masker, group, stages, plots, where, truth, columns)
    (output / "report.md").write_text(report)
    for line in plots:
        if line.startswith("plots skipped"):
            print(f"[lazyconn demo] {line}", file=sys.stderr)
    print(
        f"[lazyconn demo] done in {stages['total']:.1f} s; see {output / 'report.md'}", file=stream
    )
    return {"output": output, "group": group, "stages": stages, "plots": plots, "truth": truth}


def _write_matrices(output: Path, group, coords) -> None:
    np.save(output / "group_matrix.npy", group.group_matrix_)
    np.save(output / "subject_matrices.npy", group.subject_matrices_)
    np.save(output / "coords.npy", coords)
    (output / "subjects.txt").write_text("\n".join(group.subjects_) + "\n")


def _report(output, study, first, masker, group, stages, plots, where, truth, columns) -> str:
    import lazyconn

    lines = [
        "# lazyconn demo",
        "",
        f"lazyconn {lazyconn.__version__}, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}.",
        "",
        "## What was done",
        "",
        f"1. Simulated {len(study.func)} subjects (`lazyconn.datasets.make_synthetic_fmri`): "
        f"runs of shape {first.shape}, voxel {first.zooms[0]:g} mm, t_r {first.t_r:g} s, "
        "with fMRIPrep-like confounds, in `data/`.",
        "2. Converted every run to a Zarr store (`lazyconn.convert`), in `zarr/`.",
        "3. Extracted the signals of the 264 Power et al. (2011) spheres "
        f"(`NiftiSpheresMasker(radius={masker.radius:g}, smoothing_fwhm={masker.smoothing_fwhm},"
        f" detrend=True, standardize='zscore_sample', low_pass={masker.low_pass}, "
        f"high_pass={masker.high_pass}, t_r={masker.t_r:g})`, confounds: "
        f"`load_confounds(func, strategy={DENOISE['strategy']}, motion='basic')`: "
        f"{len(columns)} regressors) and computed partial-correlation matrices "
        f"(`ConnectivityMeasure(kind='partial correlation')`, Ledoit-Wolf) for every subject "
        f"on {where}, as one dask graph (`lazyconn.group.GroupConnectome`).",
        "4. Averaged the subject matrices (tree reduction) into the group matrix.",
        "",
        "## Results",
        "",
        f"- subjects: {len(group.subjects_)} computed or cached "
        f"({group.n_cached_} read back from `cache/`), {len(group.failed_)} failed",
        f"- `group_matrix.npy`: {group.group_matrix_.shape}; `subject_matrices.npy`: "
        f"{group.subject_matrices_.shape}; `coords.npy`; `subjects.txt`",
        "- plots: " + ", ".join(f"`{p}`" if p.endswith(".png") else p for p in plots),
        "",
        "## Compared with the planted truth",
        "",
        f"The study has {len(study.networks)} planted networks of 4 regions each; "
        f"{truth['n_planted_rois']} of the 264 Power ROIs lie inside a planted region "
        "(centre within 10 mm); the others carry no planted signal. `matrix.png` shows the "
        "planted and the recovered matrices with the ROIs ordered by planted network. "
        "Partial correlations are not the planted (full) correlations: their signs and order "
        "should follow the truth, not their values.",
        "",
        "| ROI pairs | pairs | mean group partial correlation |",
        "| --- | ---: | ---: |",
        *[f"| {name} | {n} | {mean:+.3f} |" for name, (mean, n) in truth["means"].items()],
        "",
        (
            "Pearson correlation between the recovered and the planted values over pairs of "
            f"planted ROIs in different regions: {truth['pearson']:.2f}."
            if truth["pearson"] is not None
            else "Too few planted ROI pairs to correlate with the truth."
        ),
        "",
        "## Time per stage",
        "",
        "| stage | seconds |",
        "| --- | ---: |",
    ]
    lines += [f"| {name} | {seconds:.2f} |" for name, seconds in stages.items()]
    inner = {k: v for k, v in group.timings_.items() if isinstance(v, float) and k != "total"}
    lines += [
        "",
        "Inside the connectome stage (`GroupConnectome.timings_`): "
        + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in inner.items())
        + ".",
    ]
    per_subject = list(group.timings_.get("subjects", {}).values())
    if per_subject:
        lines += [
            "",
            f"Per subject (inside the workers): median {np.median(per_subject):.2f} s, "
            f"max {np.max(per_subject):.2f} s.",
        ]
    return "\n".join(lines) + "\n"


def run(args) -> int:
    """Run ``lazyconn demo`` from parsed arguments (see :mod:`lazyconn.cli`)."""
    client = args.scheduler if args.scheduler else "local"
    run_demo(
        os.fspath(args.output),
        n_subjects=args.n_subjects,
        small=args.small,
        n_workers=args.n_workers,
        client=client,
        progress=not args.no_progress,
    )
    return 0
