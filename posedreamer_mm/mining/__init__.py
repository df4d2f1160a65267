"""Hard-sample mining, offline level: a difficulty regressor from SMPL-X parameters and the selection of the next
generation round's poses (docs/mining.md). The in-training level is the curriculum sampler
(``posedreamer_mm/datasets/samplers/``) and its difficulty hook (``posedreamer_mm/engine/hooks/``)."""
from .errors import FeatureSpecMismatchError, MiningError, MiningFileNotFoundError
from .features import ALL_PARTS, DEFAULT_PARTS, FeatureSpec, stack_params
from .regressor import (
    REFERENCE_PARAMS,
    DifficultyRegressor,
    HeldOut,
    r2_score,
    spearman_rho,
    spec_path,
    split_indices,
    train_regressor,
)
from .selection import Selection, joint_rotations, pose_distance_deg, select_hardest

__all__ = ['ALL_PARTS', 'DEFAULT_PARTS', 'DifficultyRegressor', 'FeatureSpec', 'FeatureSpecMismatchError', 'HeldOut',
           'MiningError', 'MiningFileNotFoundError', 'REFERENCE_PARAMS', 'Selection', 'joint_rotations',
           'pose_distance_deg', 'r2_score', 'select_hardest', 'spearman_rho', 'spec_path', 'split_indices',
           'stack_params', 'train_regressor']
