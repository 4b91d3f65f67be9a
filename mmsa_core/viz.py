"""Figures for the book: plotly, emitted as HTML with a fixed div id.

In a headless kernel (papermill) plotly's default renderer emits only its JSON mime type, which Jupyter Book 1
drops: the figure would be missing from the HTML. :func:`show_fig` emits the HTML itself with a stable div id,
so the page shows the figure and a re-run produces identical output.
"""

from __future__ import annotations


def show_fig(fig, name: str):
    """Display a plotly figure as HTML (plotly.js from its CDN) with the div id ``name``."""
    from IPython.display import HTML, display

    display(HTML(fig.to_html(full_html=False, include_plotlyjs="cdn", div_id=name)))
