"""The difficulty model's features: an SMPL-X parameter vector with a documented, saved layout.

A :class:`FeatureSpec` says which parts of the :class:`~posedreamer_mm.body.sample.BodySample` go into the vector,
in which order, in which rotation representation and with how many betas. It is saved as JSON beside the model
(``<model>.features.json``, :meth:`FeatureSpec.to_json`), so a model is never applied to vectors of another layout:
:meth:`FeatureSpec.check_matches` names every difference (docs/mining.md, "Feature layout").

Parts (docs/conventions.md, "The sample convention"; rotations relative to the parent joint, root in the camera
frame):

============================ ========================= ============================================================
part                         values (axis-angle / 6D)  names
============================ ========================= ============================================================
``global_orient``            3 / 6                     ``global_orient_x`` ... (axis-angle), ``global_orient_r00`` ...
``body_pose``                63 / 126                  ``body_pose_<joint>_<c>``, the 21 SMPL-X body joints
``betas``                    ``num_betas``             ``betas_<k>``
``left_hand_pose``           45 / 90                   ``left_hand_pose_<joint>_<c>``, 15 joints (flat-hand relative)
``right_hand_pose``          45 / 90                   as the left hand
``jaw_pose``                 3 / 6                     ``jaw_pose_<c>``
``expression``               10                        ``expression_<k>``
``transl`` (optional)        3                         ``transl_x`` ... camera frame, metres
``camera`` (optional)        4                         ``camera_fx_over_w``, ``camera_fy_over_h``,
                                                       ``camera_cx_offset``, ``camera_cy_offset`` (fractions of W, H)
============================ ========================= ============================================================

6D is the first two columns of the rotation matrix, column-major (``posedreamer_mm/body/rotations.py``).
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from posedreamer_mm.body.joint_maps import SMPLX_JOINT_NAMES
from posedreamer_mm.body.sample import BodySample

from .errors import FeatureSpecMismatchError, MiningError

SPEC_FORMAT = 'posedreamer_mm.difficulty_features'
SPEC_VERSION = 1

#: Joints of each rotation part, in the record's order.
ROTATION_JOINTS: dict[str, tuple[str, ...]] = {
    'global_orient': ('',), 'body_pose': tuple(SMPLX_JOINT_NAMES[1:22]),
    'left_hand_pose': tuple(SMPLX_JOINT_NAMES[25:40]), 'right_hand_pose': tuple(SMPLX_JOINT_NAMES[40:55]),
    'jaw_pose': ('',)}
#: Every part a spec may hold, in the default order; ``betas`` takes the data's count.
ALL_PARTS = ('global_orient', 'body_pose', 'betas', 'left_hand_pose', 'right_hand_pose', 'jaw_pose', 'expression',
             'transl', 'camera')
#: The reference's vector: the raw SMPL-X parameters without translation and camera.
DEFAULT_PARTS = ('global_orient', 'body_pose', 'betas', 'left_hand_pose', 'right_hand_pose', 'jaw_pose', 'expression')
REPRESENTATIONS = ('axis_angle', 'rot6d')
_COMPONENTS = {'axis_angle': ('x', 'y', 'z'), 'rot6d': ('r00', 'r10', 'r20', 'r01', 'r11', 'r21')}
_CAMERA_NAMES = ('fx_over_w', 'fy_over_h', 'cx_offset', 'cy_offset')
#: The record fields a spec reads (stacked arrays use these keys).
PARAM_KEYS = ('betas', 'expression', 'global_orient', 'body_pose', 'left_hand_pose', 'right_hand_pose', 'jaw_pose',
              'leye_pose', 'reye_pose', 'transl', 'focal', 'princpt', 'img_size')


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """The layout of the difficulty model's input vector.

    Args:
        num_betas: Betas count of the data (10 procedural, 11 BEDLAM, 16 AMASS): a model never mixes counts.
        parts: Parts in vector order, from :data:`ALL_PARTS` (default :data:`DEFAULT_PARTS`).
        representation: Rotation parts as ``'axis_angle'`` (the record's own numbers, the reference) or
            ``'rot6d'`` (continuous).
    """
    num_betas: int
    parts: tuple[str, ...] = DEFAULT_PARTS
    representation: str = 'axis_angle'

    def __post_init__(self):
        object.__setattr__(self, 'parts', tuple(self.parts))
        unknown = [p for p in self.parts if p not in ALL_PARTS]
        if unknown:
            raise MiningError(f'feature parts {unknown} are unknown; choose from {ALL_PARTS}')
        if len(set(self.parts)) != len(self.parts) or not self.parts:
            raise MiningError(f'feature parts must be a non-empty list without repeats, got {list(self.parts)}')
        if self.representation not in REPRESENTATIONS:
            raise MiningError(f'representation must be one of {REPRESENTATIONS}, got {self.representation!r}')
        if 'betas' in self.parts and int(self.num_betas) < 1:
            raise MiningError(f'num_betas must be >= 1 when betas are features, got {self.num_betas}')
        object.__setattr__(self, 'num_betas', int(self.num_betas))

    # --- layout ----------------------------------------------------------------------------------------------
    def part_names(self, part: str) -> list[str]:
        """Feature names of one part (LightGBM-safe: letters, digits, ``_``)."""
        if part in ROTATION_JOINTS:
            comps = _COMPONENTS[self.representation]
            return [f'{part}_{j}_{c}' if j else f'{part}_{c}' for j in ROTATION_JOINTS[part] for c in comps]
        if part == 'betas':
            return [f'betas_{k}' for k in range(self.num_betas)]
        if part == 'expression':
            return [f'expression_{k}' for k in range(10)]
        if part == 'transl':
            return ['transl_x', 'transl_y', 'transl_z']
        return [f'camera_{n}' for n in _CAMERA_NAMES]

    @property
    def slices(self) -> dict[str, tuple[int, int]]:
        """``part -> (start, stop)`` columns of the vector."""
        out, start = {}, 0
        for part in self.parts:
            n = len(self.part_names(part))
            out[part] = (start, start + n)
            start += n
        return out

    @property
    def names(self) -> list[str]:
        return [n for part in self.parts for n in self.part_names(part)]

    @property
    def num_features(self) -> int:
        return len(self.names)

    # --- features --------------------------------------------------------------------------------------------
    def features(self, params: Mapping[str, np.ndarray] | Sequence[BodySample], where: str = 'the data') -> np.ndarray:
        """The ``(N, num_features)`` float32 vectors of ``N`` records.

        Args:
            params: Stacked record fields (``betas (N, B)``, ``body_pose (N, 63)``, ... :data:`PARAM_KEYS`;
                :func:`stack_params`) or a list of samples.
            where: Names the data in errors.

        Raises:
            FeatureSpecMismatchError: the data's betas count is not the spec's.
        """
        if not isinstance(params, Mapping):
            params = stack_params(params)
        if 'betas' in self.parts and np.shape(params['betas'])[1] != self.num_betas:
            raise FeatureSpecMismatchError(
                f'{where} has {np.shape(params["betas"])[1]} betas per sample but the feature layout has '
                f'{self.num_betas}: build the pose source with num_betas={self.num_betas} (truncates or zero-pads) or '
                'train a model on data with that count')
        cols = []
        for part in self.parts:
            if part in ROTATION_JOINTS:
                value = np.asarray(params[part], np.float64)
                if self.representation == 'rot6d':
                    mats = Rotation.from_rotvec(value.reshape(-1, 3)).as_matrix()
                    value = np.concatenate([mats[:, :, 0], mats[:, :, 1]], 1).reshape(len(value), -1)
                cols.append(value)
            elif part == 'camera':
                size = np.asarray(params['img_size'], np.float64)
                focal, princpt = np.asarray(params['focal'], np.float64), np.asarray(params['princpt'], np.float64)
                cols.append(np.concatenate([focal / size, princpt / size - 0.5], 1))
            else:
                cols.append(np.asarray(params[part], np.float64))
        out = np.concatenate(cols, 1).astype(np.float32)
        assert out.shape[1] == self.num_features, (out.shape, self.num_features)
        return out

    # --- comparison and files --------------------------------------------------------------------------------
    def differences(self, other: FeatureSpec) -> list[str]:
        """What differs from ``other`` (``self`` is the model's layout, ``other`` the data's), one phrase each."""
        out = []
        if self.representation != other.representation:
            out.append(f'rotations are {self.representation} in the model, {other.representation} in the data')
        missing = [p for p in self.parts if p not in other.parts]
        extra = [p for p in other.parts if p not in self.parts]
        if missing:
            out.append(f'part(s) {missing} of the model are missing from the data')
        if extra:
            out.append(f'the data has part(s) {extra} the model was not trained on')
        if 'betas' in self.parts and 'betas' in other.parts and self.num_betas != other.num_betas:
            out.append(f'betas: the model has {self.num_betas}, the data {other.num_betas}')
        common = [p for p in self.parts if p in other.parts]
        if not missing and not extra and common != list(other.parts):
            out.append(f'part order differs: model {list(self.parts)}, data {list(other.parts)}')
        return out

    def check_matches(self, other: FeatureSpec, where: str) -> None:
        """Raises :class:`FeatureSpecMismatchError` naming ``where`` and every difference, if any."""
        diffs = self.differences(other)
        if diffs:
            raise FeatureSpecMismatchError(f'{where}: the feature layout does not match: ' + '; '.join(diffs))

    def to_dict(self) -> dict:
        """The JSON form: the settings, then the derived layout a reader can use without this code."""
        return dict(format=SPEC_FORMAT, version=SPEC_VERSION, representation=self.representation,
                    num_betas=self.num_betas, parts=list(self.parts),
                    slices={p: list(s) for p, s in self.slices.items()},
                    source_lengths=dict(betas=self.num_betas, expression=10, body_pose=63, hand_pose=45),
                    num_features=self.num_features, names=self.names)

    @classmethod
    def from_dict(cls, data: Mapping, where: str = 'feature spec') -> FeatureSpec:
        """Inverse of :meth:`to_dict`; the stored layout must equal the one its settings give.

        Raises:
            MiningError: naming ``where``: not a feature spec, a missing key, or a layout (names, slices) that
                disagrees with the settings (an edited file).
        """
        if not isinstance(data, Mapping) or data.get('format') != SPEC_FORMAT:
            raise MiningError(f'{where} is not a difficulty feature spec (format {SPEC_FORMAT!r} expected)')
        if data.get('version') != SPEC_VERSION:
            raise MiningError(f'{where}: feature spec version {data.get("version")!r}, this code reads {SPEC_VERSION}')
        try:
            spec = cls(num_betas=data['num_betas'], parts=tuple(data['parts']), representation=data['representation'])
        except KeyError as err:
            raise MiningError(f'{where}: feature spec has no {err.args[0]!r}') from None
        if list(data.get('names', [])) != spec.names or \
                {p: list(s) for p, s in data.get('slices', {}).items()} != spec.to_dict()['slices']:
            raise MiningError(f'{where}: the stored names/slices do not follow from parts={list(spec.parts)}, '
                              f'num_betas={spec.num_betas}, representation={spec.representation!r} (edited file?)')
        return spec

    def save(self, path: str | os.PathLike) -> None:
        from posedreamer_mm.utils.fileio import atomic_write_text
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))


def stack_params(samples: Sequence[BodySample]) -> dict[str, np.ndarray]:
    """``{field: (N, ...)}`` of :data:`PARAM_KEYS` for samples sharing one betas count.

    Raises:
        MiningError: no samples, or mixed betas counts (naming two ids with different counts).
    """
    if not samples:
        raise MiningError('no samples to build features from')
    counts = {}
    for s in samples:
        counts.setdefault(s.num_betas, s.id)
    if len(counts) > 1:
        raise MiningError('samples have different betas counts ' + ', '.join(f'{n} (e.g. {i!r})'
                                                                             for n, i in sorted(counts.items()))
                          + '; one model needs one count: set num_betas on the pose source')
    return {k: np.stack([np.asarray(getattr(s, k)) for s in samples]) for k in PARAM_KEYS}
