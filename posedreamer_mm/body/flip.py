"""Camera-frame symmetries of an SMPL-X body: the horizontal mirror (image flip) and the roll about the optical axis.

Pure numpy maths used by the HMR transforms (``posedreamer_mm/datasets/transforms``) and their tests. Frames as in
docs/conventions.md: OpenCV camera frame (x right, y down, z forward, metres); rotations axis-angle.

**Mirror.** A horizontal image flip about the principal point is the reflection ``M = diag(-1, 1, 1)`` of the
camera frame. Conjugating a rotation by ``M`` maps its axis-angle ``(x, y, z)`` to ``(x, -y, -z)``; SMPL-X's
canonical frame has x = the body's left, so the same rule holds for every joint's local rotation once left and
right joints are swapped (``smplx_flip_permutation``) and the two hands exchanged. The translation needs care
because SMPL-X rotates about the *rest pelvis* ``J0(betas)`` (``v = R (v_rest - J0) + J0 + transl``): mirroring
``v`` gives ``transl' = M transl + (I - R') (M J0 - J0)``, which only depends on ``J0``'s x (about 3 mm for
SMPL-X, so the correction is at most ~1.2 cm and the default neutral pelvis is accurate to well under a mm).

**Roll.** Rotating the camera about its optical axis by ``Rz`` rotates the body: ``R' = Rz R`` and
``transl' = Rz (J0 + transl) - J0``; its image is the affine ``K Rz K^-1`` of the old one (exact for any
``fx, fy``, since ``Rz`` leaves depth unchanged). Here all of ``J0`` matters: pass the body's own rest pelvis
(:class:`PelvisRegressor`) where a centimetre of translation error matters.

The mirror is exact only for a left/right-symmetric body model (SMPL-X's template, skinning and regressors are;
its shape space nearly so).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .joint_maps import COCO17_FLIP_PAIRS, smplx_flip_permutation
from .rotations import axis_angle_to_matrix, matrix_to_axis_angle
from .sources.base import SMPLX_NEUTRAL_PELVIS_REST

#: Axis-angle sign change of a mirrored rotation (conjugation by diag(-1, 1, 1)).
MIRROR_AXIS_ANGLE = np.array([1.0, -1.0, -1.0], np.float32)
#: The 21 body joints of ``body_pose`` are SMPL-X skeleton joints 1..21; their left/right swap.
BODY_POSE_FLIP = smplx_flip_permutation(127)[1:22] - 1


def coco17_flip_indices() -> np.ndarray:
    """``(17,)`` index array swapping each left COCO-17 keypoint with its right twin."""
    index = np.arange(17)
    for a, b in COCO17_FLIP_PAIRS:
        index[a], index[b] = b, a
    return index


def flip_axis_angle(aa: np.ndarray) -> np.ndarray:
    """Mirrors axis-angle rotations ``(..., 3)`` (no joint swap): ``(x, y, z) -> (x, -y, -z)``."""
    return np.asarray(aa, np.float32) * MIRROR_AXIS_ANGLE


def flip_body_pose(body_pose: np.ndarray) -> np.ndarray:
    """Mirrors ``(..., 63)`` body poses: left/right joint swap and mirrored axis-angle."""
    pose = np.asarray(body_pose, np.float32).reshape(*np.shape(body_pose)[:-1], 21, 3)
    return flip_axis_angle(pose[..., BODY_POSE_FLIP, :]).reshape(np.shape(body_pose))


def flip_transl(transl: np.ndarray, flipped_global_orient: np.ndarray, pelvis_rest=None) -> np.ndarray:
    """SMPL-X ``transl`` of the mirrored body (see the module docstring).

    Args:
        transl: ``(..., 3)`` camera-frame translation before the mirror, metres.
        flipped_global_orient: ``(..., 3)`` root rotation **after** the mirror (axis-angle).
        pelvis_rest: ``(..., 3)`` rest pelvis ``J0(betas)`` in the canonical frame; default the neutral SMPL-X one.

    Returns:
        ``(..., 3)`` float32.
    """
    pelvis = np.asarray(SMPLX_NEUTRAL_PELVIS_REST if pelvis_rest is None else pelvis_rest, np.float64)
    rot = axis_angle_to_matrix(np.asarray(flipped_global_orient, np.float64)).numpy()
    shift = np.zeros(np.broadcast_shapes(pelvis.shape, np.shape(transl)))
    shift[..., 0] = -2.0 * pelvis[..., 0]  # M J0 - J0
    corr = shift - np.einsum('...ij,...j->...i', rot, shift)
    return (np.asarray(transl, np.float64) * [-1.0, 1.0, 1.0] + corr).astype(np.float32)


def flip_smplx(params: Mapping[str, np.ndarray], pelvis_rest=None) -> dict[str, np.ndarray]:
    """Mirrors a dict of SMPL-X parameters (any subset of the keys below; others are copied).

    ``global_orient``, ``jaw_pose``, ``leye_pose``/``reye_pose`` (swapped) are mirrored; ``body_pose`` swaps and
    mirrors joints; ``left_hand_pose``/``right_hand_pose`` are exchanged and mirrored (15 joints each, the same
    finger order); ``transl`` as :func:`flip_transl` (needs ``global_orient``); ``betas``/``expression`` are
    unchanged (assumes a symmetric shape space).

    Args:
        params: Arrays with a trailing parameter axis (``(..., 3)``, ``(..., 63)``, ``(..., 45)``).
        pelvis_rest: Rest pelvis for :func:`flip_transl`.

    Returns:
        New dict with float32 arrays; flipping twice returns the input (to float32 rounding).
    """
    out = {k: np.array(v, copy=True) for k, v in params.items()}
    for key in ('global_orient', 'jaw_pose'):
        if key in params:
            out[key] = flip_axis_angle(params[key])
    for left, right in (('left_hand_pose', 'right_hand_pose'), ('leye_pose', 'reye_pose')):
        if left in params or right in params:
            if left not in params or right not in params:
                raise KeyError(f'flip_smplx needs both {left!r} and {right!r} (they are exchanged)')
            out[left], out[right] = _flip_joints(params[right]), _flip_joints(params[left])
    if 'body_pose' in params:
        out['body_pose'] = flip_body_pose(params['body_pose'])
    if 'transl' in params:
        if 'global_orient' not in params:
            raise KeyError("flip_smplx needs 'global_orient' to mirror 'transl' (SMPL-X rotates about the pelvis)")
        out['transl'] = flip_transl(params['transl'], out['global_orient'], pelvis_rest)
    return out


def _flip_joints(pose) -> np.ndarray:
    pose = np.asarray(pose, np.float32)
    return flip_axis_angle(pose.reshape(*pose.shape[:-1], -1, 3)).reshape(pose.shape)


def flip_joints_3d(joints: np.ndarray, flip_index: np.ndarray | None = None, root=None) -> np.ndarray:
    """Mirrors camera-frame points ``(..., J, 3)``: ``x -> -x`` and the left/right swap.

    SMPL-X's rest pelvis ``J0`` is the one skeleton joint off the mesh's symmetry plane (x ~3 mm), so the pelvis of
    the mirrored *body* (:func:`flip_smplx`) is ``J0 + transl'``, not the mirrored pelvis point (``2 J0_x`` apart,
    ~6 mm). Joint 0 is the root every 3D loss and metric aligns to: pass ``root`` to keep the label equal to the
    joints of the flipped parameters.

    Args:
        joints: SMPL-X joints (127 or 144) or any set with ``flip_index``.
        flip_index: ``(J,)`` permutation; default :func:`~posedreamer_mm.body.joint_maps.smplx_flip_permutation`.
        root: Optional ``(..., 3)`` root joint of the mirrored body (``pelvis_rest + transl'``), written to joint 0.
    """
    joints = np.asarray(joints, np.float32)
    index = smplx_flip_permutation(joints.shape[-2]) if flip_index is None else flip_index
    out = joints[..., index, :] * np.array([-1.0, 1.0, 1.0], np.float32)
    if root is not None:
        out[..., 0, :] = np.asarray(root, np.float32)
    return out


def flip_points_2d(points: np.ndarray, width: int, flip_index: Sequence[int] | None = None) -> np.ndarray:
    """Mirrors pixel coordinates ``(..., K, D>=2)`` of a ``width``-pixel image: ``x -> width - 1 - x`` (pixel
    centres at integers, docs/conventions.md), then permutes keypoints by ``flip_index``; extra columns (visibility)
    follow their keypoint."""
    out = np.array(points, np.float32, copy=True)
    out[..., 0] = width - 1 - out[..., 0]
    return out if flip_index is None else out[..., np.asarray(flip_index), :]


def roll_matrix(angle_rad: float) -> np.ndarray:
    """``(3, 3)`` rotation about the camera's +z (optical) axis; positive turns +x towards +y (clockwise on screen)."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def roll_image_affine(angle_rad: float, focal, princpt) -> np.ndarray:
    """``(2, 3)`` pixel affine ``K Rz K^-1`` that a camera roll applies to the image (exact for any fx, fy)."""
    fx, fy = (float(v) for v in np.asarray(focal).reshape(2))
    cx, cy = (float(v) for v in np.asarray(princpt).reshape(2))
    k = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    kinv = np.array([[1 / fx, 0, -cx / fx], [0, 1 / fy, -cy / fy], [0, 0, 1.0]])
    return (k @ roll_matrix(angle_rad) @ kinv)[:2]


def roll_smplx_root(global_orient, transl, angle_rad: float, pelvis_rest=None) -> tuple[np.ndarray, np.ndarray]:
    """Root of the body seen by a camera rolled by ``angle_rad`` (see the module docstring).

    Args:
        global_orient: ``(3,)`` camera-frame axis-angle.
        transl: ``(3,)`` camera-frame translation, metres.
        angle_rad: Roll; the image moves by :func:`roll_image_affine` of the same angle.
        pelvis_rest: ``(3,)`` rest pelvis ``J0(betas)``; default the neutral SMPL-X one.

    Returns:
        ``(global_orient', transl')`` float32.
    """
    rz = roll_matrix(angle_rad)
    pelvis = np.asarray(SMPLX_NEUTRAL_PELVIS_REST if pelvis_rest is None else pelvis_rest, np.float64)
    rot = rz @ axis_angle_to_matrix(np.asarray(global_orient, np.float64)).numpy()
    new_transl = rz @ (pelvis + np.asarray(transl, np.float64)) - pelvis
    return matrix_to_axis_angle(rot).numpy().astype(np.float32), new_transl.astype(np.float32)


class PelvisRegressor:
    """Exact rest pelvis ``J0(betas) = p0 + P @ betas`` of a body model (a 3 x num_betas linear map).

    Built once from an :class:`~posedreamer_mm.body.body_model.SMPLXBodyModel` (its smplx layer's ``J_regressor``
    row 0, ``v_template`` and ``shapedirs``), so transforms get the exact pivot without a body-model forward.

    Args:
        body_model: A built ``SMPLXBodyModel``.
    """

    def __init__(self, body_model):
        layer = body_model.smplx
        row = layer.J_regressor[0].detach().double().cpu().numpy()
        self.p0 = row @ layer.v_template.detach().double().cpu().numpy()
        dirs = layer.shapedirs.detach().double().cpu().numpy()  # (V, 3, num_betas)
        self.dirs = np.einsum('v,vcb->cb', row, dirs)

    def __call__(self, betas) -> np.ndarray:
        """``(3,)`` canonical-frame rest pelvis for ``betas (n,)`` (zero-padded or truncated to the model's)."""
        betas = np.asarray(betas, np.float64).reshape(-1)[:self.dirs.shape[1]]
        return self.p0 + self.dirs[:, :len(betas)] @ betas


__all__ = ['MIRROR_AXIS_ANGLE', 'BODY_POSE_FLIP', 'coco17_flip_indices', 'flip_axis_angle', 'flip_body_pose',
           'flip_transl', 'flip_smplx', 'flip_joints_3d', 'flip_points_2d', 'roll_matrix', 'roll_image_affine',
           'roll_smplx_root', 'PelvisRegressor']
