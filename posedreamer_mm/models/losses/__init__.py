"""HMR losses (registered; weights in configs)."""
from .dpo_losses import (
    DiffusionDPOLoss,
    DPOOutput,
    diffusion_dpo_loss,
    dpo_errors,
    dpo_loss_from_errors,
    flow_dpo_loss,
)
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
__all__ += ['DiffusionDPOLoss', 'DPOOutput', 'diffusion_dpo_loss', 'dpo_errors', 'dpo_loss_from_errors',
            'flow_dpo_loss']
