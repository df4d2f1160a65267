"""HMR losses (registered; weights in configs)."""
from .hmr_losses import (
                         BetasPriorLoss,
                         HMRJoint3DLoss,
                         HMRKeypoint2DLoss,
                         SMPLXParamLoss,
                         masked_mean,
                         rotation_matrix_distance,
)

__all__ = ['BetasPriorLoss', 'HMRJoint3DLoss', 'HMRKeypoint2DLoss', 'SMPLXParamLoss', 'masked_mean',
           'rotation_matrix_distance']
