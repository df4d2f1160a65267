"""Bodies: the SMPL-X wrapper, the open SMPL-X stand-in, joint maps, cameras, samples and pose sources (see
docs/bodies.md and docs/sources.md). Importing it registers every pose source in ``POSE_SOURCES``."""
from . import sources
from .body_model import (
                         BodyModelFileError,
                         BodyOutput,
                         SMPLXBodyModel,
                         canonical_body_pose,
                         check_model_file,
                         resolve_model_file,
)
from .camera import (
                         bbox_from_points,
                         crop_camera,
                         crop_image,
                         crop_points_2d,
                         intrinsics_matrix,
                         points_in_front,
                         project_points,
                         square_crop_box,
                         transform_points,
                         unproject_points,
                         upright_global_orient,
)
from .gendered import GenderedSMPLXBodyModel, build_gendered_body_models, shared_body_models
from .joint_maps import (
                         COCO17_FLIP_PAIRS,
                         COCO17_NAMES,
                         COCO17_SKELETON,
                         OPENPOSE18_LIMBS,
                         OPENPOSE18_NAMES,
                         SMPLX_JOINT_NAMES,
                         SMPLX_TO_COCO17,
                         smplx_to_coco17,
                         smplx_to_openpose18,
)
from .sample import BodySample, sample_file, validate_sample_id
from .sources import (
                         AMASSSource,
                         AugmentedSource,
                         BEDLAMSource,
                         BodyAugment,
                         BodySource,
                         CameraSpec,
                         PoseDreamerLabelSource,
                         ProceduralPoseSource,
)
from .standin import build_standin, ensure_standin_smplx, write_standin_smplx

__all__ = [
    'BodyModelFileError', 'BodyOutput', 'SMPLXBodyModel', 'GenderedSMPLXBodyModel', 'build_gendered_body_models',
    'shared_body_models',
    'ensure_standin_smplx', 'sample_file', 'validate_sample_id', 'canonical_body_pose', 'check_model_file',
    'resolve_model_file', 'bbox_from_points', 'crop_camera', 'crop_image', 'crop_points_2d', 'intrinsics_matrix',
    'points_in_front', 'project_points', 'square_crop_box', 'transform_points', 'unproject_points',
    'upright_global_orient',
    'COCO17_FLIP_PAIRS', 'COCO17_NAMES', 'COCO17_SKELETON', 'OPENPOSE18_LIMBS', 'OPENPOSE18_NAMES',
    'SMPLX_JOINT_NAMES', 'SMPLX_TO_COCO17', 'smplx_to_coco17', 'smplx_to_openpose18', 'build_standin',
    'write_standin_smplx', 'BodySample', 'sources', 'AMASSSource', 'AugmentedSource', 'BEDLAMSource', 'BodyAugment',
    'BodySource', 'CameraSpec', 'PoseDreamerLabelSource', 'ProceduralPoseSource'
]
