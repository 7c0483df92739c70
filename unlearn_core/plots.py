"""Plotly figures built from library data (no Streamlit here: any notebook can use them).

Every function takes plain data (numpy arrays, pandas objects, metric dicts, embedding panels)
and returns a ``plotly.graph_objects.Figure``; none computes anything expensive. Colours are
fixed so that a figure reads the same everywhere: roles (which set, which model) use a palette
of their own that no class uses (purple = to forget, grey = to keep; original / retrained /
unlearned model = light grey / black / dark teal), and one colour per class from
:data:`CLASS_COLORS`.

Histograms are binned with numpy and drawn as bars, so a 20,000-sample column sends ~30 numbers
to the browser instead of 20,000.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from unlearn_core.labels import MODEL_SHORT, SET_BY_KEY, SETS

#: Set and model roles: deliberately unlike every class colour, so "orange" always means a class.
FORGET_COLOR = "#8E24AA"
FORGET_LIGHT = "#D7A6E3"
KEEP_COLOR = "#5F6B73"
KEEP_LIGHT = "#BCC3C8"
#: Colour per model in comparisons: original, retrain (the reference), unlearned.
MODEL_COLORS = {"original": "#A6A6A6", "retrain": "#222222", "unlearned": "#00695C"}
CLASS_COLORS = (
    "#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2",
    "#B279A2", "#EECA3B", "#9D755D", "#FF9DA6", "#BAB0AC",
)
SET_LABELS = {s.key: f"{s.name} ({s.symbol})" for s in SETS}
SET_SHORT = {s.key: s.short for s in SETS}
SET_COLORS = {
    "forget_train": FORGET_COLOR, "forget_test": FORGET_LIGHT,
    "remain_train": KEEP_COLOR, "remain_test": KEEP_LIGHT,
}
_FONT = dict(size=13)


def class_color(index: int) -> str:
    return CLASS_COLORS[index % len(CLASS_COLORS)]


def _layout_dict(title: str = "", height: int = 320, **extra) -> dict:
    """The shared layout as a plain dict (merged with ``extra``; nested dicts replace)."""
    layout = dict(
        title=dict(text=title, x=0, xanchor="left", font=dict(size=15)) if title else None,
        height=height, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
        font=_FONT, legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1),
    )
    layout.update(extra)
    return layout


def _figure(traces: list, title: str = "", height: int = 320, **layout) -> go.Figure:
    """Build a figure in one validation pass (much faster than ``add_*`` calls one by one)."""
    return go.Figure(data=traces, layout=_layout_dict(title, height, **layout))


def _layout(fig: go.Figure, title: str = "", height: int = 320, **extra) -> go.Figure:
    fig.update_layout(**_layout_dict(title, height, **extra))
    return fig


#: Readable names of known metadata columns (others are humanized by :func:`column_label`).
COLUMN_LABELS = {
    "vpf_mm": "Vertical palpebral fissure (VPF)",
    "mrd1_mm": "Margin-reflex distance 1 (MRD1)",
    "cas": "Clinical activity score (CAS)",
    "exam_year": "Exam year",
    "stroke_width_px": "Stroke width",
    "width_px": "Width",
    "cdr": "Cup-to-disc ratio (CDR)",
    "age": "Age",
    "sex": "Sex",
    "eye": "Eye",
    "camera": "Camera",
    "device": "Device",
    "ink": "Ink",
    "slant": "Slant",
    "label": "Class",
}
_UNIT_SUFFIXES = ("_mm", "_px", "_cm", "_um", "_years", "_s")


def column_label(column: str, unit: str = "") -> str:
    """Readable name of a metadata column with its unit: "Vertical palpebral fissure (VPF), mm"."""
    name = COLUMN_LABELS.get(column)
    if name is None:
        text = column
        for suffix in _UNIT_SUFFIXES:
            if text.endswith(suffix) and len(text) > len(suffix):
                text = text[: -len(suffix)]
                break
        text = text.replace("_", " ").strip()
        name = text[:1].upper() + text[1:]
    if not unit:
        return name
    return f"{name}, {unit}" if name.endswith(")") else f"{name} ({unit})"


def with_unit(column: str, unit: str = "") -> str:
    return f"{column} ({unit})" if unit else column


def _legend_below(y: float = -0.25) -> dict:
    return dict(orientation="h", yanchor="top", y=y, xanchor="left", x=0)


# --- data summaries ----------------------------------------------------------------------------
def class_counts(table: pd.DataFrame, title: str = "Images per class") -> go.Figure:
    """Grouped bars of images per class and split (``ImageSet.class_counts()``)."""
    traces = [
        go.Bar(x=[str(c) for c in table.index], y=table[split].to_numpy(), name=split, marker_color=color,
               hovertemplate="%{x}: %{y} " + split + " images<extra></extra>")
        for split, color in (("train", KEEP_COLOR), ("test", KEEP_LIGHT)) if split in table.columns
    ]
    return _figure(traces, title, barmode="group", xaxis=dict(title="class", type="category"),
                   yaxis=dict(title="images"))


def is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _bin_edges(values: np.ndarray, bins: int) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if np.issubdtype(values.dtype, np.integer) and hi - lo <= 60:
        return np.arange(lo - 0.5, hi + 1.5, 1.0)
    if lo == hi:
        return np.array([lo - 0.5, hi + 0.5])
    return np.linspace(lo, hi, bins + 1)


def metadata_histogram(
    values: pd.Series | np.ndarray,
    column: str,
    unit: str = "",
    selected: np.ndarray | None = None,
    shade: tuple[float | None, float | None] | None = None,
    bins: int = 30,
    title: str | None = None,
    height: int = 260,
) -> go.Figure:
    """Histogram of a numeric column; forget-selected samples stacked in the forget colour.

    ``shade`` = ``(low, high)`` shades the selected range (``None`` = open on that side) and
    draws a dashed line at each given end. Missing values are left out and counted in the title.
    """
    raw = np.asarray(values)
    finite = np.isfinite(raw.astype(float))
    data = raw[finite]
    label = column_label(column, unit)
    missing = int((~finite).sum())
    heading = title if title is not None else label + (f" · {missing} missing" if missing else "")
    if len(data) == 0:
        return _figure([], heading, height, annotations=[dict(text="no values", showarrow=False)])
    edges = _bin_edges(data, bins)
    centers = (edges[:-1] + edges[1:]) / 2
    widths = np.diff(edges)
    hover = "%{customdata[0]:.4g} – %{customdata[1]:.4g}: %{y} "
    custom = np.stack([edges[:-1], edges[1:]], axis=1)
    if selected is None:
        counts, _ = np.histogram(data, edges)
        traces = [go.Bar(x=centers, y=counts, width=widths, marker_color=KEEP_COLOR, name="all",
                         customdata=custom, hovertemplate=hover + "images<extra></extra>")]
    else:
        chosen = np.asarray(selected, dtype=bool)[finite]
        keep, _ = np.histogram(data[~chosen], edges)
        forget, _ = np.histogram(data[chosen], edges)
        traces = [
            go.Bar(x=centers, y=keep, width=widths, marker_color=KEEP_LIGHT, name="keep",
                   customdata=custom, hovertemplate=hover + "kept<extra></extra>"),
            go.Bar(x=centers, y=forget, width=widths, marker_color=FORGET_COLOR, name="forget",
                   customdata=custom, hovertemplate=hover + "to forget<extra></extra>"),
        ]
    shapes = []
    if shade is not None:
        low = edges[0] if shade[0] is None else shade[0]
        high = edges[-1] if shade[1] is None else shade[1]
        shapes.append(dict(type="rect", xref="x", yref="paper", x0=low, x1=high, y0=0, y1=1,
                           fillcolor=FORGET_COLOR, opacity=0.12, line_width=0, layer="below"))
        for edge, given in ((low, shade[0]), (high, shade[1])):
            if given is not None:
                shapes.append(dict(type="line", xref="x", yref="paper", x0=edge, x1=edge, y0=0, y1=1,
                                   line=dict(color=FORGET_COLOR, width=2, dash="dash")))
    return _figure(traces, heading, height, barmode="stack", bargap=0.05, shapes=shapes,
                   xaxis=dict(title=label), yaxis=dict(title="images"), showlegend=selected is not None)


def metadata_bars(
    values: pd.Series | np.ndarray,
    column: str,
    selected: np.ndarray | None = None,
    chosen_values: Sequence | None = None,
    title: str | None = None,
    height: int = 260,
    max_values: int = 25,
) -> go.Figure:
    """Bar chart of a categorical column (most frequent first); forget-selected in the forget colour.

    ``chosen_values`` are outlined (the values a picker selected).
    """
    series = pd.Series(np.asarray(values, dtype=object)).astype(str)
    order = series.value_counts().index[:max_values]
    chosen_set = {str(c) for c in chosen_values} if chosen_values is not None else set()
    outline = [2 if v in chosen_set else 0 for v in order]
    if selected is None:
        counts = series.value_counts().reindex(order, fill_value=0)
        traces = [go.Bar(x=list(order), y=counts.to_numpy(), marker_color=KEEP_COLOR, name="all",
                         marker_line=dict(width=outline, color=FORGET_COLOR),
                         hovertemplate="%{x}: %{y} images<extra></extra>")]
    else:
        chosen = np.asarray(selected, dtype=bool)
        keep = series[~chosen].value_counts().reindex(order, fill_value=0)
        forget = series[chosen].value_counts().reindex(order, fill_value=0)
        traces = [
            go.Bar(x=list(order), y=keep.to_numpy(), marker_color=KEEP_LIGHT, name="keep",
                   hovertemplate="%{x}: %{y} kept<extra></extra>"),
            go.Bar(x=list(order), y=forget.to_numpy(), marker_color=FORGET_COLOR, name="forget",
                   hovertemplate="%{x}: %{y} to forget<extra></extra>"),
        ]
    return _figure(traces, title if title is not None else column_label(column), height, barmode="stack",
                   xaxis=dict(title=column_label(column), type="category"), yaxis=dict(title="images"),
                   showlegend=selected is not None)


def metadata_chart(values: pd.Series, column: str, unit: str = "", **kwargs) -> go.Figure:
    """:func:`metadata_histogram` for numbers, :func:`metadata_bars` for anything else."""
    if is_numeric(values):
        kwargs.pop("chosen_values", None)
        return metadata_histogram(values, column, unit, **kwargs)
    kwargs.pop("shade", None)
    kwargs.pop("bins", None)
    return metadata_bars(values, column, **kwargs)


def split_per_class(table: pd.DataFrame, title: str = "Samples per class in each set") -> go.Figure:
    """Grouped bars: per class, how many samples go to D_f, D_r, T_f, T_r."""
    traces = [
        go.Bar(x=[str(c) for c in table.index], y=table[key].to_numpy(), name=SET_LABELS[key],
               marker_color=SET_COLORS[key], hovertemplate="%{x}: %{y}<extra>" + SET_LABELS[key] + "</extra>")
        for key in ("forget_train", "forget_test", "remain_train", "remain_test") if key in table.columns
    ]
    return _figure(traces, title, 360, barmode="group", xaxis=dict(title="class", type="category"),
                   yaxis=dict(title="images"), legend=_legend_below())


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, classes: Sequence[str],
                     title: str = "Confusion matrix (test set)") -> go.Figure:
    """Counts of true (rows) × predicted (columns); colour = share of the true class."""
    k = len(classes)
    true = np.asarray(true, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    counts = np.bincount(true * k + predicted, minlength=k * k)[: k * k].reshape(k, k)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    names = [str(c) for c in classes]
    heat = go.Heatmap(
        z=share, x=names, y=names, text=counts, texttemplate="%{text}", colorscale="Blues",
        zmin=0, zmax=1, colorbar=dict(title="share", tickformat=".0%"),
        hovertemplate="true %{y}, predicted %{x}: %{text} images (%{z:.0%} of %{y})<extra></extra>",
    )
    return _figure([heat], title, max(300, 40 * k + 120),
                   yaxis=dict(autorange="reversed", title="true class", type="category"),
                   xaxis=dict(title="predicted class", type="category"))


# --- images ----------------------------------------------------------------------------------------
def _to_rgb(images: np.ndarray) -> np.ndarray:
    """``uint8 [n, C, H, W]`` → ``uint8 [n, H, W, 3]``."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[:, None]
    arr = np.moveaxis(arr, 1, -1)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return arr[..., :3].astype(np.uint8)


def image_grid(
    images: np.ndarray,
    hover: Sequence[str] | None = None,
    captions: Sequence[str] | None = None,
    columns: int = 8,
    title: str = "",
    tile_px: int = 96,
    border: Sequence[str | None] | None = None,
) -> go.Figure:
    """A mosaic of images with one hover text per tile (one image trace, fast to send).

    Args:
        images: ``uint8 [n, C, H, W]`` (C = 1 or 3).
        hover: text per tile shown on hover (HTML ``<br>`` allowed), e.g. its metadata.
        captions: a short label drawn under each tile.
        columns: tiles per row.
        tile_px: displayed size of a tile in screen pixels.
        border: a colour per tile to frame it (``None`` = no frame).
    """
    rgb = _to_rgb(images)
    n = len(rgb)
    if n == 0:
        return _figure([], title, 120, annotations=[dict(text="no images", showarrow=False)])
    h, w = rgb.shape[1:3]
    gap = max(2, w // 16)
    caption_px = max(10, h // 4) if captions is not None else 0
    cols = min(columns, n)
    rows = -(-n // cols)
    cell_h, cell_w = h + gap + caption_px, w + gap
    canvas = np.full((rows * cell_h, cols * cell_w, 3), 255, dtype=np.uint8)
    xs, ys = [], []
    for i in range(n):
        r, c = divmod(i, cols)
        top, left = r * cell_h, c * cell_w
        if border is not None and border[i]:
            color = np.array(_hex_rgb(border[i]), dtype=np.uint8)
            pad = max(1, gap // 2)
            canvas[max(0, top - pad): top + h + pad, max(0, left - pad): left + w + pad] = color
        canvas[top: top + h, left: left + w] = rgb[i]
        xs.append(left + w / 2)
        ys.append(top + h / 2)
    traces = [
        go.Image(z=canvas, hoverinfo="skip"),
        go.Scatter(x=xs, y=ys, mode="markers", marker=dict(size=1, opacity=0), showlegend=False,
                   hovertext=list(hover) if hover is not None else None,
                   hoverinfo="text" if hover is not None else "skip"),
    ]
    if captions is not None:
        limit = max(4, int(tile_px / 6.5))
        short = [c if len(c) <= limit else c[: limit - 1] + "…" for c in map(str, captions)]
        traces.append(go.Scatter(
            x=xs, y=[y + h / 2 + caption_px / 2 + 1 for y in ys], mode="text", text=short,
            textfont=dict(size=10, color="#333"), hoverinfo="skip", showlegend=False,
        ))
    scale = tile_px / w
    return _figure(
        traces, title, int(rows * cell_h * scale) + (40 if title else 10),
        xaxis=dict(visible=False, range=[-0.5, cols * cell_w - gap + 0.5]),
        yaxis=dict(visible=False, range=[rows * cell_h - gap + 0.5, -0.5], scaleanchor="x"),
        hoverdistance=int(tile_px * 0.7), plot_bgcolor="white", width=int(cols * cell_w * scale) + 20,
    )


def _hex_rgb(color: str) -> tuple[int, int, int]:
    value = color.lstrip("#")
    return tuple(int(value[i: i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


def hover_text(metadata: pd.DataFrame, classes: Sequence[str], units: Mapping[str, str] | None = None,
               columns: Sequence[str] | None = None) -> list[str]:
    """One hover text per row: class, then every metadata column with its unit."""
    units = dict(units or {})
    cols = [c for c in (columns or metadata.columns) if c != "label"]
    texts = []
    for row in metadata.to_dict("records"):
        parts = [f"<b>{classes[int(row['label'])]}</b>"] if "label" in row else []
        for col in cols:
            value = row[col]
            if isinstance(value, float):
                value = f"{value:.4g}"
            parts.append(f"{col}: {value}{(' ' + units[col]) if col in units else ''}")
        texts.append("<br>".join(parts))
    return texts


# --- results ---------------------------------------------------------------------------------------
def per_class_accuracy(accuracies: Mapping[str, Sequence[float]], classes: Sequence[str],
                       title: str = "Test accuracy per class") -> go.Figure:
    """Grouped bars: per class, each model's test accuracy (``per_class_test_acc`` lists)."""
    fig = go.Figure()
    names = [str(c) for c in classes]
    for model_name, values in accuracies.items():
        vals = [None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in values]
        shown = MODEL_SHORT.get(model_name, model_name)
        fig.add_bar(x=names, y=vals, name=shown, marker_color=MODEL_COLORS.get(model_name),
                    hovertemplate="%{x}: %{y:.1%}<extra>" + shown + "</extra>")
    fig.update_layout(barmode="group", yaxis=dict(title="accuracy", tickformat=".0%", range=[0, 1.05]),
                      xaxis=dict(title="class", type="category"))
    # same height, legend place and margins as :func:`loss_histograms`, so side-by-side charts
    # (and the captions under them) line up
    _layout(fig, title, 360)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0),
                      margin=dict(l=10, r=10, t=60, b=10))
    return fig


def set_accuracy(blocks: Mapping[str, Mapping], title: str = "Accuracy on each set") -> go.Figure:
    """Grouped bars: each model's accuracy on D_f, D_r, T_f, T_r and the whole test set.

    ``blocks`` are metric blocks by model key (``original``, ``retrain``, ``unlearned``); a
    missing or ``nan`` accuracy leaves its bar out. No trace at all when there is nothing to draw.
    """
    fig = go.Figure()
    sets = [(f"{s.key}_acc", f"{s.symbol}<br>{s.name}") for s in SETS] + [("test_acc", "All test")]
    for name, block in blocks.items():
        pairs = [(label, block[key]) for key, label in sets
                 if isinstance(block.get(key), (int, float)) and not np.isnan(block[key])]
        if pairs:
            shown = MODEL_SHORT.get(name, name)
            fig.add_bar(x=[p[0] for p in pairs], y=[p[1] for p in pairs], name=shown,
                        marker_color=MODEL_COLORS.get(name), text=[f"{100 * p[1]:.1f}%" for p in pairs],
                        textposition="outside", hovertemplate="%{x}: %{y:.1%}<extra>" + shown + "</extra>")
    fig.update_layout(barmode="group", yaxis=dict(title="accuracy", tickformat=".0%", range=[0, 1.12]),
                      plot_bgcolor="white")
    fig.update_yaxes(gridcolor="#eee")
    return _layout(fig, title, 360)


def epoch_history(history: Sequence[Mapping], retrain_forget_acc: float | None = None,
                  title: str = "Forgetting and remaining, per epoch") -> go.Figure:
    """Forget- and remain-set accuracy per epoch (and the loss on a second axis), as a method
    reported them while running; a dashed line marks the retrained model's forget accuracy."""
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for key, label, color in (("forget_acc", f"{SET_BY_KEY['forget_train'].name} accuracy", FORGET_COLOR),
                              ("remain_acc", f"{SET_BY_KEY['remain_train'].name} accuracy", KEEP_COLOR)):
        ys = [h.get(key) for h in history]
        if any(isinstance(y, (int, float)) for y in ys):
            fig.add_scatter(x=epochs, y=ys, name=label, mode="lines+markers", line=dict(color=color),
                            hovertemplate="epoch %{x}: %{y:.1%}<extra>" + label + "</extra>")
    losses = [h.get("loss") for h in history]
    if fig.data and any(isinstance(v, (int, float)) and np.isfinite(v) for v in losses):
        fig.add_scatter(x=epochs, y=losses, name="training loss", mode="lines",
                        line=dict(color=KEEP_LIGHT, dash="dot"), secondary_y=True)
    if fig.data and isinstance(retrain_forget_acc, (int, float)) and not np.isnan(retrain_forget_acc):
        fig.add_hline(y=retrain_forget_acc, line=dict(color=MODEL_COLORS["retrain"], dash="dash"),
                      annotation_text="retrained: forget accuracy", annotation_position="top left")
    fig.update_layout(plot_bgcolor="white")
    fig.update_xaxes(title_text="epoch", dtick=1, gridcolor="#eee")
    fig.update_yaxes(title_text="accuracy", tickformat=".0%", range=[0, 1.05], gridcolor="#eee", secondary_y=False)
    fig.update_yaxes(title_text="loss", secondary_y=True, showgrid=False)
    return _layout(fig, title, 340)


def block_similarity(rows: Sequence, title: str = "") -> go.Figure:
    """Per-block CKA to the retrained model (:class:`unlearn_core.cka.BlockSimilarity` rows):
    the unlearned model on forget and on kept images, and the original on forget images."""
    blocks = [r.block.removeprefix("body.") for r in rows]
    series = (("unlearned_forget", "Unlearned, forget images", FORGET_COLOR, "solid"),
              ("unlearned_kept", "Unlearned, kept images", KEEP_COLOR, "solid"),
              ("original_forget", "Original, forget images (before)", MODEL_COLORS["original"], "dot"))
    traces = [go.Scatter(x=blocks, y=[getattr(r, key) for r in rows], mode="lines+markers", name=name,
                         line=dict(color=color, dash=dash),
                         hovertemplate=name + "<br>%{x}: CKA %{y:.3f}<extra></extra>")
              for key, name, color, dash in series]
    return _figure(traces, title, 320, yaxis=dict(title="similarity to the retrained model (CKA)", range=[0, 1.02]),
                   xaxis=dict(title="block, input → output"))


def loss_histograms(losses: Mapping[str, Mapping[str, np.ndarray]], bins: int = 30,
                    title: str = "Per-sample loss: forget set vs unseen test images") -> go.Figure:
    """One panel per model: loss on the forget-train samples vs on test samples.

    ``losses = {"original": {"forget": array, "test": array}, ...}``. A membership attack works
    when the two histograms differ (trained-on samples have lower loss); after good unlearning
    the forget set looks like the test set, as it does for the retrained model.
    """
    names = list(losses)
    fig = make_subplots(rows=1, cols=max(1, len(names)), subplot_titles=[MODEL_SHORT.get(n, n) for n in names],
                        shared_yaxes=True)
    all_values = np.concatenate([np.asarray(v, dtype=float) for d in losses.values() for v in d.values()
                                 if len(v)] or [np.zeros(1)])
    hi = float(np.quantile(all_values, 0.99)) if len(all_values) else 1.0
    edges = np.linspace(0.0, max(hi, 1e-3), bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    for i, name in enumerate(names, start=1):
        for part, color, label in (("test", KEEP_COLOR, "test images (never trained on)"),
                                   ("forget", FORGET_COLOR, "forget set (D_f)")):
            values = np.clip(np.asarray(losses[name].get(part, []), dtype=float), 0, edges[-1])
            counts, _ = np.histogram(values, edges)
            share = counts / max(1, counts.sum())
            fig.add_bar(x=centers, y=share, width=np.diff(edges), marker_color=color, opacity=0.6,
                        name=label, legendgroup=part, showlegend=i == 1, row=1, col=i,
                        hovertemplate="loss %{x:.3g}: %{y:.1%}<extra>" + label + "</extra>")
        fig.update_xaxes(title_text="loss", row=1, col=i)
    fig.update_layout(barmode="overlay")
    fig.update_yaxes(title_text="share of samples", tickformat=".0%", row=1, col=1)
    _layout(fig, title, 360)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0),
                      margin=dict(l=10, r=10, t=60, b=10))
    return fig


def progress_curves(events: Sequence[Mapping], title: str = "Live accuracy") -> go.Figure:
    """Lines of the live accuracies (metrics ending in ``_acc``) from progress events.

    One line per phase and metric (``psg: forget acc``), x = progress within that phase.
    """
    fig = go.Figure()
    points: dict[str, tuple[list, list, str]] = {}
    for i, event in enumerate(events):
        x = event.get("fraction")
        x = i if x is None else float(x) * 100
        phase = str(event.get("phase") or "")
        for name, value in (event.get("metrics") or {}).items():
            if name.endswith("_acc") and isinstance(value, (int, float)) and np.isfinite(value):
                label = f"{phase}: {name[:-4].replace('_', ' ')}" if phase else name[:-4].replace("_", " ")
                points.setdefault(label, ([], [], name))
                points[label][0].append(x)
                points[label][1].append(value)
    colors = {"forget_acc": FORGET_COLOR, "remain_acc": KEEP_COLOR, "train_acc": KEEP_COLOR,
              "test_acc": MODEL_COLORS["retrain"]}
    for label, (xs, ys, metric) in points.items():
        fig.add_scatter(x=xs, y=ys, mode="lines+markers", name=label, line=dict(color=colors.get(metric)))
    fig.update_layout(xaxis=dict(title="progress of the phase (%)", range=[0, 100]),
                      yaxis=dict(title="accuracy", tickformat=".0%", range=[0, 1.02]))
    if not points:
        fig.add_annotation(text="waiting for the first measurement…", showarrow=False)
    return _layout(fig, title, 280)


# --- decision regions --------------------------------------------------------------------------
def _light(color: str, amount: float = 0.7) -> str:
    r, g, b = _hex_rgb(color)
    mix = lambda c: int(round(c + (255 - c) * amount))  # noqa: E731
    return f"rgb({mix(r)},{mix(g)},{mix(b)})"


def _panel_axes(count: int, gap: float = 0.03) -> list[tuple[float, float]]:
    width = (1 - gap * (count - 1)) / count
    return [(i * (width + gap), i * (width + gap) + width) for i in range(count)]


def tsne_panels(
    panels: Mapping[str, object],
    classes: Sequence[str],
    hover: Mapping[int, str] | None = None,
    titles: Mapping[str, str] | None = None,
    height: int = 460,
    selected: Sequence[int] | None = None,
) -> go.Figure:
    """Side-by-side 2-D maps of the same test images under each model.

    ``panels`` are :class:`~unlearn_core.embedding.EmbeddingPanel` (or anything with the same
    attributes), e.g. ``{"original": ..., "retrain": ..., "unlearned": ...}``. Stars = forget
    images, circles = remain images; fill colour = the model's predicted class; a thin outline
    in the *true* class's colour (on a larger marker) marks a misclassified image; the background shows the class a
    k-NN vote over the model's predictions gives each place (an approximation of the model's
    decision regions in 2-D). ``hover`` maps an image's row index to its hover text; each
    point's ``customdata`` is that row index (for selections; :func:`trace_panels` tells
    which panel a selected point's trace is in).

    ``selected`` (row indices) are highlighted in *every* panel and the other points dimmed,
    so a selection made on one panel shows where the same images lie under the other models.

    Clicking a point selects it: the layout keeps a drag mode other than lasso/box (Streamlit
    turns click-selection off while the lasso or box tool is active); the lasso is one click
    away in the chart's toolbar.
    """
    names = list(panels)
    k = len(classes)
    chosen = None if selected is None or len(selected) == 0 else np.unique(np.asarray(selected, dtype=np.int64))
    scale, outline_scale = [], []
    for c in range(k):
        scale += [[c / k, _light(class_color(c))], [(c + 1) / k, _light(class_color(c))]]
        outline_scale += [[c / k, class_color(c)], [(c + 1) / k, class_color(c)]]
    traces, layout_axes, annotations = [], {}, []
    for col, (name, (x0, x1)) in enumerate(zip(names, _panel_axes(max(1, len(names)))), start=1):
        suffix = "" if col == 1 else str(col)
        xref, yref = f"x{suffix}", f"y{suffix}"
        layout_axes[f"xaxis{suffix}"] = dict(domain=[x0, x1], visible=False, anchor=yref)
        layout_axes[f"yaxis{suffix}"] = dict(domain=[0, 1], visible=False, anchor=xref)
        annotations.append(dict(text=(titles or MODEL_SHORT).get(name, name), x=(x0 + x1) / 2, y=1.0, xref="paper",
                                yref="paper", xanchor="center", yanchor="bottom", showarrow=False,
                                font=dict(size=14)))
        panel = panels[name]
        traces.append(go.Heatmap(
            x=panel.grid_x, y=panel.grid_y, z=panel.region_labels, zmin=-0.5, zmax=k - 0.5,
            colorscale=scale, showscale=False, hoverinfo="skip", xaxis=xref, yaxis=yref,
        ))
        predicted = np.asarray(panel.predicted)
        true = np.asarray(panel.true)
        forget = np.asarray(panel.is_forget, dtype=bool)
        indices = np.asarray(panel.indices)
        coords = np.asarray(panel.coords)
        for cls in range(k):
            for is_forget in (False, True):
                for is_wrong in (False, True):
                    sel = (predicted == cls) & (forget == is_forget) & ((true != cls) == is_wrong)
                    if not sel.any():
                        continue
                    texts = None
                    if hover is not None:
                        # a forget image away from its class is what unlearning aims for: not "wrong"
                        note = (" (true class: " + ", ".join(sorted({str(classes[t]) for t in true[sel]})) + ")"
                                if is_wrong and is_forget else " (wrong)" if is_wrong else "")
                        suffix_text = f"<br>predicted: <b>{classes[cls]}</b>{note}"
                        texts = [hover.get(int(i), "") + suffix_text for i in indices[sel]]
                    if is_wrong:  # outline in the true class's colour (numbers + a class colour scale)
                        # thin enough that the fill (the predicted class) stays the main colour
                        line = dict(color=true[sel].astype(float), colorscale=outline_scale, cmin=-0.5,
                                    cmax=k - 0.5, width=1.5)
                    else:
                        line = dict(color="white", width=0.8 if is_forget else 0.4)
                    highlight = {} if chosen is None else dict(
                        selectedpoints=linked_points(indices[sel], chosen),
                        selected=dict(marker=dict(opacity=1.0)), unselected=dict(marker=dict(opacity=0.15)))
                    traces.append(go.Scatter(
                        x=coords[sel, 0], y=coords[sel, 1], mode="markers", xaxis=xref, yaxis=yref,
                        name=str(classes[cls]), legendgroup=f"class{cls}", showlegend=False,
                        customdata=indices[sel], **highlight,
                        hovertext=texts, hoverinfo="text" if texts is not None else "x+y",
                        marker=dict(symbol="star" if is_forget else "circle", size=(19 if is_wrong else 14) if is_forget else (8 if is_wrong else 7),
                                    color=class_color(cls), line=line),
                    ))
    # One legend entry per class shown anywhere (predicted or true, any panel): a forgotten
    # class that no model predicts any more still needs its colour explained.
    shown = sorted({int(c) for p in panels.values() for c in (*np.asarray(p.predicted), *np.asarray(p.true))})
    for cls in shown:
        traces.append(go.Scatter(x=[None], y=[None], mode="markers", name=str(classes[cls]),
                                 legendgroup=f"class{cls}", marker=dict(symbol="circle", size=9,
                                                                        color=class_color(cls))))
    for symbol, label in (("star", "forget image"), ("circle", "kept image")):
        traces.append(go.Scatter(x=[None], y=[None], mode="markers", name=label, legendgroup=symbol,
                                 marker=dict(symbol=symbol, size=11, color="#555")))
    # "zoom", not "lasso": Streamlit switches click-selection off while the lasso/box tool is on
    return _figure(traces, "", height, plot_bgcolor="white", dragmode="zoom", clickmode="event+select",
                   legend=dict(orientation="h", yanchor="top", y=-0.02, xanchor="left", x=0),
                   margin=dict(l=10, r=10, t=30, b=10), annotations=annotations, **layout_axes)


def _is_nan(value) -> bool:
    return isinstance(value, float) and value != value


#: Where a point's label may go, in the order tried (plotly ``textposition`` names).
LABEL_PLACES = ("top center", "bottom center", "middle right", "middle left",
                "top right", "top left", "bottom right", "bottom left")
#: The trade-off chart's plotting area, label size and marker radius in pixels, for placing labels.
_PLOT_PX, _CHAR_PX, _LINE_PX, _MARKER_PX = (620.0, 300.0), 7.0, 15.0, 8.0


def _label_box(px: float, py: float, text: str, place: str) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) in pixels of ``text`` placed at ``place`` of the point (px, py)."""
    w, h, m = _CHAR_PX * len(text), _LINE_PX, _MARKER_PX
    vertical, horizontal = place.split()
    if horizontal == "center":
        left = px - w / 2
    else:
        left = px + m * (1 if vertical == "middle" else 0.5) if horizontal == "right" else \
            px - w - m * (1 if vertical == "middle" else 0.5)
    bottom = {"top": py + m, "bottom": py - m - h, "middle": py - h / 2}[vertical]
    return left, bottom, left + w, bottom + h


def _overlap(a, b) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _padded_range(values: Sequence[float], pad: float = 0.08) -> tuple[float, float]:
    low, high = min(values), max(values)
    span = max(high - low, 0.05)
    return low - pad * span, high + pad * span


def place_labels(points: Sequence[tuple[float, float]], texts: Sequence[str],
                 x_range: tuple[float, float], y_range: tuple[float, float]) -> list[str]:
    """A ``textposition`` for each labelled point so that labels overlap neither each other nor
    the markers (greedy, in the given order; the least overlapping place when none is free).

    Why: sweep candidates sit close together and α = 0/1 coincide with the runs composed, so
    fixed positions put labels on top of each other.
    """
    (x0, x1), (y0, y1) = x_range, y_range
    width, height = _PLOT_PX
    pixels = [((x - x0) / (x1 - x0) * width, (y - y0) / (y1 - y0) * height) for x, y in points]
    m = _MARKER_PX
    taken = [(px - m, py - m, px + m, py + m) for px, py in pixels]
    places = []
    for (px, py), text in zip(pixels, texts):
        def cost(place: str) -> float:
            box = _label_box(px, py, text, place)
            outside = (max(0.0, -box[0]) + max(0.0, box[2] - width) + max(0.0, -box[1])
                       + max(0.0, box[3] - height)) * _LINE_PX
            return sum(_overlap(box, other) for other in taken) + outside

        best = min(LABEL_PLACES, key=lambda place: (cost(place) > 0, cost(place), LABEL_PLACES.index(place)))
        places.append(best)
        taken.append(_label_box(px, py, text, best))
    return places


def trace_panels(fig: go.Figure, names: Sequence[str]) -> list[str | None]:
    """The panel name of each trace of a :func:`tsne_panels` figure (by its x axis: ``x``,
    ``x2``, ...), so a selection event's ``curve_number`` tells where it was drawn."""
    found = []
    for trace in fig.data:
        axis = getattr(trace, "xaxis", None) or "x"
        position = int(axis[1:] or 1) - 1
        found.append(names[position] if 0 <= position < len(names) else None)
    return found


def linked_points(trace_rows: np.ndarray, selected: np.ndarray) -> list[int]:
    """Positions within one trace whose image row is selected (plotly's ``selectedpoints``)."""
    return np.flatnonzero(np.isin(np.asarray(trace_rows), selected)).tolist()


def tradeoff(candidates: Sequence[Mapping], original: Mapping | None = None, retrain: Mapping | None = None,
             x: str = "remain_test_acc", y: str = "forget_test_acc",
             title: str = "Forgetting vs what is kept", highlight: str | None = None,
             parents: Sequence[Mapping] = (), saved: Sequence[str] = ()) -> go.Figure:
    """Scatter of candidates (``{"label", "metrics"}``) with the original and retrain points,
    and the ``parents`` (the runs composed, same shape) so a user sees whether composing
    improved on them or undid their forgetting.

    x = remain test accuracy (higher is better), y = forget test accuracy (ideal: the retrain
    model's). Candidates of a sweep are joined by a line in the given order. The candidates
    whose labels are in ``saved`` (or ``highlight``) are ringed. Labels are placed so they do
    not overlap (:func:`place_labels`; the axes' ranges are fixed to match).
    """
    saved = tuple(saved) + ((highlight,) if highlight is not None else ())
    xs = [c["metrics"].get(x) for c in candidates]
    ys = [c["metrics"].get(y) for c in candidates]
    fixed = [(name, block, symbol) for name, block, symbol in
             (("original", original, "square"), ("retrain", retrain, "diamond")) if block]
    # every labelled point, references and parents first (fewer, and the ones to compare with)
    labelled = ([(block.get(x), block.get(y), MODEL_SHORT[name]) for name, block, _ in fixed]
                + [(p["metrics"].get(x), p["metrics"].get(y), p["label"]) for p in parents]
                + [(cx, cy, c["label"]) for c, cx, cy in zip(candidates, xs, ys)])
    known = [(px, py, t) for px, py, t in labelled if px is not None and py is not None
             and not (_is_nan(px) or _is_nan(py))]
    x_range = _padded_range([p[0] for p in known] or [0.0, 1.0], 0.15)
    y_range = _padded_range([p[1] for p in known] or [0.0, 1.0], 0.15)
    places = dict(zip(range(len(known)), place_labels([(p[0], p[1]) for p in known], [p[2] for p in known],
                                                      x_range, y_range)))
    place_of, number = [], 0
    for px, py, _ in labelled:
        if px is not None and py is not None and not (_is_nan(px) or _is_nan(py)):
            place_of.append(places[number])
            number += 1
        else:
            place_of.append("top center")
    n_fixed, n_parents = len(fixed), len(parents)
    fig = go.Figure()
    fig.add_scatter(x=xs, y=ys, mode="lines+markers+text", text=[c["label"] for c in candidates],
                    textposition=place_of[n_fixed + n_parents:],
                    name="candidates", marker=dict(size=10, color=FORGET_COLOR),
                    line=dict(color=FORGET_LIGHT),
                    hovertemplate="%{text}<br>remain %{x:.1%} · forget %{y:.1%}<extra></extra>")
    ringed = [(cx, cy) for c, cx, cy in zip(candidates, xs, ys) if c["label"] in saved]
    if ringed:
        fig.add_scatter(x=[p[0] for p in ringed], y=[p[1] for p in ringed], mode="markers", name="saved",
                        hoverinfo="skip",
                        marker=dict(size=22, symbol="circle-open", color=FORGET_COLOR, line=dict(width=3)))
    if parents:
        fig.add_scatter(x=[p["metrics"].get(x) for p in parents], y=[p["metrics"].get(y) for p in parents],
                        mode="markers+text", text=[p["label"] for p in parents],
                        textposition=place_of[n_fixed:n_fixed + n_parents],
                        name="runs composed", marker=dict(size=13, symbol="triangle-up", color="#555"),
                        hovertemplate="%{text}<br>remain %{x:.1%} · forget %{y:.1%}<extra></extra>")
    for number, (name, block, symbol) in enumerate(fixed):
        shown = MODEL_SHORT[name]
        fig.add_scatter(x=[block.get(x)], y=[block.get(y)], mode="markers+text", text=[shown],
                        textposition=place_of[number], name=shown,
                        marker=dict(size=14, symbol=symbol, color=MODEL_COLORS[name]),
                        hovertemplate=shown + "<br>remain %{x:.1%} · forget %{y:.1%}<extra></extra>")
    fig.update_layout(xaxis=dict(title="remain test accuracy (higher is better)", tickformat=".1%",
                                 range=list(x_range)),
                      yaxis=dict(title="forget test accuracy (closer to retrain is better)", tickformat=".0%",
                                 range=list(y_range)))
    return _layout(fig, title, 420)
