"""mmsa_core: multimodal sentiment analysis with missing modalities (LNLN, ProMMA, baselines).

Layers, each importing only from those above it in this list: ``data`` -> ``missing``, ``metrics`` ->
``models`` -> ``train`` / ``evaluate`` -> ``experiment`` -> ``records`` (the results file format) -> ``reproduce``
/ ``results`` -> ``viz`` -> the CLI and the book (``mmsa_core.book``, one module per concern).
"""

__version__ = "0.1.0"
