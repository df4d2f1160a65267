"""SMPL-X forward from rotation matrices (what an HMR head regresses), through the body model's own buffers.

``smplx`` 0.1.28's ``SMPLX.forward`` reshapes every pose to axis-angle (``pose2rot=False`` is not usable
there), and converting the head's rotation matrices back to axis-angle has an unstable gradient at the identity
(``acos`` at 1), where every pose starts. So this runs the same steps as ``SMPLX.forward`` -- blend shapes,
``smplx.lbs.lbs(pose2rot=False)``, the vertex-picked joints and the face landmarks -- on matrices. It equals
:class:`~posedreamer_mm.body.SMPLXBodyModel` on the same pose (tested) and supports what the HMR model needs:
no PCA hands, flat hand mean, no face contour.
"""
from __future__ import annotations

import torch
from smplx.lbs import lbs, vertices2landmarks
from torch import Tensor

from posedreamer_mm.body.body_model import BodyOutput, SMPLXBodyModel

#: Joints of SMPL-X's 55-joint skeleton, in ``full_pose`` order: root, body, jaw, eyes, hands.
NUM_SKELETON_JOINTS = 55


def check_rotmat_support(body: SMPLXBodyModel) -> None:
    """Raises ``ValueError`` for body-model settings :func:`smplx_forward_rotmat` does not implement."""
    model = body.smplx
    problems = []
    if model.use_pca:
        problems.append('use_pca=True (build it with use_pca=False: the head predicts 15 rotations per hand)')
    if model.use_face_contour:
        problems.append('use_face_contour=True')
    if bool((model.pose_mean != 0).any()):
        problems.append('flat_hand_mean=False (a mean hand pose added in axis-angle)')
    if problems:
        raise ValueError(f'the HMR model poses SMPL-X from rotation matrices and does not support {problems}')


def smplx_forward_rotmat(body: SMPLXBodyModel, rotmats: Tensor, betas: Tensor | None = None,
                         expression: Tensor | None = None) -> BodyOutput:
    """Poses SMPL-X from per-joint rotation matrices.

    Args:
        body: The body model (its buffers are used; it is not called).
        rotmats: ``(B, 55, 3, 3)`` local rotations: global orient, 21 body joints, jaw, left eye, right eye,
            15 left-hand and 15 right-hand joints (``smplx``'s ``full_pose`` order). Camera frame root.
        betas: ``(B, <=num_betas)`` shape, zero-padded; ``None`` = zeros.
        expression: ``(B, <=num_expression_coeffs)``; ``None`` = zeros.

    Returns:
        :class:`~posedreamer_mm.body.BodyOutput` with ``vertices (B, V, 3)`` and ``joints (B, 127, 3)`` metres,
        without translation (add the camera translation to both).
    """
    model = body.smplx
    b = rotmats.shape[0]
    if rotmats.shape[1:] != (NUM_SKELETON_JOINTS, 3, 3):
        raise ValueError(f'rotmats must be (B, {NUM_SKELETON_JOINTS}, 3, 3), got {tuple(rotmats.shape)}')

    def pad(x: Tensor | None, n: int) -> Tensor:
        if x is None:
            return rotmats.new_zeros(b, n)
        if x.shape[1] > n:
            raise ValueError(f'{x.shape[1]} coefficients given, the body model has {n}')
        return torch.cat([x, x.new_zeros(b, n - x.shape[1])], 1)

    shape = torch.cat([pad(betas, body.num_betas), pad(expression, body.num_expression_coeffs)], -1)
    shapedirs = torch.cat([model.shapedirs, model.expr_dirs], dim=-1)
    vertices, joints = lbs(shape, rotmats, model.v_template, shapedirs, model.posedirs, model.J_regressor,
                           model.parents, model.lbs_weights, pose2rot=False)
    landmarks = vertices2landmarks(vertices, model.faces_tensor, model.lmk_faces_idx[None].expand(b, -1).contiguous(),
                                   model.lmk_bary_coords[None].expand(b, -1, -1))
    joints = torch.cat([model.vertex_joint_selector(vertices, joints), landmarks], 1)
    return BodyOutput(vertices, joints)


__all__ = ['smplx_forward_rotmat', 'check_rotmat_support', 'NUM_SKELETON_JOINTS']
