"""Model-side helpers: CLIFF camera, SMPL-X forward from rotation matrices, batching of packed samples."""
from .batch import CAMERA_META, HAS_FLAGS, SMPLX_PARAM_DIMS, collect_camera, collect_targets
from .cliff_camera import (
                           apply_affine,
                           cliff_bbox_info,
                           crop_cam_to_full_translation,
                           crop_side,
                           full_translation_to_crop_cam,
)
from .smplx_rotmat import NUM_SKELETON_JOINTS, check_rotmat_support, smplx_forward_rotmat

__all__ = ['CAMERA_META', 'HAS_FLAGS', 'SMPLX_PARAM_DIMS', 'collect_camera', 'collect_targets', 'apply_affine',
           'cliff_bbox_info', 'crop_cam_to_full_translation', 'crop_side', 'full_translation_to_crop_cam',
           'NUM_SKELETON_JOINTS', 'check_rotmat_support', 'smplx_forward_rotmat']
