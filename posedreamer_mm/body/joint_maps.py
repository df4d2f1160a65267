"""Joint names and maps between SMPL-X's joint output and 2D keypoint conventions (COCO-17, OpenPose-18).

SMPL-X (``smplx`` 0.1.28) returns 127 joints, or 144 with ``use_face_contour``: the 55 skeleton joints, 21
vertex-picked keypoints (nose, eyes, ears, toes, heels, fingertips; ``smplx.vertex_ids``), 51 face landmarks
and optionally 17 jaw-contour landmarks. Names are ``smplx.joint_names.JOINT_NAMES``.

COCO face keypoints come from the *vertex-picked* surface points ``'nose'``, ``'left_eye'``, ``'right_eye'``,
``'left_ear'``, ``'right_ear'`` (what annotators click on), not from the eyeball-centre skeleton joints
``'left_eye_smplhf'``/``'right_eye_smplhf'`` which sit ~1 cm inside the head. Body keypoints are the skeleton
joints (``'left_shoulder'``, ...); SMPL-X hips sit a few centimetres lower and more medial than COCO's
annotated hips, a known and accepted offset in HMR work.

All maps keep "left" = the person's left. Functions accept torch tensors or numpy arrays of shape
``(..., J, D)`` (D = 2 or 3) and return the same type.
"""
from __future__ import annotations

import numpy as np
from smplx.joint_names import JOINT_NAMES as _SMPLX_NAMES

#: SMPL-X joint names: 127 (default output) and 144 (``use_face_contour=True``).
SMPLX_JOINT_NAMES: tuple[str, ...] = tuple(_SMPLX_NAMES[:127])
SMPLX_JOINT_NAMES_CONTOUR: tuple[str, ...] = tuple(_SMPLX_NAMES[:144])
SMPLX_JOINT_INDEX = {n: i for i, n in enumerate(SMPLX_JOINT_NAMES_CONTOUR)}

COCO17_NAMES: tuple[str, ...] = (
    'nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder', 'right_shoulder', 'left_elbow',
    'right_elbow', 'left_wrist', 'right_wrist', 'left_hip', 'right_hip', 'left_knee', 'right_knee', 'left_ankle',
    'right_ankle')
#: COCO limbs as keypoint index pairs (mmpose ``coco.py`` skeleton_info order).
COCO17_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8), (7, 9), (8, 10),
    (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))
COCO17_FLIP_PAIRS: tuple[tuple[int, int], ...] = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14),
                                                  (15, 16))
#: Index of each COCO-17 keypoint among the SMPL-X joints (valid for 127 and 144 joints).
SMPLX_TO_COCO17 = np.array([SMPLX_JOINT_INDEX[n] for n in COCO17_NAMES], np.int64)

#: OpenPose BODY_18 order, as ControlNet-openpose (controlnet_aux) draws it.
OPENPOSE18_NAMES: tuple[str, ...] = (
    'nose', 'neck', 'right_shoulder', 'right_elbow', 'right_wrist', 'left_shoulder', 'left_elbow', 'left_wrist',
    'right_hip', 'right_knee', 'right_ankle', 'left_hip', 'left_knee', 'left_ankle', 'right_eye', 'left_eye',
    'right_ear', 'left_ear')
#: The 17 limbs controlnet_aux draws (its ``limbSeq`` minus one), in drawing order.
OPENPOSE18_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13), (1, 0),
    (0, 14), (14, 16), (0, 15), (15, 17))
#: controlnet_aux's RGB colours: limb k and keypoint k use colour k.
OPENPOSE18_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
#: OpenPose-18 keypoint -> COCO-17 index; the neck (-1) is the shoulders' midpoint.
COCO17_TO_OPENPOSE18 = np.array([-1 if n == 'neck' else COCO17_NAMES.index(n) for n in OPENPOSE18_NAMES], np.int64)


def _take(x, idx: np.ndarray):
    """``x[..., idx, :]`` for numpy or torch."""
    if isinstance(x, np.ndarray):
        return x[..., idx, :]
    import torch
    return x.index_select(-2, torch.as_tensor(idx, device=x.device))


def _cat(parts: list, axis: int):
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts, axis=axis)
    import torch
    return torch.cat(parts, dim=axis)


def smplx_to_coco17(joints):
    """SMPL-X joints ``(..., 127 or 144, D)`` -> COCO-17 keypoints ``(..., 17, D)``."""
    if joints.shape[-2] < 127:
        raise ValueError(f'expected 127 or 144 SMPL-X joints, got {joints.shape[-2]}')
    return _take(joints, SMPLX_TO_COCO17)


def coco17_to_openpose18(keypoints):
    """COCO-17 ``(..., 17, D)`` -> OpenPose-18 ``(..., 18, D)`` with the neck at the shoulders' midpoint.

    For ``D = 3`` keypoints ``(x, y, visibility)`` the neck's third value is the smaller of the two shoulders'
    (visible only if both are; mmpose's openpose demo multiplies scores, the same for 0/1 flags, but a product
    would turn COCO's visibility 2 into 4); coordinates are averaged.
    """
    if keypoints.shape[-2] != 17:
        raise ValueError(f'expected 17 COCO keypoints, got {keypoints.shape[-2]}')
    left, right = keypoints[..., 5:6, :], keypoints[..., 6:7, :]
    neck = (left + right) / 2
    if keypoints.shape[-1] == 3:
        low = np.minimum(left[..., 2:], right[..., 2:]) if isinstance(keypoints, np.ndarray) \
            else left[..., 2:].minimum(right[..., 2:])
        neck = _cat([neck[..., :2], low], -1)
    body = _take(keypoints, np.maximum(COCO17_TO_OPENPOSE18, 0))
    return _cat([body[..., :1, :], neck, body[..., 2:, :]], -2)


def smplx_to_openpose18(joints):
    """SMPL-X joints ``(..., 127 or 144, D)`` -> OpenPose-18 ``(..., 18, D)`` (neck = shoulders' midpoint)."""
    return coco17_to_openpose18(smplx_to_coco17(joints))


def smplx_flip_permutation(num_joints: int = 127) -> np.ndarray:
    """Index array swapping each left SMPL-X joint with its right twin (by name), for horizontal flips."""
    names = SMPLX_JOINT_NAMES_CONTOUR[:num_joints]
    index = {n: i for i, n in enumerate(names)}

    def twin(n: str) -> str:
        return n.replace('left', '\0').replace('right', 'left').replace('\0', 'right')

    return np.array([index.get(twin(n), i) for i, n in enumerate(names)], np.int64)


__all__ = ['SMPLX_JOINT_NAMES', 'SMPLX_JOINT_NAMES_CONTOUR', 'SMPLX_JOINT_INDEX', 'COCO17_NAMES', 'COCO17_SKELETON',
           'COCO17_FLIP_PAIRS', 'SMPLX_TO_COCO17', 'OPENPOSE18_NAMES', 'OPENPOSE18_LIMBS', 'OPENPOSE18_COLORS',
           'COCO17_TO_OPENPOSE18', 'smplx_to_coco17', 'coco17_to_openpose18', 'smplx_to_openpose18',
           'smplx_flip_permutation']
