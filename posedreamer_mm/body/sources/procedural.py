"""Random body poses inside per-joint limits, for tests and pose-diversity experiments."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.spatial.transform import Rotation
from scipy.stats import truncnorm

from posedreamer_mm.registry import POSE_SOURCES

from ..camera import upright_global_orient_np
from ..sample import BodySample
from .base import BodySource, CameraSpec, stable_digest, stable_seed

#: The 21 SMPL-X body joints in ``body_pose`` order (joint 0, the pelvis, is ``global_orient``).
SMPLX_BODY_JOINTS = ('left_hip', 'right_hip', 'spine1', 'left_knee', 'right_knee', 'spine2', 'left_ankle',
                     'right_ankle', 'spine3', 'left_foot', 'right_foot', 'neck', 'left_collar', 'right_collar',
                     'head', 'left_shoulder', 'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist',
                     'right_wrist')

#: Intrinsic Euler order of the limits: ``R = Ry(y) @ Rz(z) @ Rx(x)``. Every z range stays inside (-90, 90) so
#: the decomposition is unique and a pose can be checked against the table after a round trip.
EULER_ORDER = 'YZX'

#: Human-plausible limits, degrees, ``((x_min, x_max), (y_min, y_max), (z_min, z_max))`` about the joint's
#: canonical axes (x = body's left, y = up, z = forward; rest pose = T-pose, palms down). Signs: hip flexion
#: is -x, knee flexion +x (knees bend one way), spine/neck forward bend +x, left elbow flexion -y and right +y
#: (elbows bend one way), left arm down -z and right arm down +z, left leg abduction +z and right -z.
DEFAULT_JOINT_LIMITS: dict[str, tuple[tuple[float, float], ...]] = {
    'left_hip': ((-110, 30), (-35, 35), (-20, 45)),
    'right_hip': ((-110, 30), (-35, 35), (-45, 20)),
    'spine1': ((-15, 35), (-20, 20), (-15, 15)),
    'left_knee': ((0, 140), (-5, 5), (-5, 5)),
    'right_knee': ((0, 140), (-5, 5), (-5, 5)),
    'spine2': ((-10, 25), (-15, 15), (-10, 10)),
    'left_ankle': ((-25, 40), (-15, 15), (-20, 20)),
    'right_ankle': ((-25, 40), (-15, 15), (-20, 20)),
    'spine3': ((-10, 25), (-15, 15), (-10, 10)),
    'left_foot': ((-30, 15), (-5, 5), (-5, 5)),
    'right_foot': ((-30, 15), (-5, 5), (-5, 5)),
    'neck': ((-30, 40), (-35, 35), (-25, 25)),
    'left_collar': ((-10, 10), (-15, 15), (-10, 20)),
    'right_collar': ((-10, 10), (-15, 15), (-20, 10)),
    'head': ((-25, 30), (-35, 35), (-20, 20)),
    'left_shoulder': ((-60, 60), (-90, 40), (-80, 70)),
    'right_shoulder': ((-60, 60), (-40, 90), (-70, 80)),
    'left_elbow': ((-40, 40), (-145, 0), (-10, 10)),
    'right_elbow': ((-40, 40), (0, 145), (-10, 10)),
    'left_wrist': ((-40, 40), (-30, 30), (-60, 60)),
    'right_wrist': ((-40, 40), (-30, 30), (-60, 60)),
}


def limits_array(joint_limits: Mapping[str, Sequence[Sequence[float]]] | None = None) -> np.ndarray:
    """The limit table as a ``(21, 3, 2)`` array (joint, axis x/y/z, min/max), degrees.

    Args:
        joint_limits: Overrides of :data:`DEFAULT_JOINT_LIMITS` by joint name.
    """
    table = dict(DEFAULT_JOINT_LIMITS)
    unknown = sorted(set(joint_limits or {}) - set(table))
    if unknown:
        raise ValueError(f'unknown joints in joint_limits: {unknown}; known: {SMPLX_BODY_JOINTS}')
    table.update(joint_limits or {})
    limits = np.array([table[name] for name in SMPLX_BODY_JOINTS], np.float64)
    if limits.shape != (21, 3, 2):
        raise ValueError(f'joint_limits must give ((x_min, x_max), (y_min, y_max), (z_min, z_max)) per joint, '
                         f'got an array of shape {limits.shape}')
    if (limits[..., 0] > limits[..., 1]).any():
        raise ValueError('joint_limits: some min > max')
    if (np.abs(limits[:, 2]) >= 90).any():
        raise ValueError('joint_limits: z limits must stay inside (-90, 90) degrees (Euler order YZX)')
    return limits


def euler_to_body_pose(euler_deg: np.ndarray) -> np.ndarray:
    """``(..., 21, 3)`` Euler angles (x, y, z degrees, order :data:`EULER_ORDER`) -> ``(..., 63)`` axis-angle."""
    euler_deg = np.asarray(euler_deg, np.float64)
    yzx = euler_deg[..., [1, 2, 0]].reshape(-1, 3)
    rotvec = Rotation.from_euler(EULER_ORDER, yzx, degrees=True).as_rotvec()
    return rotvec.reshape(*euler_deg.shape[:-2], 63).astype(np.float32)


def body_pose_to_euler(body_pose: np.ndarray) -> np.ndarray:
    """Inverse of :func:`euler_to_body_pose`: ``(..., 63)`` -> ``(..., 21, 3)`` (x, y, z degrees)."""
    body_pose = np.asarray(body_pose, np.float64)
    yzx = Rotation.from_rotvec(body_pose.reshape(-1, 3)).as_euler(EULER_ORDER, degrees=True)
    return yzx[:, [2, 0, 1]].reshape(*body_pose.shape[:-1], 21, 3)


@POSE_SOURCES.register_module()
class ProceduralPoseSource(BodySource):
    """Body poses sampled inside per-joint Euler limits; upright, facing the camera, zero betas and hands.

    Sample ``i`` depends only on ``(seed, i)`` and the sampling configuration, so any subset can be drawn on any
    rank in any order. Ids are ``procedural_<config>_s<seed>_<index:08d>``, ``<config>`` a 6-hex digest of the
    joint limits, the sampling mode and (for 'truncnorm') ``std_fraction`` (:attr:`config_digest`), so two
    configurations never share an id. The camera and ``num_betas`` do not enter the id: as for the file
    sources, the id names the pose.

    Args:
        num_samples: Length of the source.
        seed: Base seed.
        joint_limits: Overrides of :data:`DEFAULT_JOINT_LIMITS` by joint name (degrees).
        sampling: 'uniform' inside the limits, or 'truncnorm': a normal centred on the rest pose (clipped into
            the range) with std ``std_fraction`` of the range, truncated to the limits.
        std_fraction: See ``sampling``.
        num_betas: Length of the (zero) betas.
        camera: :class:`CameraSpec` or its kwargs.
    """
    name = 'procedural'

    def __init__(self, num_samples: int, seed: int = 0,
                 joint_limits: Mapping[str, Sequence[Sequence[float]]] | None = None, sampling: str = 'uniform',
                 std_fraction: float = 0.25, num_betas: int = 10, camera: CameraSpec | dict | None = None):
        super().__init__()
        if sampling not in ('uniform', 'truncnorm'):
            raise ValueError(f"sampling must be 'uniform' or 'truncnorm', got {sampling!r}")
        if num_samples < 0:
            raise ValueError(f'num_samples must be >= 0, got {num_samples}')
        self.num_samples, self.seed, self.sampling = int(num_samples), int(seed), sampling
        self.std_fraction, self.num_betas = float(std_fraction), int(num_betas)
        self.limits = limits_array(joint_limits)
        self.camera = CameraSpec.build(camera)
        config = dict(limits=np.round(self.limits, 6).tolist(), sampling=sampling,
                      std_fraction=self.std_fraction if sampling == 'truncnorm' else None)
        self.config_digest = stable_digest(json.dumps(config, sort_keys=True), 6)

    def __len__(self) -> int:
        return self.num_samples

    def sample_euler(self, index: int) -> np.ndarray:
        """``(21, 3)`` Euler angles (x, y, z degrees) of sample ``index``."""
        rng = np.random.default_rng(stable_seed(self.name, self.seed, index))
        low, high = self.limits[..., 0], self.limits[..., 1]
        if self.sampling == 'uniform':
            return rng.uniform(low, high)
        # A fixed axis (min == max) takes its value; truncnorm refuses an empty interval, so it draws on a
        # stand-in unit interval there (one draw per axis either way, so the other axes' values do not change).
        fixed = high <= low
        centre = np.clip(0.0, low, high)
        scale = np.where(fixed, 1.0, np.maximum(self.std_fraction * (high - low), 1e-9))
        a = (low - centre) / scale
        values = truncnorm.rvs(a, np.where(fixed, a + 1.0, (high - centre) / scale), loc=centre, scale=scale,
                               random_state=rng)
        return np.where(fixed, low, np.clip(values, low, high))

    def _get(self, index: int) -> BodySample:
        euler = self.sample_euler(index)
        sample_id = f'{self.name}_{self.config_digest}_s{self.seed}_{index:08d}'
        sample = BodySample(id=sample_id, betas=np.zeros(self.num_betas), global_orient=upright_global_orient_np(0.0),
                            body_pose=euler_to_body_pose(euler), source=self.name,
                            meta=dict(index=index, seed=self.seed, euler_deg=euler.astype(np.float32)))
        return self.camera.apply(sample)
