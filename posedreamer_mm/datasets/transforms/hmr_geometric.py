"""Geometric HMR transforms: horizontal flip of the full sample, box centre/scale, box augmentation, and the
top-down crop that also applies the rotation augmentation as an exact camera roll.

Every transform keeps image, 2D keypoints, box, camera and the SMPL-X root consistent (docs/conventions.md, "HMR
data"): projecting the labelled body with the sample's camera lands on the labelled keypoints before and after.
The maths lives in :mod:`posedreamer_mm.body.flip`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
from mmcv.transforms import BaseTransform

from posedreamer_mm.body.body_model import GENDERS, BodyModelFileError
from posedreamer_mm.body.flip import (
    PelvisRegressor,
    coco17_flip_indices,
    flip_joints_3d,
    flip_points_2d,
    flip_smplx,
    roll_image_affine,
    roll_matrix,
    roll_smplx_root,
)
from posedreamer_mm.body.gendered import shared_body_models
from posedreamer_mm.body.sources.base import SMPLX_NEUTRAL_PELVIS_REST
from posedreamer_mm.registry import TRANSFORMS


class GenderedPelvis:
    """``(betas, gender) -> (3,)`` exact rest pelvis ``J0(betas)`` of the model of the sample's gender.

    Betas fitted to a gendered SMPL-X (a generated sample with ``gender='female'``, AMASS G fits) describe another
    body under the neutral model, so the flip and roll pivots use the model the label was made with
    (``results['gender']``, as :class:`~posedreamer_mm.evaluation.HMRMetric` builds its ground-truth meshes).

    The models are the process's shared set (:func:`~posedreamer_mm.body.gendered.shared_body_models`, the one
    home of "a model per gender"). Every gender the configured ``model_path`` has a file for (all three for the
    stand-in, ``model_path=None``) is read **when the transform is built**, in the main process, and only its
    3 x num_betas map is kept here (:class:`~posedreamer_mm.body.flip.PelvisRegressor`, numpy; a pickled
    transform stays small): building an SMPL-X layer lazily in a fork-pool worker of a parent that had run torch
    hangs, and a corrupt file fails at once. A sample of a gender without a file raises, naming the file that is
    missing (or, for a one-file ``model_path``, that file).

    Args:
        body_model: ``SMPLXBodyModel`` or ``GenderedSMPLXBodyModel`` config (its ``gender`` is the default for
            samples without one). A ``model_path`` that is one file gives that file's gender only.
    """

    def __init__(self, body_model: dict):
        models = shared_body_models(body_model)
        self.default_gender = models.default_gender
        self._regressors: dict[str, PelvisRegressor] = {}
        self._missing: dict[str, Exception] = {}
        for gender in GENDERS:
            try:
                self._regressors[gender] = models.pelvis_regressor(gender)
            except (BodyModelFileError, ValueError) as err:  # no file for it, or another gender's single file
                if gender == self.default_gender:
                    raise
                self._missing[gender] = err

    def __call__(self, betas, gender: str | None = None) -> np.ndarray:
        gender = str(gender) if gender else self.default_gender
        if gender not in self._regressors:
            if gender not in GENDERS:
                raise ValueError(f'unknown gender {gender!r}; expected one of {GENDERS}')
            raise self._missing[gender]
        return self._regressors[gender](betas)


def _pelvis_fn(body_model: dict | None):
    """The configured :class:`GenderedPelvis`, or None (the neutral SMPL-X default)."""
    return None if body_model is None else GenderedPelvis(body_model)


def _affine3(mat: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(mat, np.float64), [[0.0, 0.0, 1.0]]])


def apply_affine(points: np.ndarray, mat: np.ndarray) -> np.ndarray:
    """``(..., 2)`` points through a ``(2, 3)`` affine."""
    points = np.asarray(points, np.float64)
    return points @ mat[:, :2].T + mat[:, 2]


@TRANSFORMS.register_module()
class HMRRandomFlip(BaseTransform):
    """Horizontal flip of the full image and every label, with probability ``prob``.

    Pixel ``x -> W - 1 - x`` (pixel centres at integers); the principal point moves the same way, which makes the
    flip the camera-frame mirror ``diag(-1, 1, 1)``: SMPL-X poses are mirrored with the left/right swap
    (:func:`posedreamer_mm.body.flip.flip_smplx`), the translation keeps the mirrored mesh exact, 3D joints are
    mirrored and swapped (joint 0 set to the flipped body's pelvis, see ``flip_joints_3d``), COCO-17 keypoints
    swapped. Applying it twice returns the input.

    Args:
        prob: Flip probability.
        body_model: Optional body-model config whose exact rest pelvis ``J0(betas)`` pivots the translation, of
            the model of the sample's ``gender`` (:class:`GenderedPelvis`; default: the neutral SMPL-X pelvis;
            only its x, ~3 mm, matters, see ``body/flip.py``).

    Required Keys:
        - img, bbox, focal, princpt, img_shape_full, keypoints_coco17, smplx

    Modified Keys:
        - img, bbox, princpt, keypoints_coco17, smplx, joints_3d and bbox_center (if present)

    Added Keys:
        - flip (bool, toggled)
    """

    def __init__(self, prob: float = 0.5, body_model: dict | None = None):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f'prob must be in [0, 1], got {prob}')
        self.prob = prob
        self.body_model = body_model
        self._pelvis = _pelvis_fn(body_model)
        self._kpt_index = coco17_flip_indices()

    def transform(self, results: dict) -> dict:
        if self.prob < 1.0 and np.random.rand() >= self.prob:
            results.setdefault('flip', False)
            return results
        return self.flip(results)

    def flip(self, results: dict) -> dict:
        """Flips unconditionally (the deterministic core, used by tests)."""
        w = int(results['img_shape_full'][1])
        if 'img' in results:
            results['img'] = cv2.flip(results['img'], 1)  # ~15x faster than a numpy reversed copy
        x0, y0, x1, y1 = np.asarray(results['bbox'], np.float32)
        results['bbox'] = np.array([w - 1 - x1, y0, w - 1 - x0, y1], np.float32)
        cx, cy = np.asarray(results['princpt'], np.float32)
        results['princpt'] = np.array([w - 1 - cx, cy], np.float32)
        if 'bbox_center' in results:
            bx, by = np.asarray(results['bbox_center'], np.float32)
            results['bbox_center'] = np.array([w - 1 - bx, by], np.float32)
        results['keypoints_coco17'] = flip_points_2d(results['keypoints_coco17'], w, self._kpt_index)
        smplx = results['smplx']
        pelvis = None if self._pelvis is None else self._pelvis(smplx['betas'], results.get('gender'))
        results['smplx'] = flip_smplx(smplx, pelvis)
        if results.get('joints_3d') is not None:
            root = (SMPLX_NEUTRAL_PELVIS_REST if pelvis is None else pelvis) + results['smplx']['transl']
            results['joints_3d'] = flip_joints_3d(results['joints_3d'], root=root)
        results['flip'] = not results.get('flip', False)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(prob={self.prob}, body_model={self.body_model})'


@TRANSFORMS.register_module()
class HMRBBoxCenterScale(BaseTransform):
    """Box centre and padded size from ``bbox`` (xyxy), as mmpose's ``GetBBoxCenterScale`` for one person.

    Args:
        padding: Size multiplier (1.25 as mmpose's top-down configs).

    Required Keys:
        - bbox

    Added Keys:
        - bbox_center ((2,) px), bbox_scale ((2,) w, h px), bbox_rotation (0.0 degrees)
    """

    def __init__(self, padding: float = 1.25):
        self.padding = padding

    def transform(self, results: dict) -> dict:
        x0, y0, x1, y1 = np.asarray(results['bbox'], np.float32)
        results['bbox_center'] = np.array([(x0 + x1) / 2, (y0 + y1) / 2], np.float32)
        results['bbox_scale'] = np.array([x1 - x0, y1 - y0], np.float32) * self.padding
        results.setdefault('bbox_rotation', 0.0)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(padding={self.padding})'


@TRANSFORMS.register_module()
class HMRRandomBBoxTransform(BaseTransform):
    """Random box shift, scale and rotation (mmpose ``RandomBBoxTransform`` semantics, one person).

    The rotation is applied by :class:`HMRTopdownAffine` as a camera roll (exact for the 3D labels).

    Args:
        shift_factor: Max shift as a fraction of the box size.
        shift_prob: Probability of shifting.
        scale_factor: (min, max) size multiplier.
        scale_prob: Probability of scaling.
        rotate_factor: Rotation std in degrees (clipped at 2 std), positive = clockwise on screen.
        rotate_prob: Probability of rotating.

    Required Keys:
        - bbox_center, bbox_scale

    Modified Keys:
        - bbox_center, bbox_scale

    Added Keys:
        - bbox_rotation (degrees)
    """

    def __init__(self, shift_factor: float = 0.1, shift_prob: float = 0.3, scale_factor: Sequence[float] = (0.8, 1.2),
                 scale_prob: float = 1.0, rotate_factor: float = 30.0, rotate_prob: float = 0.4):
        self.shift_factor, self.shift_prob = shift_factor, shift_prob
        self.scale_factor, self.scale_prob = tuple(scale_factor), scale_prob
        self.rotate_factor, self.rotate_prob = rotate_factor, rotate_prob

    def transform(self, results: dict) -> dict:
        scale = np.asarray(results['bbox_scale'], np.float32)
        if np.random.rand() < self.shift_prob:
            results['bbox_center'] = results['bbox_center'] + np.random.uniform(-1, 1, 2).astype(np.float32) \
                * self.shift_factor * scale
        if np.random.rand() < self.scale_prob:
            results['bbox_scale'] = scale * np.float32(np.random.uniform(*self.scale_factor))
        rot = 0.0
        if np.random.rand() < self.rotate_prob:
            rot = float(np.clip(np.random.randn() * self.rotate_factor, -2 * self.rotate_factor,
                                2 * self.rotate_factor))
        results['bbox_rotation'] = rot
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(shift_factor={self.shift_factor}, shift_prob={self.shift_prob}, '
                f'scale_factor={self.scale_factor}, scale_prob={self.scale_prob}, '
                f'rotate_factor={self.rotate_factor}, rotate_prob={self.rotate_prob})')


@TRANSFORMS.register_module()
class HMRTopdownAffine(BaseTransform):
    """Crops the box to ``input_size`` with one affine warp; a box rotation becomes an exact camera roll.

    The box's aspect ratio is first widened to ``input_size``'s (mmpose ``fix_aspect_ratio``). A rotation ``r``
    (``bbox_rotation``, degrees) rolls the camera about its optical axis: the image moves by ``K Rz K^-1`` (about
    the principal point, not the box), the SMPL-X root and 3D joints by ``Rz`` (``body/flip.py``), so the full-
    image camera ``(focal, princpt)`` stays valid for the rolled sample, as the CLIFF-style head needs. The crop
    is then axis-aligned in the rolled image around the rolled box centre. Keypoints keep their visibility
    (points outside the crop remain labels).

    Pixel convention as ``body/camera.py``: box corner ``c - s / 2`` maps to crop coordinate 0 (a pixel centre).

    Args:
        input_size: (W, H) of the crop, e.g. (192, 256).
        body_model: Optional body-model config for the exact rest pelvis of the roll, of the model of the
            sample's ``gender`` (:class:`GenderedPelvis`; default the neutral SMPL-X pelvis; error
            ``|(Rz - I)(J0(betas) - J0_neutral)|``, about 1 cm at 30 degrees).

    Required Keys:
        - img, bbox_center, bbox_scale, focal, princpt, keypoints_coco17, smplx

    Modified Keys:
        - img ((H_in, W_in, 3)), img_shape, bbox (the crop box, xyxy in the rolled full image), bbox_center,
          bbox_scale, keypoints_coco17 (crop pixels), smplx (global_orient, transl when rolled), joints_3d

    Added Keys:
        - crop_trans ((2, 3) full image -> crop), input_size, keypoints_full ((17, 3) full-image pixels)
    """

    def __init__(self, input_size: Sequence[int] = (192, 256), body_model: dict | None = None):
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.body_model = body_model
        self._pelvis = _pelvis_fn(body_model)

    def transform(self, results: dict) -> dict:
        w_in, h_in = self.input_size
        focal, princpt = results['focal'], results['princpt']
        scale = np.asarray(results['bbox_scale'], np.float64)
        aspect = w_in / h_in
        scale = np.where(scale[0] > scale[1] * aspect, [scale[0], scale[0] / aspect], [scale[1] * aspect, scale[1]])
        rot = math.radians(float(results.get('bbox_rotation', 0.0)))
        roll = roll_image_affine(rot, focal, princpt) if rot else np.eye(3)[:2]
        center = apply_affine(results['bbox_center'], roll)
        s = w_in / scale[0]
        crop = np.array([[s, 0.0, w_in / 2 - s * center[0]], [0.0, s, h_in / 2 - s * center[1]]])
        total = (_affine3(crop) @ _affine3(roll))[:2]
        results['img'] = cv2.warpAffine(results['img'], total, (w_in, h_in), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        results['img_shape'] = (h_in, w_in)
        kpts = np.array(results['keypoints_coco17'], np.float32, copy=True)
        full = kpts.copy()
        full[:, :2] = apply_affine(kpts[:, :2], roll)
        kpts[:, :2] = apply_affine(full[:, :2], crop)
        results['keypoints_full'], results['keypoints_coco17'] = full, kpts
        if rot:
            smplx = dict(results['smplx'])
            pelvis = None if self._pelvis is None else self._pelvis(smplx['betas'], results.get('gender'))
            smplx['global_orient'], smplx['transl'] = roll_smplx_root(smplx['global_orient'], smplx['transl'], rot,
                                                                      pelvis)
            results['smplx'] = smplx
            if results.get('joints_3d') is not None:
                results['joints_3d'] = (results['joints_3d'] @ roll_matrix(rot).T).astype(np.float32)
        results['bbox_center'] = center.astype(np.float32)
        results['bbox_scale'] = scale.astype(np.float32)
        results['bbox'] = np.concatenate([center - scale / 2, center + scale / 2]).astype(np.float32)
        results['crop_trans'] = crop.astype(np.float32)
        results['input_size'] = self.input_size
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(input_size={self.input_size}, body_model={self.body_model})'
