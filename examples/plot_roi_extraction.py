"""
Computing a Region of Interest (ROI) mask manually
==================================================

lazyconn's version of nilearn's example of the same name: smooth a task run, compare two
conditions voxel by voxel with a t-test, threshold ``-log10(p)``, intersect with an anatomical
(ventral temporal) mask, dilate, split the connected components into regions, extract the
regions' signals with ``NiftiLabelsMasker`` and save the ROI "atlas".

In nilearn every step holds the whole 4-D run in memory (``get_data(fmri_img)``). Here
``get_data(fmri_img, compute=False)`` returns a dask array (without ``compute=False`` it
returns numpy, as nilearn) and ``lazyconn.stats.ttest_ind`` (scipy's signature) is a
reduction over time computed chunk by chunk, so the same lines work on a run of any length
with memory bounded by a few chunks, and give scipy's numbers.

The differences from nilearn's example:

- the imports come from ``lazyconn`` (``from lazyconn import stats`` for scipy's t-test);
- ``get_data(fmri_img, compute=False)`` keeps the run lazy;
- the data are a synthetic Haxby-like run (no download) made by
  :func:`lazyconn.datasets.make_synthetic_task_fmri`, with face- and house-preferring
  regions planted in the ventral temporal mask and a face-preferring region outside it;
- the mean and p maps are computed together once (``stats.compute_maps``, one pass over
  the run in batches that bound memory): they are 3-D maps, cheap to hold, and every later
  step would otherwise run the t-test again;
- dilation and connected components use the image functions
  :func:`lazyconn.image.binary_dilation_img` and
  :func:`lazyconn.image.connected_components_img` (equal to ``scipy.ndimage``'s
  ``binary_dilation`` and ``label``);
- the two ROIs are the two largest components (nilearn's example picks labels 5 and 3 of
  the Haxby data);
- images are handed to ``nilearn.plotting`` as nibabel images (``.to_nifti()``).

Plots need the ``plot`` extra (nilearn, matplotlib); without it they are skipped.

Run ``python examples/plot_roi_extraction.py`` (set ``LAZYCONN_EXAMPLES_SMALL=1`` for a quick
run on a small run).
"""

import os
from pathlib import Path

import numpy as np
import pandas as pd

from lazyconn import datasets, image, stats
from lazyconn.image import (
    binary_dilation_img,
    connected_components_img,
    get_data,
    load,
    new_img_like,
)
from lazyconn.maskers import NiftiLabelsMasker


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

    ``small``: a short run on a coarse grid (for the test suite); ``plot=False``: no plots;
    ``data_dir``: where the synthetic run is written (default ``$LAZYCONN_DATA`` or
    ``~/lazyconn_data``); ``output_dir``: where the plots and the atlas go.
    """
    output_dir = Path(output_dir or Path.cwd() / "results" / "plot_roi_extraction")
    output_dir.mkdir(exist_ok=True, parents=True)
    plotting = _plotting() if plot else None

    def save(display, name):
        if plotting is not None:
            display.savefig(output_dir / name)
            display.close()

    ###########################################################################
    # Loading the data
    # ----------------
    # A Haxby-like run: ``func`` (4-D run), ``session_target`` (labels.txt: the condition
    # of each volume), ``mask_vt`` (ventral temporal mask) and ``anat``.
    size = (
        {"n_timepoints": 120, "shape": (28, 34, 28), "voxel_size": 4.5}
        if small
        else {"n_timepoints": 300, "shape": (40, 48, 40), "voxel_size": 3.0}
    )
    haxby_dataset = datasets.make_synthetic_task_fmri(**size, data_dir=data_dir)
    print(f"First subject functional nifti image (4D) is at: {haxby_dataset.func[0]}")
    print(f"Labels of the dataset (text file) are at: {haxby_dataset.session_target[0]}")

    run_target = pd.read_csv(haxby_dataset.session_target[0], sep=" ")
    haxby_labels = run_target["labels"]

    # Coordinates of the slices to show: the centre of the first planted region.
    cut_coords = [float(c) for c in haxby_dataset.effect_coords[0]]

    ###########################################################################
    # Build a statistical test to find voxels of interest
    # ---------------------------------------------------
    # Smoothing (lazy: a graph over the run's chunks; nothing is read yet).
    fmri_filename = haxby_dataset.func[0]
    fmri_img = image.smooth_img(fmri_filename, fwhm=6)

    mean_img = image.mean_img(fmri_img)

    # A dask array: (x, y, z, t), chunked in spatial blocks with the whole time axis.
    fmri_data = get_data(fmri_img, compute=False)
    print(fmri_data.shape)

    # The t-test of nilearn's example, line for line: lazy (nothing is read yet).
    _, p_values = stats.ttest_ind(
        fmri_data[..., haxby_labels == "face"],
        fmri_data[..., haxby_labels == "house"],
        axis=-1,
    )
    # The mean and p maps are 3-D: compute both in one pass over the run, in batches of
    # block-rows so memory stays bounded whatever the run's length.
    mean_data, p_values = stats.compute_maps(mean_img, p_values, run=fmri_img)
    mean_img = new_img_like(fmri_img, mean_data)
    if plotting is not None:
        mean_nifti = mean_img.to_nifti()
        save(
            plotting.plot_epi(mean_nifti, title="Smoothed mean EPI", cut_coords=cut_coords),
            "mean_epi.png",
        )

    # Use a log scale for p-values
    log_p_values = -np.log10(p_values)
    # NAN values to zero
    log_p_values[np.isnan(log_p_values)] = 0.0
    log_p_values[log_p_values > 10.0] = 10.0

    log_p_values_img = new_img_like(fmri_img, log_p_values)
    if plotting is not None:
        save(
            plotting.plot_stat_map(
                log_p_values_img.to_nifti(), mean_nifti, title="p-values", cut_coords=cut_coords
            ),
            "p_values.png",
        )

    ###########################################################################
    # Build a mask from this statistical map
    # --------------------------------------
    # Thresholding: voxels with -log10(p) below 5 are set to 0.
    log_p_values[log_p_values < 5] = 0
    log_p_values_img = new_img_like(fmri_img, log_p_values)
    if plotting is not None:
        save(
            plotting.plot_stat_map(
                log_p_values_img.to_nifti(),
                mean_nifti,
                title="Thresholded p-values",
                annotate=False,
                colorbar=False,
                cut_coords=cut_coords,
            ),
            "thresholded_p_values.png",
        )

    # Binarization and intersection with the ventral temporal (VT) mask
    bin_p_values = log_p_values != 0
    mask_vt_filename = haxby_dataset.mask_vt[0]
    vt = get_data(load(mask_vt_filename)).astype(bool)
    # numpy & dask -> a lazy "AND conjunction" of the two masks
    bin_p_values_and_vt = np.logical_and(bin_p_values, vt)
    bin_p_values_and_vt_img = new_img_like(fmri_img, bin_p_values_and_vt.astype(np.int32))
    if plotting is not None:
        save(
            plotting.plot_roi(
                bin_p_values_and_vt_img.to_nifti(),
                mean_nifti,
                cut_coords=cut_coords,
                title="Intersection with ventral temporal mask",
            ),
            "intersection.png",
        )

    # Dilation: scipy.ndimage.binary_dilation on the mask image
    dil_bin_p_values_and_vt_img = binary_dilation_img(bin_p_values_and_vt_img)
    if plotting is not None:
        save(
            plotting.plot_roi(
                dil_bin_p_values_and_vt_img.to_nifti(),
                mean_nifti,
                title="Dilated mask",
                cut_coords=cut_coords,
                annotate=False,
            ),
            "dilated_mask.png",
        )

    # Identification of connected components: scipy.ndimage.label on the mask image
    labels_img, n_labels = connected_components_img(dil_bin_p_values_and_vt_img)
    labels = get_data(labels_img)
    print(f"{n_labels} connected components")
    # The two largest components are our two ROIs.
    sizes = np.bincount(labels.ravel())[1:]
    first_label, second_label = (np.argsort(sizes)[::-1][:2] + 1).tolist()
    first_roi_data = (labels == first_label).astype(np.int32)
    second_roi_data = (labels == second_label).astype(np.int32)
    first_roi_img = new_img_like(fmri_img, first_roi_data)
    second_roi_img = new_img_like(fmri_img, second_roi_data)
    if plotting is not None:
        save(
            plotting.plot_roi(
                first_roi_img.to_nifti(), mean_nifti, title="Connected components: first ROI"
            ),
            "first_roi.png",
        )
        save(
            plotting.plot_roi(
                second_roi_img.to_nifti(), mean_nifti, title="Connected components: second ROI"
            ),
            "second_roi.png",
        )

    ###########################################################################
    # Use the new ROIs to extract data maps in both ROIs
    # --------------------------------------------------
    masker = NiftiLabelsMasker(
        labels_img, resampling_target=None, standardize=False, detrend=False
    )
    masker.fit()
    condition_names = haxby_labels.unique()
    n_cond_img = fmri_data[..., haxby_labels == "house"].shape[-1]
    n_conds = len(condition_names)
    X1, X2 = np.zeros((n_cond_img, n_conds)), np.zeros((n_cond_img, n_conds))
    first, second = first_label - 1, second_label - 1  # columns of the labels masker
    for i, cond in enumerate(condition_names):
        cond_maps = new_img_like(fmri_img, fmri_data[..., haxby_labels == cond][..., :n_cond_img])
        mask_data = masker.transform(cond_maps)
        X1[:, i], X2[:, i] = mask_data[:, first], mask_data[:, second]

    ###########################################################################
    # Save the ROI "atlas" to a NIfTI file
    # ------------------------------------
    print(f"Output will be saved to: {output_dir}")
    atlas_path = output_dir / "mask_atlas.nii.gz"
    new_img_like(fmri_img, labels).to_filename(atlas_path)

    ###########################################################################
    # Plot the average in the different conditions
    # --------------------------------------------
    if plotting is not None:
        import matplotlib.pyplot as plt

        plt.figure(figsize=(15, 7))
        for i in np.arange(2):
            plt.subplot(1, 2, i + 1)
            plt.boxplot(X1 if i == 0 else X2)
            plt.xticks(np.arange(len(condition_names)) + 1, condition_names, rotation=25)
            plt.title(f"Boxplots of data in ROI{int(i + 1)} per condition")
        plt.savefig(output_dir / "boxplots.png")
        plt.close("all")

    return {
        "dataset": haxby_dataset,
        "labels": haxby_labels,
        "p_values": p_values,
        "log_p_values": log_p_values,
        "fmri_img": fmri_img,
        "roi_labels": labels,
        "n_labels": n_labels,
        "first_roi": first_roi_data,
        "second_roi": second_roi_data,
        "condition_names": condition_names,
        "X1": X1,
        "X2": X2,
        "atlas_path": atlas_path,
        "output_dir": output_dir,
    }


if __name__ == "__main__":
    main(small=bool(os.environ.get("LAZYCONN_EXAMPLES_SMALL")))
