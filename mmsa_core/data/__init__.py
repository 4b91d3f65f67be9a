"""Data: the MMSA pickle reader/writer and the embedded default dataset."""

from .mmsa import Batch, DataError, DataSpec, MMSADataset, Split, load_mmsa, write_mmsa

__all__ = ["Batch", "DataError", "DataSpec", "MMSADataset", "Split", "load_mmsa", "write_mmsa"]
