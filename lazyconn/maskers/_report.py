"""HTML reports of the maskers (nilearn's ``generate_report``), drawn with matplotlib.

One builder for every masker: title, description, a summary table (the mask, the regions,
the maps or the seeds), the parameters, the figures (orthogonal cuts of the mask, regions,
maps or spheres over the middle volume of the image given to ``fit``, embedded as PNG) and
the report's warnings (also emitted as ``UserWarning``, as nilearn). matplotlib is optional
(the ``plot`` extra): without it ``generate_report`` raises ImportError naming the extra.

Only the middle volume of the first run is kept at ``fit`` (lazily, when ``reports=True``)
and read when the report is made.
"""

from __future__ import annotations

import base64
import html
import io
import tempfile
import warnings
import webbrowser
from pathlib import Path

import nibabel as nib
import numpy as np

from lazyconn.exceptions import ParameterError, ParameterTypeError

PLOT_EXTRA = "pip install 'lazyconn[plot]'"
UNFITTED_MSG = (
    "\nThis estimator has not been fit yet.\nMake sure to run `fit` before inspecting reports."
)
NOT_ENABLED_MSG = "\nReport generation not enabled!\nNo visual outputs created."
DISABLED_AT_FIT_MSG = (
    "\nReport generation was disabled when fit was run. No reporting data is available.\n"
    "Make sure to set self.reports=True before fit."
)


class HTMLReport:
    """A self-contained HTML report (the methods of nilearn's ``HTMLReport`` users call).

    Parameters
    ----------
    body : str
        The whole HTML document.
    """

    def __init__(self, body: str):
        self.body = body

    def get_standalone(self) -> str:
        """The HTML document."""
        return self.body

    def _repr_html_(self) -> str:
        return self.body

    def __str__(self) -> str:
        return self.body

    def save_as_html(self, file_name) -> None:
        """Write the report to ``file_name`` (one file: figures are embedded).

        Parameters
        ----------
        file_name : str or path
        """
        Path(file_name).write_text(self.body, encoding="utf-8")

    def open_in_browser(self, file_name=None) -> None:
        """Save the report (to a temporary file unless ``file_name``) and open it.

        Parameters
        ----------
        file_name : str or path, optional
        """
        if file_name is None:
            with tempfile.NamedTemporaryFile("w", suffix=".html", delete=False) as f:
                file_name = f.name
        self.save_as_html(file_name)
        webbrowser.open(Path(file_name).resolve().as_uri())


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "generate_report() draws its figures with matplotlib, which is not installed; "
            f"install lazyconn's plot extra: {PLOT_EXTRA}"
        ) from exc
    return Figure


def reporting_data(masker, imgs):
    """What ``fit`` keeps for the report: the middle volume of the first run, lazily (or
    None without images), and whether reports were enabled."""
    if not masker.reports:
        return {"enabled": False, "image": None, "runs": False}
    if imgs is None:
        return {"enabled": True, "image": None, "runs": False}
    run = masker._split_runs(imgs)[0][0]
    if run.ndim == 4:
        run = run.with_data(run.data[..., run.shape[3] // 2])
    # nilearn's Multi maskers note that only the first run is shown when given a list (its
    # MultiNiftiMasker wraps a single run into a list first, so it always notes it)
    runs = not masker._list_of_3d_is_one_run and (
        isinstance(imgs, (list, tuple)) or getattr(masker, "_multi", False)
    )
    return {"enabled": True, "image": run, "runs": runs}


# ---------------------------------------------------------------------- drawing
def _on_grid(img, ref, interpolation):
    """``img`` (3-D) on ``ref``'s grid, as numpy."""
    from lazyconn.image.resampling import on_grid_of

    return np.asarray(on_grid_of(img, ref, interpolation).dataobj)


def _canonical(data, affine):
    return np.asarray(nib.as_closest_canonical(nib.Nifti1Image(data, affine)).dataobj)


def _draw(figure_cls, background, overlay, kind, title, cmap=None) -> str:
    """Three orthogonal cuts through the centre of ``overlay`` (numpy, on ``background``'s
    grid) over ``background`` (nibabel 3-D), as a PNG data URI."""
    affine = background.affine
    bg = _canonical(np.asarray(background.dataobj, dtype=np.float32), affine)
    ov = _canonical(np.asarray(overlay), affine)
    where = np.argwhere(ov != 0)
    cut = (where.mean(axis=0) if where.size else np.asarray(ov.shape) / 2).astype(int)
    fig = figure_cls(figsize=(9, 3.3))
    axes = fig.subplots(1, 3)
    for axis, ax in enumerate(axes):
        b = np.take(bg, cut[axis], axis=axis).T
        o = np.take(ov, cut[axis], axis=axis).T
        ax.imshow(b, cmap="gray", origin="lower", interpolation="nearest")
        if kind == "contour":
            if o.any() and not o.all():
                ax.contour(o != 0, levels=[0.5], colors="tab:red", linewidths=1)
        else:
            shown = np.ma.masked_equal(o, 0)
            default = "tab20" if kind == "labels" else "autumn"
            ax.imshow(
                shown, cmap=cmap or default, origin="lower", interpolation="nearest", alpha=0.7
            )
        ax.set_title(f"{'xyz'[axis]} = {cut[axis]} (voxel)", fontsize=8)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------------- content per masker
def _displayed(value, n, var_name, notes):
    """nilearn's ``check_displayed_maps`` + ``sanitize_displayed_maps``."""
    ok_list = isinstance(value, (list, np.ndarray)) and all(
        isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in value
    )
    if not (
        ok_list
        or (isinstance(value, int) and not isinstance(value, bool))
        or (isinstance(value, str) and value == "all")
    ):
        raise ParameterTypeError(
            f"Parameter 'displayed_{var_name}s' of ``generate_report()`` should be either "
            f"'all' or a positive 'int', or a list/array of ints; got {value!r}."
        )
    if isinstance(value, str):
        value = n
    if isinstance(value, int):
        if value < 0:
            raise ParameterError(f"displayed_{var_name}s={value!r}; expected an int >= 0.")
        if n < value:
            notes.append(
                f"`generate_report()` received 'displayed_{var_name}s={value}' to be "
                f"displayed. But masker only has {n} {var_name}(s). 'displayed_{var_name}s' "
                f"was set to {n}."
            )
            value = n
        value = list(range(value))
    value = [int(i) for i in value]
    missing = [i for i in value if not 0 <= i < n]
    value = [i for i in value if 0 <= i < n]
    if missing:
        notes.append(
            f"`generate_report()` received 'displayed_{var_name}s={value}' to be displayed. "
            f"Report cannot display the following {var_name} {missing} because masker only "
            f"has {n} {var_name}(s)."
        )
    return value


def _template_on(grid_img=None):
    from lazyconn.image import load_mni152_template

    template = load_mni152_template(resolution=2)
    if grid_img is None:
        return template.to_nifti()
    return nib.Nifti1Image(_on_grid(template, grid_img, "continuous"), grid_img.affine)


def labels_summary(masker):
    """The regions table of a labels masker's report (nilearn's columns and numbers: sizes
    in the fitted atlas, before the mask)."""
    import pandas as pd

    atlas = masker.labels_img_
    data = np.asarray(atlas.dataobj).astype(np.int32)
    voxel = abs(np.linalg.det(atlas.affine[:3, :3]))
    n_labelled = int(np.count_nonzero(data != masker.background_label))
    names = masker.region_names_
    rows = []
    for i, value in masker.region_ids_.items():
        if i == "background":
            continue
        size = int(np.count_nonzero(data == int(value)))
        rows.append((int(value), names[i], round(size * voxel), round(size / n_labelled * 100, 2)))
    return pd.DataFrame(
        rows, columns=["label value", "region name", "size (in mm^3)", "relative size (in %)"]
    )


def _content(masker, figure_cls, background, displayed, notes):
    """(summary DataFrame, list of figures) of a fitted masker."""
    import pandas as pd

    cls = type(masker).__name__
    if hasattr(masker, "labels_img"):
        atlas = getattr(masker, "region_atlas_", None)
        if atlas is None:
            atlas = masker.labels_img_
            if masker.mask_img_ is not None:
                from lazyconn.maskers._region import mask_on_grid

                mask = mask_on_grid(masker.mask_img_, atlas.shape, atlas.affine)
                data = np.where(mask, np.asarray(atlas.dataobj), masker.background_label)
                atlas = nib.Nifti1Image(data.astype(np.int32), atlas.affine)
        if background is None:
            notes.append(
                f"No image provided to fit in {cls}. Plotting ROIs of label image on the "
                "MNI152Template for reporting."
            )
            background = _template_on(atlas)
        regions = _on_grid(atlas, background, "nearest")
        regions = np.where(regions == masker.background_label, 0, regions)
        figure = _draw(figure_cls, background, regions, "labels", "Regions", masker.cmap)
        return labels_summary(masker), [figure]
    if hasattr(masker, "maps_img_"):
        maps = masker.maps_img_
        n = maps.shape[3]
        shown = _displayed(displayed.get("displayed_maps", 10), n, "map", notes)
        if background is None:
            notes.append(
                f"No image provided to fit in {cls}. Plotting only spatial maps for reporting."
            )
            background = nib.Nifti1Image(np.zeros(maps.shape[:3], np.float32), maps.affine)
        data = np.asarray(maps.dataobj)
        figures = []
        for k in shown:
            one = nib.Nifti1Image(np.ascontiguousarray(data[..., k]), maps.affine)
            overlay = _on_grid(one, background, "linear")
            figures.append(_draw(figure_cls, background, overlay, "maps", f"Map {k}", masker.cmap))
        summary = pd.DataFrame({"number of maps": [n], "displayed maps": [str(shown)]})
        return summary, figures
    if hasattr(masker, "seeds_"):
        from lazyconn.ops.spheres import sphere_voxels

        seeds = masker.seeds_
        shown = _displayed(displayed.get("displayed_spheres", 10), len(seeds), "sphere", notes)
        if background is None:
            notes.append(
                f"No image provided to fit in {cls}. Spheres are plotted on top of the MNI152 "
                "template."
            )
            background = _template_on()
        shape = background.shape[:3]
        spheres = sphere_voxels(seeds, background.affine, shape, masker.radius, allow_overlap=True)
        figures = []
        for k in shown:
            overlay = np.zeros(shape, np.int8)
            overlay.flat[spheres[k]] = 1
            figures.append(_draw(figure_cls, background, overlay, "labels", f"Sphere {k}"))
        summary = pd.DataFrame(
            [(k, *np.round(seeds[k], 2), masker.radius) for k in range(len(seeds))],
            columns=["seed", "x", "y", "z", "radius (mm)"],
        )
        return summary, figures
    mask = masker.mask_img_
    data = np.asarray(mask.dataobj).astype(bool)
    if background is None:
        notes.append(f"No image provided to fit in {cls}. Setting image to mask for reporting.")
        background = nib.Nifti1Image(data.astype(np.float32), mask.affine)
    overlay = _on_grid(nib.Nifti1Image(data.astype(np.int8), mask.affine), background, "nearest")
    summary = pd.DataFrame(
        {
            "voxels in mask": [int(data.sum())],
            "mask volume (mm^3)": [round(data.sum() * abs(np.linalg.det(mask.affine[:3, :3])))],
            "fraction of the image (%)": [round(100 * data.mean(), 2)],
        }
    )
    return summary, [_draw(figure_cls, background, overlay, "contour", "Mask")]


# ---------------------------------------------------------------------- the report
def _param_text(value) -> str:
    if isinstance(value, nib.spatialimages.SpatialImage):
        return f"{type(value).__name__} of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _table(df) -> str:
    return df.to_html(index=False, border=0, classes="summary", escape=True)


_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.5em; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { border-bottom: 1px solid #ddd; padding: 0.25em 0.8em; text-align: left; }
.warning { background: #fff3cd; border: 1px solid #e0c060; padding: 0.5em 1em;
           white-space: pre-wrap; margin: 0.3em 0; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
"""


def generate_report(masker, engine="matplotlib", title=None, **kwargs) -> HTMLReport:
    """The report of ``masker`` (see ``BaseMasker.generate_report``)."""
    import pandas as pd

    if engine != "matplotlib":
        raise ParameterError(
            f"engine={engine!r} is not valid; lazyconn's reports are drawn with 'matplotlib' "
            "(nilearn's 'brainsprite' and 'plotly' engines are not there)."
        )
    figure_cls = _figure_class()
    unknown = sorted(set(kwargs) - {"displayed_maps", "displayed_spheres"})
    if unknown:
        raise ParameterTypeError(
            f"generate_report() got unexpected keyword argument(s) {unknown}; expected "
            "displayed_maps (maps maskers) or displayed_spheres (spheres masker)."
        )
    cls = type(masker).__name__
    notes: list[str] = []
    summary, figures = None, []
    if not masker.reports:
        notes.append(NOT_ENABLED_MSG)
    if not masker.__sklearn_is_fitted__():
        notes.append(UNFITTED_MSG)
    else:
        data = getattr(masker, "_reporting_data", None) or {"enabled": False, "image": None}
        if not data["enabled"]:
            notes.append(DISABLED_AT_FIT_MSG)
        else:
            image = data["image"]
            if data.get("runs"):
                notes.append(
                    "A list of 4D subject images were provided to fit. Only first subject is "
                    "shown in the report."
                )
            background = None if image is None else image.to_nifti()
            summary, figures = _content(masker, figure_cls, background, kwargs, notes)
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=3)
    params = pd.DataFrame(
        [(k, _param_text(v)) for k, v in sorted(masker.get_params(deep=False).items())],
        columns=["parameter", "value"],
    )
    description = (type(masker).__doc__ or "").strip().splitlines()[0]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title or cls)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title or cls)}</h1>",
        f"<p>{html.escape(description)}</p>",
    ]
    if notes:
        parts.append("<h2>Warnings</h2>")
        parts += [f'<div class="warning">{html.escape(n.strip())}</div>' for n in notes]
    if summary is not None:
        parts += ["<h2>Summary</h2>", _table(summary)]
    if figures:
        parts.append("<h2>Figures</h2>")
        parts += [f'<img src="{uri}" alt="{cls} figure {i}">' for i, uri in enumerate(figures)]
    parts += ["<h2>Parameters</h2>", _table(params), "</body></html>"]
    return HTMLReport("\n".join(parts))
