"""mmsa_core: multimodal sentiment analysis with missing modalities (LNLN, ProMMA, baselines).

Layers, each importing only from those above it in this list: ``data`` -> ``missing``, ``metrics`` ->
``models`` -> ``train`` / ``evaluate`` -> ``experiment`` / ``results`` -> ``viz`` -> the CLI and the book.
"""

__version__ = "0.1.0"
