"""Synthetic SMPL-X parameter sets with a difficulty of known structure."""
import numpy as np
import pytest

from posedreamer_mm.body.sources.procedural import SMPLX_BODY_JOINTS

LEFT_KNEE = SMPLX_BODY_JOINTS.index('left_knee')
RIGHT_SHOULDER = SMPLX_BODY_JOINTS.index('right_shoulder')


def random_params(n: int, seed: int, num_betas: int = 10) -> dict:
    """Stacked record fields (``features.PARAM_KEYS``) of ``n`` random bodies: joint rotations up to ~1 rad."""
    rng = np.random.default_rng(seed)
    return dict(betas=rng.normal(size=(n, num_betas)).astype(np.float32),
                expression=rng.normal(0, 0.5, (n, 10)).astype(np.float32),
                global_orient=rng.uniform(-0.5, 0.5, (n, 3)).astype(np.float32),
                body_pose=rng.uniform(-0.6, 0.6, (n, 63)).astype(np.float32),
                left_hand_pose=rng.uniform(-0.3, 0.3, (n, 45)).astype(np.float32),
                right_hand_pose=rng.uniform(-0.3, 0.3, (n, 45)).astype(np.float32),
                jaw_pose=rng.uniform(-0.2, 0.2, (n, 3)).astype(np.float32),
                leye_pose=np.zeros((n, 3), np.float32), reye_pose=np.zeros((n, 3), np.float32),
                transl=np.tile(np.float32([0, 0.3, 3.0]), (n, 1)), focal=np.full((n, 2), 890, np.float32),
                princpt=np.full((n, 2), 512, np.float32), img_size=np.full((n, 2), 1024, np.int64))


def true_oks(params: dict) -> np.ndarray:
    """The known structure: OKS falls with the left knee's bend and with the right shoulder raised."""
    knee = np.abs(params['body_pose'][:, 3 * LEFT_KNEE])
    shoulder = params['body_pose'][:, 3 * RIGHT_SHOULDER + 2]
    return 0.95 - 0.4 * knee - 0.2 * (shoulder > 0.2)


@pytest.fixture(scope='module')
def synthetic():
    params = random_params(1500, seed=0)
    noise = np.random.default_rng(1).normal(0, 0.03, 1500)
    return params, true_oks(params) + noise
