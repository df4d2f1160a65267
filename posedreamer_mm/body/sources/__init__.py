"""Pose and camera sources: each yields :class:`~posedreamer_mm.body.sample.BodySample` records.

Importing this package registers every source in ``POSE_SOURCES`` (see docs/sources.md).
"""
from .amass import AMASS_WORLD_TO_CAMERA, AMASSSource, amass_root_from_camera
from .augment import AugmentedSource, BodyAugment
from .base import SMPLX_NEUTRAL_PELVIS_REST, BodySource, CameraSpec, NoValidSamplesError, make_id, stable_seed
from .bedlam import BEDLAMSource
from .pose_list import PoseListSource, read_pose_list, write_pose_list
from .posedreamer import PoseDreamerLabelSource, parse_label, read_label_file
from .procedural import (
                         DEFAULT_JOINT_LIMITS,
                         SMPLX_BODY_JOINTS,
                         ProceduralPoseSource,
                         body_pose_to_euler,
                         euler_to_body_pose,
)

__all__ = [
    'AMASSSource', 'AMASS_WORLD_TO_CAMERA', 'AugmentedSource', 'BEDLAMSource', 'BodyAugment', 'BodySource',
    'CameraSpec', 'DEFAULT_JOINT_LIMITS', 'NoValidSamplesError', 'PoseDreamerLabelSource', 'PoseListSource',
    'ProceduralPoseSource', 'SMPLX_BODY_JOINTS', 'SMPLX_NEUTRAL_PELVIS_REST', 'amass_root_from_camera',
    'body_pose_to_euler', 'euler_to_body_pose', 'make_id', 'parse_label', 'read_label_file', 'read_pose_list',
    'stable_seed', 'write_pose_list'
]
