"""SMPL-X from rotation matrices equals the body model's own axis-angle forward."""
import numpy as np
import pytest
import torch

from posedreamer_mm.body.body_model import SMPLXBodyModel
from posedreamer_mm.body.rotations import axis_angle_to_matrix
from posedreamer_mm.models.utils import check_rotmat_support, smplx_forward_rotmat


def test_rotmat_forward_matches_axis_angle_forward(standin_body):
    rng = np.random.default_rng(3)
    b = 3
    aa = {'global_orient': rng.normal(0, 1.0, (b, 3)), 'body_pose': rng.normal(0, 0.4, (b, 63)),
          'jaw_pose': rng.normal(0, 0.2, (b, 3)), 'leye_pose': rng.normal(0, 0.1, (b, 3)),
          'reye_pose': rng.normal(0, 0.1, (b, 3)), 'left_hand_pose': rng.normal(0, 0.3, (b, 45)),
          'right_hand_pose': rng.normal(0, 0.3, (b, 45))}
    aa = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in aa.items()}
    betas = torch.as_tensor(rng.normal(0, 1, (b, 10)), dtype=torch.float32)
    expression = torch.as_tensor(rng.normal(0, 1, (b, 10)), dtype=torch.float32)
    ref = standin_body(**aa, betas=betas, expression=expression)
    full = torch.cat([aa[k].reshape(b, -1, 3) for k in ('global_orient', 'body_pose', 'jaw_pose', 'leye_pose',
                                                          'reye_pose', 'left_hand_pose', 'right_hand_pose')], 1)
    out = smplx_forward_rotmat(standin_body, axis_angle_to_matrix(full), betas, expression)
    assert out.vertices.shape == ref.vertices.shape and out.joints.shape == ref.joints.shape == (b, 127, 3)
    torch.testing.assert_close(out.vertices, ref.vertices, atol=2e-5, rtol=0)
    torch.testing.assert_close(out.joints, ref.joints, atol=2e-5, rtol=0)


def test_rotmat_forward_rejects_what_it_does_not_implement(standin_model_dir, standin_body):
    with pytest.raises(ValueError, match='rotmats must be'):
        smplx_forward_rotmat(standin_body, torch.eye(3).repeat(1, 22, 1, 1))
    with pytest.raises(ValueError, match='use_pca'):
        check_rotmat_support(SMPLXBodyModel(standin_model_dir, use_pca=True))
