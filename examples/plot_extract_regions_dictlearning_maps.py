"""
Regions extraction using dictionary learning and functional connectomes
=======================================================================

nilearn's example ``plot_extract_regions_dictlearning_maps``, written with lazyconn:
:class:`~lazyconn.decomposition.DictLearning` finds 8 functional networks in 20 subjects,
:class:`~lazyconn.regions.RegionExtractor` splits them into separate regions (random-walker
``local_regions``, ``ratio_n_voxels`` thresholding, regions of at least 1350 mm³), and a
correlation connectome of the regions is computed for every subject, then averaged.

The names, parameters and results are nilearn's: only the imports change. What differs is
how it runs: every subject's run is read once per pass, chunk by chunk (the 6 mm smoothing
of the RegionExtractor is folded into the regions' weights), and the connectomes of all
subjects are computed as one dask graph (:class:`~lazyconn.group.GroupConnectome`), on
threads, a ``LocalCluster`` or a remote cluster, from ``.nii.gz`` files or zarr stores.

The data are a synthetic study with planted networks (nilearn's example downloads the
development fMRI dataset), so we can also measure how well the networks are recovered.

Run ``python examples/plot_extract_regions_dictlearning_maps.py``
(``LAZYCONN_EXAMPLES_SMALL=1`` for a quick run).
"""

import os
from pathlib import Path

import numpy as np

from lazyconn import datasets
from lazyconn.connectome import ConnectivityMeasure
from lazyconn.datasets.recovery import connectome_recovery, match_regions
from lazyconn.decomposition import DictLearning
from lazyconn.group import GroupConnectome
from lazyconn.interfaces.fmriprep import load_confounds
from lazyconn.regions import RegionExtractor


def main(small=False, plot=True, data_dir=None, output_dir=None, client=None):
    """Run the example; returns the fitted objects and the planted-truth scores."""
    output_dir = Path(output_dir or "extract_regions_outputs")
    output_dir.mkdir(parents=True, exist_ok=True)

    ###########################################################################
    # A synthetic study (nilearn: ``fetch_development_fmri(n_subjects=20)``)
    # ---------------------------------------------------------------------
    # The confounds, found next to each run by ``load_confounds``: the 6 motion parameters
    # and the CSF and white-matter means. (nilearn's fetcher gives 15 columns: these, the
    # framewise displacement, a scrubbing criterion rather than a regressor in fMRIPrep's
    # strategies, and 6 CompCor columns, which in the synthetic data are linearly dependent
    # on the CSF / white-matter means: regressing them removes a direction that is rounding
    # noise, on which any two implementations disagree.)
    rest_dataset = datasets.make_synthetic_fmri(
        n_subjects=4 if small else 20,
        n_timepoints=80 if small else 168,
        resolution=8 if small else 4,
        nuisance=0.2,
        data_dir=data_dir,
    )
    func_filenames = rest_dataset.func
    confounds, _ = load_confounds(func_filenames, strategy=("motion", "wm_csf"), motion="basic")

    ###########################################################################
    # Functional networks with dictionary learning
    # --------------------------------------------
    # nilearn's example fits on runs that were denoised beforehand; the synthetic runs
    # carry their nuisance signals, so the fit is given the confounds (as the connectomes
    # below are).
    dict_learn = DictLearning(
        n_components=8,
        smoothing_fwhm=6.0,
        random_state=0,
        standardize="zscore_sample",
        verbose=1,
        client=client,
    )
    dict_learn.fit(func_filenames, confounds=confounds)
    components_img = dict_learn.components_img_

    ###########################################################################
    # Region extraction
    # -----------------
    # ``threshold=0.5`` keeps about half a grid of voxels across the 8 maps; the random
    # walker splits each map's foreground between its peaks; regions under 1350 mm³ go.
    extractor = RegionExtractor(
        components_img,
        threshold=0.5,
        thresholding_strategy="ratio_n_voxels",
        extractor="local_regions",
        standardize="zscore_sample",
        standardize_confounds=True,
        min_region_size=1350,
    )
    extractor.fit()
    regions_extracted_img = extractor.regions_img_
    regions_index = extractor.index_
    n_regions_extracted = regions_extracted_img.shape[-1]
    print(f"{n_regions_extracted} regions are extracted from 8 components.")

    ###########################################################################
    # One correlation connectome per subject, and their mean
    # ------------------------------------------------------
    # nilearn loops over subjects (``extractor.transform(filename, confounds=confound)``
    # then ``ConnectivityMeasure(kind="correlation").fit_transform``). GroupConnectome runs
    # the same chain for every subject as one graph and averages the matrices.
    connectome_measure = ConnectivityMeasure(kind="correlation")
    group = GroupConnectome(extractor, connectome_measure, client=client, progress=not small).fit(
        func_filenames, confounds=confounds
    )
    correlations = group.subject_matrices_
    mean_correlations = np.mean(correlations, axis=0).reshape(
        n_regions_extracted, n_regions_extracted
    )

    ###########################################################################
    # How well are the planted networks recovered?
    # --------------------------------------------
    # Each planted region is matched with the extracted region overlapping it best (Dice),
    # and the mean matrix, read at the matched regions, is compared with the planted
    # correlations.
    regions_match = match_regions(regions_extracted_img, rest_dataset.labels_img)
    recovery = connectome_recovery(
        mean_correlations, regions_match.match, rest_dataset.region_correlation
    )
    print(
        f"planted regions: mean Dice {regions_match.mean_dice:.2f}; planted correlations "
        f"recovered with r = {recovery.r:.2f} over {recovery.n_pairs} pairs"
    )

    if plot:
        _plots(output_dir, components_img, regions_extracted_img, regions_index, mean_correlations)
    return {
        "dataset": rest_dataset,
        "confounds": confounds,
        "dict_learn": dict_learn,
        "components_img": components_img,
        "extractor": extractor,
        "group": group,
        "mean_correlations": mean_correlations,
        "regions_match": regions_match,
        "recovery": recovery,
    }


def _plots(output_dir, components_img, regions_img, regions_index, mean_correlations):
    """The seed's figures, written to ``output_dir``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from nilearn import image, plotting
    except ImportError as exc:
        print(f"Plots skipped: {exc.name} is not installed (pip install 'lazyconn[plot]').")
        return
    n_regions = regions_img.shape[-1]
    display = plotting.plot_prob_atlas(
        components_img,
        view_type="filled_contours",
        title="Dictionary Learning maps",
        draw_cross=False,
    )
    display.savefig(output_dir / "dictlearning_maps.png")
    title = (
        f"{n_regions} regions are extracted from 8 components."
        "\nEach separate color of region indicates extracted region"
    )
    display = plotting.plot_prob_atlas(regions_img, view_type="filled_contours", title=title)
    display.savefig(output_dir / "regions.png")

    title = f"Correlation between {n_regions} regions"
    display = plotting.plot_matrix(mean_correlations, vmax=1, vmin=-1, colorbar=True, title=title)
    display.figure.savefig(output_dir / "mean_correlation_matrix.png")
    coords_connectome = plotting.find_probabilistic_atlas_cut_coords(regions_img)
    display = plotting.plot_connectome(
        mean_correlations, coords_connectome, edge_threshold="90%", title=title
    )
    display.savefig(output_dir / "connectome.png")

    # One network before and after region extraction (the seed shows map 4).
    network = 4 if 4 in regions_index else regions_index[0]
    img = image.index_img(components_img, network)
    coords = plotting.find_xyz_cut_coords(img)
    display = plotting.plot_stat_map(
        img, cut_coords=coords, colorbar=False, title="Showing one specific network"
    )
    display.savefig(output_dir / "one_network.png")
    display = plotting.plot_anat(cut_coords=coords, title="Regions from this network")
    colors = "rgbcmyk"
    indices = np.flatnonzero(np.asarray(regions_index) == network)
    for each_index, color in zip(indices, colors, strict=False):
        display.add_overlay(
            image.index_img(regions_img, int(each_index)),
            cmap=plotting.cm.alpha_cmap(color),
        )
    display.savefig(output_dir / "one_network_regions.png")
    plt.close("all")


if __name__ == "__main__":
    main(small=os.environ.get("LAZYCONN_EXAMPLES_SMALL") == "1")
