"""
Extract signals on spheres and plot a connectome
================================================

lazyconn's version of nilearn's example of the same name: signals from spherical regions
around user-defined coordinates (Default Mode Network seeds), then around the centres of the
Power-264 [1] and Dosenbach-160 [2] atlases, and connectomes estimated with partial
correlation and with the sparse inverse covariance (GraphicalLassoCV).

The only differences from nilearn's example: the imports come from ``lazyconn``, and the
data are a synthetic study with a planted connectome (no download), made by
:func:`lazyconn.datasets.make_synthetic_fmri` in an fMRIPrep-like layout. A last section runs
the same extraction for every subject at once with :class:`lazyconn.group.GroupConnectome`.

Plots need the ``plot`` extra (nilearn, matplotlib); without it they are skipped.

[1] Power, Jonathan D., et al. "Functional network organization of the human brain."
Neuron 72.4 (2011): 665-678.

[2] Dosenbach N.U., Nardos B., et al. "Prediction of individual brain maturity using fMRI.",
2010, Science 329, 1358-1361.

Run ``python examples/plot_sphere_based_connectome.py`` (set ``LAZYCONN_EXAMPLES_SMALL=1``
for a quick run on a small study).
"""

import os
from pathlib import Path

import numpy as np
from sklearn.covariance import GraphicalLassoCV

from lazyconn import datasets
from lazyconn.connectome import ConnectivityMeasure
from lazyconn.group import GroupConnectome
from lazyconn.maskers import NiftiSpheresMasker


def _plotting():
    """nilearn.plotting with matplotlib's Agg backend, or None if the plot extra is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from nilearn import plotting
    except ImportError as exc:
        print(f"Plots skipped: {exc.name} is not installed (pip install 'lazyconn[plot]').")
        return None
    return plotting


def main(small=False, plot=True, data_dir=None, output_dir=None):
    """Run the example.

    ``small``: a tiny study and atlas subsets (for the test suite); ``plot=False``: no plots
    (glass-brain plots take seconds each); ``data_dir``: where the synthetic study is written
    (default ``$LAZYCONN_DATA`` or ``~/lazyconn_data``); ``output_dir``: where plots go.
    """
    output_dir = Path(output_dir or "sphere_connectome_outputs")
    output_dir.mkdir(parents=True, exist_ok=True)
    plotting = _plotting() if plot else None
    if plotting is not None:
        import matplotlib.pyplot as plt

    def save(display_or_none, name):
        if plotting is None:
            return
        path = output_dir / name
        if display_or_none is not None and hasattr(display_or_none, "savefig"):
            display_or_none.savefig(path)
            display_or_none.close()
        else:
            plt.savefig(path)
        plt.close("all")

    ###########################################################################
    # Retrieve the (synthetic) brain development-like fMRI dataset
    # ------------------------------------------------------------
    # Like nilearn's ``fetch_development_fmri``: a Bunch with ``func`` (4-D runs) and
    # ``confounds`` (fMRIPrep tables), here simulated on the MNI grid at 4 mm.
    dataset = datasets.make_synthetic_fmri(
        n_subjects=3 if small else 10,
        n_timepoints=60 if small else 168,
        resolution=8 if small else 4,
        data_dir=data_dir,
    )
    print(f"First subject functional nifti image (4D) is at: {dataset.func[0]}")

    ###########################################################################
    # Coordinates of Default Mode Network
    # -----------------------------------
    dmn_coords = [(0, -52, 18), (-46, -68, 32), (46, -68, 32), (1, 50, -5)]
    labels = [
        "Posterior Cingulate Cortex",
        "Left Temporoparietal junction",
        "Right Temporoparietal junction",
        "Medial prefrontal cortex",
    ]

    ###########################################################################
    # Extracts signal from sphere around DMN seeds
    # --------------------------------------------
    # The mean signal within spheres of a fixed radius, then detrended, band-pass filtered
    # and standardized, with the confounds regressed out.
    masker = NiftiSpheresMasker(
        dmn_coords,
        radius=8,
        detrend=True,
        standardize="zscore_sample",
        low_pass=0.1,
        high_pass=0.01,
        t_r=dataset.t_r,
    )
    func_filename = dataset.func[0]
    confounds_filename = dataset.confounds[0]
    time_series = masker.fit_transform(func_filename, confounds=[confounds_filename])

    ###########################################################################
    # Display time series
    # -------------------
    if plotting is not None:
        for time_serie, label in zip(time_series.T, labels, strict=True):
            plt.plot(time_serie, label=label)
        plt.title("Default Mode Network Time Series")
        plt.xlabel("Scan number")
        plt.ylabel("Normalized signal")
        plt.legend()
        plt.tight_layout()
        save(None, "dmn_time_series.png")

    ###########################################################################
    # Compute partial correlation matrix
    # ----------------------------------
    # ConnectivityMeasure's default covariance estimator is Ledoit-Wolf.
    connectivity_measure = ConnectivityMeasure(kind="partial correlation")
    partial_correlation_matrix = connectivity_measure.fit_transform([time_series])[0]

    ###########################################################################
    # Display connectome
    # ------------------
    if plotting is not None:
        save(
            plotting.plot_connectome(
                partial_correlation_matrix, dmn_coords, title="Default Mode Network Connectivity"
            ),
            "dmn_connectome.png",
        )
        save(
            plotting.plot_connectome(
                partial_correlation_matrix,
                dmn_coords,
                title="Connectivity projected on hemispheres",
                display_mode="lyrz",
            ),
            "dmn_connectome_hemispheres.png",
        )
        # An interactive 3D view in a web browser (an HTML file).
        view = plotting.view_connectome(partial_correlation_matrix, dmn_coords)
        view.save_as_html(output_dir / "dmn_connectome.html")

    ###########################################################################
    # Extract signals on spheres from an atlas
    # ----------------------------------------
    # The Power atlas coordinates, stacked in an array.
    power = datasets.fetch_coords_power_2011()
    print(f"Power atlas comes with {power.keys()}.")
    coords = np.vstack((power.rois["x"], power.rois["y"], power.rois["z"])).T
    if small:
        coords = coords[::6]  # GraphicalLassoCV on 264 regions takes minutes
    print(f"Stacked power coordinates in array of shape {coords.shape}.")

    ###########################################################################
    # Spheres small enough to avoid overlaps, on smoothed data.
    spheres_masker = NiftiSpheresMasker(
        seeds=coords,
        smoothing_fwhm=6,
        radius=5.0,
        detrend=True,
        standardize="zscore_sample",
        low_pass=0.1,
        high_pass=0.01,
        t_r=dataset.t_r,
    )
    timeseries = spheres_masker.fit_transform(func_filename, confounds=[confounds_filename])

    ###########################################################################
    # Estimate correlations
    # ---------------------
    # With about as many regions as samples, the graphical lasso (sparse inverse
    # covariance) captures the covariance structure well.
    print(f"time series has {timeseries.shape[0]} samples")
    covariance_estimator = GraphicalLassoCV(cv=3)
    covariance_estimator.fit(timeseries)
    matrix = covariance_estimator.covariance_
    print(f"Covariance matrix has shape {matrix.shape}.")

    ###########################################################################
    # Plot matrix, graph, and strength
    # --------------------------------
    def plot_strength(matrix, coords, atlas_name):
        # normalized, absolute strength for each node
        node_strength = np.sum(np.abs(matrix), axis=0)
        node_strength /= np.max(node_strength)
        # positive and negative edges, separately
        positive_edges = np.clip(matrix, 0, matrix.max())
        negative_edges = np.clip(matrix, matrix.min(), 0)
        node_strength_positive = np.sum(np.abs(positive_edges), axis=0)
        node_strength_positive /= np.max(node_strength_positive)
        node_strength_negative = np.sum(np.abs(negative_edges), axis=0)
        node_strength_negative /= max(np.max(node_strength_negative), np.finfo(float).eps)
        if plotting is None:
            return node_strength
        from matplotlib.pyplot import cm

        save(
            plotting.plot_markers(
                node_strength,
                coords,
                title=f"Node strength for absolute value of edges for {atlas_name} atlas",
            ),
            f"{atlas_name.lower()}_strength.png",
        )
        save(
            plotting.plot_markers(
                node_strength_positive,
                coords,
                node_cmap=cm.YlOrRd,
                title=f"Node strength for the positive edges for {atlas_name} atlas",
            ),
            f"{atlas_name.lower()}_strength_positive.png",
        )
        save(
            plotting.plot_markers(
                node_strength_negative,
                coords,
                node_cmap=cm.PuBu,
                title=f"Node strength for the negative edges for {atlas_name} atlas",
            ),
            f"{atlas_name.lower()}_strength_negative.png",
        )
        return node_strength

    if plotting is not None:
        plotting.plot_matrix(
            matrix, vmin=-1.0, vmax=1.0, colorbar=True, title="Power correlation matrix"
        )
        save(None, "power_matrix.png")
        # Tweak edge_threshold to keep only the strongest connections.
        save(
            plotting.plot_connectome(
                matrix,
                coords,
                title="Power correlation graph",
                edge_threshold="99.8%",
                node_size=20,
                colorbar=True,
            ),
            "power_connectome.png",
        )
    # Note the 1. on the diagonal: the signals were standardized, so the covariance is a
    # correlation matrix.
    power_strength = plot_strength(matrix, coords, "Power")

    ###########################################################################
    # Connectome extracted from Dosenbach's atlas
    # -------------------------------------------
    dosenbach = datasets.fetch_coords_dosenbach_2010()
    coords = np.vstack((dosenbach.rois["x"], dosenbach.rois["y"], dosenbach.rois["z"])).T
    networks = np.asarray(dosenbach.networks)
    if small:
        coords, networks = coords[::5], networks[::5]
    spheres_masker = NiftiSpheresMasker(
        seeds=coords,
        smoothing_fwhm=6,
        radius=4.5,
        detrend=True,
        standardize="zscore_sample",
        low_pass=0.1,
        high_pass=0.01,
        t_r=dataset.t_r,
    )
    timeseries = spheres_masker.fit_transform(func_filename, confounds=[confounds_filename])
    covariance_estimator = GraphicalLassoCV(cv=3)
    covariance_estimator.fit(timeseries)
    dosenbach_matrix = covariance_estimator.covariance_
    if plotting is not None:
        plotting.plot_matrix(
            dosenbach_matrix,
            vmin=-1.0,
            vmax=1.0,
            colorbar=True,
            title="Dosenbach correlation matrix",
        )
        save(None, "dosenbach_matrix.png")
        save(
            plotting.plot_connectome(
                dosenbach_matrix,
                coords,
                title="Dosenbach correlation graph",
                edge_threshold="99.7%",
                node_size=20,
                colorbar=True,
            ),
            "dosenbach_connectome.png",
        )
    dosenbach_strength = plot_strength(dosenbach_matrix, coords, "Dosenbach")
    print(f"Dosenbach networks names are {np.unique(networks)}")

    ###########################################################################
    # lazyconn: every subject at once
    # -------------------------------
    # The DMN partial-correlation connectome of every subject and their group mean, as one
    # dask graph (parallel across subjects; add ``client="local"`` for a LocalCluster and
    # ``cache_dir=...`` to keep every subject's result for the next run).
    group = GroupConnectome(
        NiftiSpheresMasker(
            dmn_coords,
            radius=8,
            detrend=True,
            standardize="zscore_sample",
            low_pass=0.1,
            high_pass=0.01,
            t_r=dataset.t_r,
        ),
        ConnectivityMeasure(kind="partial correlation"),
        progress=False,
    ).fit(dataset.func, confounds=dataset.confounds)
    print(f"Group DMN partial correlations of {len(group.subjects_)} subjects:")
    print(np.round(group.group_matrix_, 2))
    if plotting is not None:
        save(
            plotting.plot_connectome(
                group.group_matrix_, dmn_coords, title="Group Default Mode Network Connectivity"
            ),
            "dmn_group_connectome.png",
        )
    return {
        "dmn_time_series": time_series,
        "dmn_partial_correlation": partial_correlation_matrix,
        "power_covariance": matrix,
        "power_strength": power_strength,
        "dosenbach_covariance": dosenbach_matrix,
        "dosenbach_strength": dosenbach_strength,
        "group": group,
        "dataset": dataset,
        "output_dir": output_dir,
    }


if __name__ == "__main__":
    main(small=os.environ.get("LAZYCONN_EXAMPLES_SMALL") == "1")
