"""Rotation conversions against scipy's independent implementation."""
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from posedreamer_mm.body.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_rotation_6d,
    rotation_6d_to_matrix,
)


@pytest.mark.parametrize('angle', [0.0, 1e-7, 0.3, 2.0, np.pi - 1e-7, np.pi])
def test_axis_angle_round_trip(angle):
    axis = np.array([0.2, -0.5, 0.8]) / np.linalg.norm([0.2, -0.5, 0.8])
    mat = axis_angle_to_matrix(torch.tensor(axis * angle, dtype=torch.float64))
    np.testing.assert_allclose(mat.numpy(), Rotation.from_rotvec(axis * angle).as_matrix(), atol=1e-9)
    back = matrix_to_axis_angle(mat)
    np.testing.assert_allclose(Rotation.from_rotvec(back.numpy()).as_matrix(), mat.numpy(), atol=1e-6)


def test_rotation_6d_is_first_two_columns_and_gram_schmidt_recovers_the_matrix():
    mats = Rotation.random(20, random_state=1).as_matrix()
    d6 = matrix_to_rotation_6d(torch.tensor(mats))
    np.testing.assert_allclose(d6[:, :3].numpy(), mats[:, :, 0], atol=1e-12)
    np.testing.assert_allclose(d6[:, 3:].numpy(), mats[:, :, 1], atol=1e-12)
    np.testing.assert_allclose(rotation_6d_to_matrix(d6).numpy(), mats, atol=1e-9)
    # A perturbed 6D vector (what a network emits) still maps to a proper rotation.
    noisy = rotation_6d_to_matrix(d6 + 0.1 * torch.randn_like(d6, generator=torch.Generator().manual_seed(0)))
    eye = torch.eye(3, dtype=noisy.dtype).expand_as(noisy)
    torch.testing.assert_close(noisy.transpose(-1, -2) @ noisy, eye, atol=1e-9, rtol=0)
    torch.testing.assert_close(torch.linalg.det(noisy), torch.ones(20, dtype=noisy.dtype), atol=1e-9, rtol=0)
