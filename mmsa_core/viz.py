"""Figures for the book: plotly, emitted as HTML with a fixed div id.

In a headless kernel (papermill) plotly's default renderer emits only its JSON mime type, which Jupyter Book 1
drops: the figure would be missing from the HTML. :func:`show_fig` emits the HTML itself with a stable div id,
so the page shows the figure and a re-run produces identical output.

Every other function here builds and returns a ``plotly.graph_objects.Figure`` and displays nothing: a chapter
writes ``show_fig(mask_heatmap(plan, data), "fig-mask-a")``. Colours are fixed (no random palettes), so the same
inputs give byte-identical HTML.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# one colour per modality, used by every figure of the book
COLORS = {"text": "#1f77b4", "audio": "#ff7f0e", "vision": "#2ca02c", "all": "#7f7f7f"}
SPLIT_COLORS = {"train": "#4c78a8", "valid": "#f58518", "test": "#54a24b"}
PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac", "#eeca3b")

# cell states of a mask heatmap
MASK_STATES = ("padding", "kept", "dropped", "[CLS]/[SEP] (never dropped)")
MASK_COLORS = ("#f2f2f2", "#4c78a8", "#e45756", "#1b2a41")


def fig_html(fig, name: str) -> str:
    """The HTML of a plotly figure (plotly.js from its CDN) with the div id ``name``.

    The CDN tag lets the figure draw in Jupyter and Colab (where each output is a frame of its own); the book
    build swaps it for the site's own copy of plotly.js (``tools/offline_assets.py``)."""
    return fig.to_html(full_html=False, include_plotlyjs="cdn", div_id=name)


def show_fig(fig, name: str):
    """Display a plotly figure as HTML (plotly.js from its CDN) with the div id ``name``."""
    from IPython.display import HTML, display

    display(HTML(fig_html(fig, name)))


def _go():
    import plotly.graph_objects as go

    return go


def _layout(fig, title: str | None, height: int, **kw):
    fig.update_layout(title=title, height=height, template="plotly_white", margin=dict(l=60, r=20, t=60 if title else 30, b=50),
                      **kw)
    return fig


# --------------------------------------------------------------------------------------------- masks
def mask_states(plan, data, n: int | None = None) -> dict[str, np.ndarray]:
    """Per modality an (n, L) int array of :data:`MASK_STATES` codes: 0 padding, 1 kept, 2 dropped, 3 [CLS]/[SEP]."""
    from .missing import droppable

    n = len(data) if n is None else min(n, len(data))
    cans = droppable(data)
    valid = (data.text_mask.bool(), data.audio_mask.bool(), data.vision_mask.bool())
    keeps = (plan.text_keep, plan.audio_keep, plan.vision_keep)
    out = {}
    for m, can, val, keep in zip(("text", "audio", "vision"), cans, valid, keeps):
        can, val, keep = can[:n].cpu().numpy(), val[:n].cpu().numpy(), keep[:n].cpu().numpy()
        s = np.zeros(can.shape, np.int64)
        s[val] = 3  # valid but not droppable: only [CLS] / [SEP] of the text
        s[can & keep] = 1
        s[can & ~keep] = 2
        out[m] = s
    return out


def _mask_traces(states: dict[str, np.ndarray], showscale: bool = True, hover: bool = True):
    go = _go()
    k = len(MASK_STATES)
    # a discrete colour scale: code c occupies [c/k, (c+1)/k]
    scale = []
    for c, col in enumerate(MASK_COLORS):
        scale += [[c / k, col], [(c + 1) / k, col]]
    traces = []
    for i, (m, s) in enumerate(states.items()):
        traces.append(go.Heatmap(
            z=s, zmin=-0.5, zmax=k - 0.5, colorscale=scale, xgap=1, ygap=1, name=m,
            customdata=np.array(MASK_STATES, dtype=object)[s] if hover else None,
            hovertemplate=f"{m}: sample %{{y}}, position %{{x}}" + (": %{customdata}" if hover else "") + "<extra></extra>",
            showscale=showscale and i == 0,
            colorbar=dict(tickvals=list(range(k)), ticktext=list(MASK_STATES), len=0.9, thickness=14),
        ))
    return traces


def mask_heatmap(plan, data, n: int = 24, title: str | None = None, height: int = 360):
    """Samples x positions for each modality: which positions a missing-data ``plan`` keeps or drops.

    ``plan`` is a :class:`mmsa_core.missing.MissingPlan` drawn on ``data`` (a :class:`Batch`, e.g. a whole
    split); the first ``n`` samples are drawn.
    """
    from plotly.subplots import make_subplots

    states = mask_states(plan, data, n)
    fig = make_subplots(rows=1, cols=3, subplot_titles=[f"{m} ({s.shape[1]} positions)" for m, s in states.items()],
                        horizontal_spacing=0.05)
    for i, tr in enumerate(_mask_traces(states)):
        fig.add_trace(tr, row=1, col=i + 1)
    fig.update_yaxes(autorange="reversed", title_text="sample", row=1, col=1)
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="position")
    return _layout(fig, title, height)


def mask_slider(plans: dict, data, n: int = 24, title: str | None = None, label: str = "r", height: int = 400):
    """One figure with a slider: ``plans`` maps a level (e.g. the missing rate r) to a plan on ``data``.

    Works in a static HTML page (no kernel): every level's heatmaps are in the page and the slider only
    switches which ones are visible.
    """
    from plotly.subplots import make_subplots

    levels = list(plans)
    fig = make_subplots(rows=1, cols=3, subplot_titles=("text", "audio", "vision"), horizontal_spacing=0.05)
    for j, lv in enumerate(levels):
        for i, tr in enumerate(_mask_traces(mask_states(plans[lv], data, n), hover=False)):  # a smaller page
            tr.visible = j == 0
            fig.add_trace(tr, row=1, col=i + 1)
    steps = []
    for j, lv in enumerate(levels):
        vis = [jj == j for jj in range(len(levels)) for _ in range(3)]
        steps.append(dict(method="update", label=f"{lv:g}", args=[{"visible": vis}]))
    fig.update_layout(sliders=[dict(active=0, currentvalue=dict(prefix=f"{label} = "), pad=dict(t=40), steps=steps)])
    fig.update_yaxes(autorange="reversed")
    fig.update_yaxes(title_text="sample", row=1, col=1)
    return _layout(fig, title, height)


def show_mask_explorer(data, n: int = 24, seed: int = 0, protocol: str = "A", name: str = "fig-mask-explorer",
                       value: float = 0.3) -> None:
    """Display an ipywidgets slider over the missing rate r (protocol A) or eta (protocol B) and, below it, the
    mask heatmap of the first ``n`` samples of ``data`` (the plan is drawn on the whole of ``data``, as in the
    tests). Moving the slider redraws the figure in place; that needs a running kernel (Jupyter, Colab). In a
    static page the figure shows ``value`` and the slider is inert.

    The figure is a plain display output updated through its display id (no Output widget): the executed
    notebook keeps it as an ordinary output, and the widget state holds only the slider."""
    import ipywidgets as W
    from IPython.display import HTML, display

    from .missing import draw

    label = "r" if protocol == "A" else "eta"
    ids = _widget_ids(name)
    slider = W.FloatSlider(value=value, min=0.0, max=0.9, step=0.1, description=label, readout_format=".1f",
                           continuous_update=False, model_id=next(ids), layout=W.Layout(model_id=next(ids)),
                           style=W.SliderStyle(model_id=next(ids)))

    def figure(level: float) -> HTML:
        level = round(level, 1)
        plan = draw(protocol, data, level, seed, 0, "test")
        return HTML(fig_html(mask_heatmap(plan, data, n, title=f"protocol {protocol}, {label} = {level:.1f}", height=340), name))

    display(slider)
    handle = display(figure(value), display_id=next(ids))
    slider.observe(lambda change: handle.update(figure(change["new"])), names="value")


_WIDGETS_MADE: dict[str, int] = {}


def _widget_ids(name: str):
    """Model ids for the widgets of one figure: derived from ``name`` and how many times this process has
    built it, so a fresh kernel (papermill) writes the same ids every time (clean diffs of the committed
    notebooks) while re-running the cell in a live kernel still gets new ones."""
    import hashlib

    k = _WIDGETS_MADE[name] = _WIDGETS_MADE.get(name, -1) + 1
    i = 0
    while True:
        yield hashlib.sha256(f"mmsa-book:{name}:{k}:{i}".encode()).hexdigest()[:32]
        i += 1


# --------------------------------------------------------------------------------------------- data
def label_histogram(labels: dict[str, Sequence[float]], title: str | None = None, width: float = 0.2, height: int = 340):
    """Bar chart of label counts per split (``{"train": y_train, ...}``), binned to ``width``."""
    go = _go()
    fig = go.Figure()
    for split, y in labels.items():
        y = np.round(np.asarray(y, np.float64) / width) * width
        vals, counts = np.unique(np.round(y, 6), return_counts=True)
        fig.add_trace(go.Bar(x=vals, y=counts, name=split, marker_color=SPLIT_COLORS.get(split)))
    fig.update_layout(barmode="group", bargap=0.1, xaxis_title="sentiment label", yaxis_title="samples")
    return _layout(fig, title, height)


def bars(df, x: str, y: str, color: str | None = None, title: str | None = None, height: int = 320,
         yaxis_title: str | None = None):
    """Grouped bar chart from a tidy DataFrame."""
    go = _go()
    fig = go.Figure()
    groups = [(None, df)] if color is None else list(df.groupby(color, sort=False))
    for i, (g, part) in enumerate(groups):
        fig.add_trace(go.Bar(x=part[x].tolist(), y=part[y].tolist(), name=None if g is None else str(g),
                             marker_color=COLORS.get(str(g), PALETTE[i % len(PALETTE)])))
    fig.update_layout(barmode="group", xaxis_title=x, yaxis_title=yaxis_title or y, showlegend=color is not None)
    return _layout(fig, title, height)


# --------------------------------------------------------------------------------------------- results
def curve(df, x: str = "level", y: str = "value", color: str | None = "model", facet: str | None = None,
          error: str | None = None, title: str | None = None, height: int = 360, xaxis_title: str | None = None,
          yaxis_title: str | None = None):
    """Lines with markers from a tidy DataFrame: one line per ``color`` value, one panel per ``facet`` value;
    ``error`` names a column of error-bar half-widths (e.g. a standard deviation over seeds)."""
    from plotly.subplots import make_subplots

    go = _go()
    facets = [None] if facet is None else list(dict.fromkeys(df[facet]))
    fig = make_subplots(rows=1, cols=len(facets), subplot_titles=None if facet is None else [str(f) for f in facets],
                        horizontal_spacing=0.08)
    names = [None] if color is None else list(dict.fromkeys(df[color]))
    for j, f in enumerate(facets):
        part = df if f is None else df[df[facet] == f]
        for i, nm in enumerate(names):
            p = part if nm is None else part[part[color] == nm]
            p = p.sort_values(x)
            col = COLORS.get(str(nm), PALETTE[i % len(PALETTE)])
            fig.add_trace(go.Scatter(
                x=p[x].tolist(), y=p[y].tolist(), mode="lines+markers", name=None if nm is None else str(nm),
                legendgroup=str(nm), showlegend=j == 0 and nm is not None, line=dict(color=col),
                error_y=None if error is None else dict(type="data", array=p[error].tolist(), visible=True),
            ), row=1, col=j + 1)
    fig.update_xaxes(title_text=xaxis_title or x)
    fig.update_yaxes(title_text=yaxis_title or y, row=1, col=1)
    return _layout(fig, title, height)


def training_curve(history, metric: str = "MAE", title: str | None = None, height: int = 320):
    """Per epoch: the training loss terms (left) and the validation ``metric`` that selects the checkpoint
    (right), with the selected epoch marked. ``history`` is a run's ``history.csv`` as a DataFrame."""
    from plotly.subplots import make_subplots

    go = _go()
    col = f"valid_{metric}"
    lower = metric == "MAE"
    best = history.loc[history[col].idxmin() if lower else history[col].idxmax()]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", f"validation {metric}"), horizontal_spacing=0.1)
    losses = [c for c in history.columns if c.startswith("train_")]
    for i, c in enumerate(losses):
        fig.add_trace(go.Scatter(x=history.epoch.tolist(), y=history[c].tolist(), mode="lines+markers", name=c[6:],
                                 line=dict(color=PALETTE[i % len(PALETTE)])), row=1, col=1)
    fig.add_trace(go.Scatter(x=history.epoch.tolist(), y=history[col].tolist(), mode="lines+markers", name=f"valid {metric}",
                             line=dict(color="#e45756")), row=1, col=2)
    fig.add_trace(go.Scatter(x=[int(best.epoch)], y=[float(best[col])], mode="markers", name="selected epoch",
                             marker=dict(symbol="star", size=14, color="#1b2a41")), row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    return _layout(fig, title, height)


__all__ = ["COLORS", "bars", "fig_html", "curve", "label_histogram", "show_mask_explorer", "mask_heatmap", "mask_slider", "mask_states",
           "show_fig", "training_curve"]


# --------------------------------------------------------------------------------------------- LNLN (chapters 6 and 7)
def scatter(df, x: str, y: str, reference: tuple | None = None, reference_name: str = "reference", title: str | None = None,
            height: int = 360, xaxis_title: str | None = None, yaxis_title: str | None = None, digits: int = 4):
    """Points (``df[x]``, ``df[y]``), rounded to ``digits`` (a smaller page); ``reference`` = ((x0, x1), (y0, y1))
    adds a dashed line, e.g. the ideal relation."""
    go = _go()
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=np.round(df[x].to_numpy(np.float64), digits).tolist(),
                             y=np.round(df[y].to_numpy(np.float64), digits).tolist(), mode="markers", name=y,
                             marker=dict(color=PALETTE[0], size=6, opacity=0.6), showlegend=reference is not None))
    if reference is not None:
        fig.add_trace(go.Scatter(x=list(reference[0]), y=list(reference[1]), mode="lines", name=reference_name,
                                 line=dict(color="#1b2a41", dash="dash")))
    fig.update_layout(xaxis_title=xaxis_title or x, yaxis_title=yaxis_title or y)
    return _layout(fig, title, height)


def attention_heatmaps(maps: dict, title: str | None = None, height: int = 420, digits: int = 4,
                       xlabel: str = "summary token (key)", ylabel: str = "language token (query)"):
    """A grid of attention maps with one colour scale: ``maps[row][col]`` is a (queries, keys) array, e.g.
    ``{"r = 0.0": {"audio": a, "vision": v}, "r = 0.9": {...}}``."""
    from plotly.subplots import make_subplots

    go = _go()
    rows, cols = list(maps), list(next(iter(maps.values())))
    zmax = float(max(np.max(maps[r][c]) for r in rows for c in cols))
    fig = make_subplots(rows=len(rows), cols=len(cols), subplot_titles=[f"{c}, {r}" for r in rows for c in cols],
                        horizontal_spacing=0.08, vertical_spacing=0.14)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            z = np.round(np.asarray(maps[r][c], np.float64), digits)
            fig.add_trace(go.Heatmap(z=z.tolist(), zmin=0.0, zmax=zmax, colorscale="Blues", showscale=i == 0 and j == 0,
                                     colorbar=dict(title="weight", thickness=14),
                                     hovertemplate=f"{c}, {r}: query %{{y}}, key %{{x}}: %{{z}}<extra></extra>"),
                          row=i + 1, col=j + 1)
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text=xlabel, row=len(rows))
    for i in range(len(rows)):
        fig.update_yaxes(title_text=ylabel, row=i + 1, col=1)
    return _layout(fig, title, height)


def discriminator_curve(trace, title: str | None = None, height: int = 340):
    """Per epoch, from :func:`mmsa_core.book.training_trace`: the discriminator's accuracy on the training batches
    and on the validation split (left; chance = 0.5), and its training cross-entropy (right; chance = ln 2)."""
    from plotly.subplots import make_subplots

    go = _go()
    fig = make_subplots(rows=1, cols=2, subplot_titles=("discriminator accuracy", "discriminator cross-entropy (train)"),
                        horizontal_spacing=0.1)
    ep = trace["epoch"].tolist()
    acc_cols = [c for c in trace.columns if c.startswith("disc. accuracy")]
    for i, c in enumerate(acc_cols):
        fig.add_trace(go.Scatter(x=ep, y=trace[c].round(4).tolist(), mode="lines+markers", name=c[len("disc. accuracy "):].strip("()"),
                                 line=dict(color=PALETTE[i])), row=1, col=1)
    fig.add_trace(go.Scatter(x=ep, y=trace["train CE"].round(4).tolist(), mode="lines+markers", name="cross-entropy",
                             line=dict(color=PALETTE[3])), row=1, col=2)
    for col, level, name in ((1, 0.5, "chance (0.5)"), (2, float(np.log(2)), "chance (ln 2)")):
        fig.add_trace(go.Scatter(x=[ep[0], ep[-1]], y=[level, level], mode="lines", name=name,
                                 line=dict(color="#1b2a41", dash="dash")), row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    return _layout(fig, title, height)


__all__ += ["attention_heatmaps", "discriminator_curve", "scatter"]


# --------------------------------------------------------------------------------------------- ProMMA (chapters 3-5)
def panel_bars(df, x: str, ys: Sequence[str], color: str | None = None, titles: Sequence[str] | None = None,
               title: str | None = None, height: int = 340, yaxis_title: str | None = None, range_y=None, digits: int = 4):
    """One panel per column of ``ys``, each a grouped bar chart of that column over ``x``, one bar colour per
    ``color`` value (modality names get the book's modality colours); the legend is shared."""
    from plotly.subplots import make_subplots

    go = _go()
    fig = make_subplots(rows=1, cols=len(ys), subplot_titles=list(titles or ys), horizontal_spacing=0.08)
    groups = [(None, df)] if color is None else list(df.groupby(color, sort=False))
    for j, col in enumerate(ys):
        for i, (g, part) in enumerate(groups):
            fig.add_trace(go.Bar(x=part[x].astype(str).tolist(), y=np.round(part[col].to_numpy(np.float64), digits).tolist(),
                                 name=None if g is None else str(g), legendgroup=str(g), showlegend=j == 0 and g is not None,
                                 marker_color=COLORS.get(str(g), PALETTE[i % len(PALETTE)])), row=1, col=j + 1)
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text=x, categoryorder="array", categoryarray=list(dict.fromkeys(df[x].astype(str))))
    fig.update_yaxes(title_text=yaxis_title, row=1, col=1)
    if range_y is not None:
        fig.update_yaxes(range=list(range_y))
    return _layout(fig, title, height)


def stacked_shares(df, x: str, y: str, color: str, facet: str, title: str | None = None, height: int = 340,
                   yaxis_title: str | None = None, reference: float | None = None, digits: int = 4):
    """Stacked bars of ``y`` over ``x``, one panel per ``facet`` value, one segment per ``color`` value (e.g. the
    weights of a target's two crossmodal streams, which sum to 1); ``reference`` draws a dashed horizontal line."""
    from plotly.subplots import make_subplots

    go = _go()
    facets = list(dict.fromkeys(df[facet]))
    fig = make_subplots(rows=1, cols=len(facets), subplot_titles=[f"{facet}: {f}" for f in facets], horizontal_spacing=0.06)
    seen = set()
    for j, f in enumerate(facets):
        part = df[df[facet] == f]
        for i, (g, p) in enumerate(part.groupby(color, sort=False)):
            fig.add_trace(go.Bar(x=p[x].astype(str).tolist(), y=np.round(p[y].to_numpy(np.float64), digits).tolist(),
                                 name=f"{color}: {g}", legendgroup=str(g), showlegend=g not in seen,
                                 marker_color=COLORS.get(str(g), PALETTE[i % len(PALETTE)])), row=1, col=j + 1)
            seen.add(g)
        if reference is not None:
            fig.add_hline(y=reference, line=dict(color="#1b2a41", dash="dash", width=1), row=1, col=j + 1)
    fig.update_layout(barmode="stack")
    fig.update_xaxes(title_text=x, categoryorder="array", categoryarray=list(dict.fromkeys(df[x].astype(str))))
    fig.update_yaxes(title_text=yaxis_title or y, row=1, col=1)
    return _layout(fig, title, height)


def points(df, x: str, y: str, color: str, facet: str | None = None, text: str | None = None, title: str | None = None,
           height: int = 380, xaxis_title: str | None = None, yaxis_title: str | None = None):
    """Labelled points (``df[x]``, ``df[y]``), one colour per ``color`` value, one panel per ``facet`` value (each
    panel with its own axes); ``text`` labels each point (e.g. a prompt token's index)."""
    from plotly.subplots import make_subplots

    go = _go()
    facets = [None] if facet is None else list(dict.fromkeys(df[facet]))
    fig = make_subplots(rows=1, cols=len(facets), subplot_titles=None if facet is None else [str(f) for f in facets],
                        horizontal_spacing=0.1)
    for j, f in enumerate(facets):
        part = df if f is None else df[df[facet] == f]
        for i, (g, p) in enumerate(part.groupby(color, sort=False)):
            fig.add_trace(go.Scatter(x=p[x].tolist(), y=p[y].tolist(), mode="markers+text" if text else "markers", name=str(g),
                                     text=None if text is None else p[text].astype(str).tolist(), textposition="top center",
                                     marker=dict(size=10, color=PALETTE[i % len(PALETTE)], opacity=0.8)), row=1, col=j + 1)
    fig.update_xaxes(title_text=xaxis_title or x)
    fig.update_yaxes(title_text=yaxis_title or y, row=1, col=1)
    return _layout(fig, title, height)


def heatmap(df, title: str | None = None, height: int = 440, zmin: float = -1.0, zmax: float = 1.0,
            colorscale: str = "RdBu", colorbar_title: str | None = None):
    """A labelled matrix (a square DataFrame, e.g. cosine similarities) on a diverging colour scale."""
    go = _go()
    fig = go.Figure(go.Heatmap(z=df.to_numpy().tolist(), x=[str(c) for c in df.columns], y=[str(i) for i in df.index],
                               zmin=zmin, zmax=zmax, colorscale=colorscale, reversescale=colorscale == "RdBu",
                               colorbar=dict(title=colorbar_title), xgap=1, ygap=1))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title, height)


__all__ += ["heatmap", "panel_bars", "points", "stacked_shares"]
