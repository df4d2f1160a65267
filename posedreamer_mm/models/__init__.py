"""HMR models: ViT backbone + SMPL-X head (:class:`HMREstimator`), losses, data preprocessing (docs/hmr.md)."""
from .data_preprocessors import HMRDataPreprocessor
from .estimators import HMREstimator
from .heads import SMPLXTransformerHead
from .losses import BetasPriorLoss, HMRJoint3DLoss, HMRKeypoint2DLoss, SMPLXParamLoss

__all__ = ['HMRDataPreprocessor', 'HMREstimator', 'SMPLXTransformerHead', 'BetasPriorLoss', 'HMRJoint3DLoss',
           'HMRKeypoint2DLoss', 'SMPLXParamLoss']
