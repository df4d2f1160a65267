"""HMR models: ViT backbone + SMPL-X head (:class:`HMREstimator`), losses, data preprocessing (docs/hmr.md)."""
from .data_preprocessors import DiffusionDataPreprocessor, HMRDataPreprocessor
from .editors import ControlNetTrainer
from .estimators import HMREstimator
from .heads import SMPLXTransformerHead
from .losses import BetasPriorLoss, HMRJoint3DLoss, HMRKeypoint2DLoss, SMPLXParamLoss

__all__ = ['HMRDataPreprocessor', 'HMREstimator', 'SMPLXTransformerHead', 'BetasPriorLoss', 'HMRJoint3DLoss',
           'HMRKeypoint2DLoss', 'SMPLXParamLoss']
__all__ += ['DiffusionDataPreprocessor', 'ControlNetTrainer']
