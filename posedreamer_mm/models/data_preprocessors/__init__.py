"""Data preprocessors."""
from .diffusion_data_preprocessor import DiffusionDataPreprocessor
from .hmr_data_preprocessor import HMRDataPreprocessor

__all__ = ['DiffusionDataPreprocessor', 'HMRDataPreprocessor']
