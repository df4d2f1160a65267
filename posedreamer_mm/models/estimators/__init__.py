"""HMR estimators."""
from .hmr_estimator import HMREstimator

__all__ = ['HMREstimator']
