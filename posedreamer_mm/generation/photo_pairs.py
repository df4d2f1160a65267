"""Control-model training pairs from labelled photos: the photo as a pose source, the pair checks, the photo crop.

A pair is a control image rendered from a person's SMPL-X label and the photo of that person, both at ONE crop
camera (docs/control_pairs.md)::

    source=dict(type='HMRPhotoSource', dataset=dict(type='BEDLAMHMRDataset', label_root=..., img_root=...)),
    pipeline=[dict(type='BodyForward'), dict(type='BodyCropCamera', size=512, margin=0.1),
              dict(type='PhotoPairCheck', min_crop_px=128),          # too small / truncated / crowded: dropped
              dict(type='LoadPhotoCrop'),                             # the photo through the crop camera
              dict(type='RenderControls', controls=[dict(type='PNCCRenderer')]),
              dict(type='CaptionFromTemplate')],
    backend=dict(type='PhotoCropBackend'),                            # the image is the photo crop

:class:`HMRPhotoSource` reads any registered HMR dataset (BEDLAM npz + images, COCO / MPII / UBody with NeuralAnnot
SMPL-X fits, PoseDreamer labels, this project's generated datasets): those datasets already resolve each person's
image path, camera and SMPL-X fit, so one adapter serves all of them. Each record carries the image path and the
boxes of the other annotated people in the same image (``meta``), which :class:`PhotoPairCheck` needs.

The crop: :class:`~posedreamer_mm.generation.transforms.BodyCropCamera` decides the square ``crop_box`` in the
photo and the crop camera from the projected mesh; :func:`crop_photo` maps the photo with exactly the affine map
of ``body/camera.py`` (``u -> (u - x) * size / w``, pixel centres at integers), so a point of the label lands on
the same pixel in the control and in the photo crop.
"""
from __future__ import annotations

import collections
import importlib
import os.path as osp
import pkgutil
from collections.abc import Sequence

import cv2
import numpy as np
from mmcv.transforms import BaseTransform

from posedreamer_mm.body.sample import BodySample
from posedreamer_mm.body.sources.base import BodySource
from posedreamer_mm.registry import DATASETS, POSE_SOURCES, TRANSFORMS

from .transforms import drop

#: SMPL-X parameters of an HMR ``data_info['smplx']`` (datasets/hmr_base.py, SMPLX_KEYS).
_SMPLX_FIELDS = ('global_orient', 'body_pose', 'left_hand_pose', 'right_hand_pose', 'jaw_pose', 'betas',
                 'expression', 'transl')


def _register_hmr_datasets() -> None:
    """Imports the modules of ``posedreamer_mm.datasets`` so their datasets are registered.

    A generation worker imports only body/render/generation (preparer.py); the HMR datasets register on import.
    """
    import posedreamer_mm.datasets as pkg
    for info in pkgutil.iter_modules(pkg.__path__, prefix=f'{pkg.__name__}.'):
        if not info.ispkg:
            importlib.import_module(info.name)


def crop_photo(img: np.ndarray, crop_box: Sequence[float], size: int) -> np.ndarray:
    """The ``size`` x ``size`` crop of ``img`` under the crop camera's map ``u -> (u - x) * size / w``.

    Outside the photo is black (as ``body.camera.crop_image``). Enlarging is bilinear. Shrinking by ``k = w //
    size >= 2`` first maps onto a ``k``-times finer grid (offset by ``(k - 1) / 2`` so that the mean of each
    ``k x k`` block sits at the output pixel's centre) and then averages the blocks (``INTER_AREA`` at an integer
    factor), so a large photo is not aliased and the map stays exact.

    Args:
        img: ``(H, W, 3)`` uint8 photo.
        crop_box: ``(x, y, w, h)`` of the square in photo pixels (``BodyCropCamera``'s ``crop_box``).
        size: Output side in pixels.

    Returns:
        ``(size, size, 3)`` uint8.
    """
    x, y, w, h = (float(v) for v in np.asarray(crop_box, np.float64).reshape(4))
    if not (w > 0 and h > 0 and np.isfinite([x, y, w, h]).all()):
        raise ValueError(f'crop_box {[x, y, w, h]} is not a finite box of positive size')
    sx, sy = size / w, size / h
    k = max(1, int(min(w, h) // size))
    mat = np.array([[sx * k, 0.0, -x * sx * k + (k - 1) / 2], [0.0, sy * k, -y * sy * k + (k - 1) / 2]])
    out = cv2.warpAffine(img, mat, (size * k, size * k), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=0)
    if k > 1:
        out = cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)
    return out


@POSE_SOURCES.register_module()
class HMRPhotoSource(BodySource):
    """The people of an HMR dataset (a ``DATASETS`` config) as pose records that know their photo.

    Each item of the dataset becomes a :class:`BodySample` with the dataset's SMPL-X fit and full-image camera
    (``focal``, ``princpt``, ``img_size``) and, in ``meta``: ``img_path`` (the photo), ``person_bbox`` (xyxy,
    the dataset's box of this person), ``other_boxes`` (xyxy boxes of the other items of the same photo: the
    people the source knows about), ``keypoints_annotated`` (the dataset's ``(17, 3)`` COCO-17 keypoints in photo
    pixels), ``has_smplx`` (which parts are labels) and ``dataset``. Built, the source reads only every item's
    photo path, to group people by photo (the HMR datasets list them: ``image_paths()``; BEDLAM and generated data
    from their tables without building a label); a person's label and the other people's boxes are built when the
    sample is asked for. A lazy dataset's row whose label it refuses (BEDLAM: no usable box) therefore fails that
    sample (a ``ValueError`` naming the item and the row, counted by the generator as ``source:ValueError``) and is
    left out of its neighbours' ``other_boxes``; where the paths need built items, a refused item is skipped and
    counted (:attr:`skipped`) at start.

    Args:
        dataset: ``DATASETS`` config of an HMR dataset (``BEDLAMHMRDataset``, ``NeuralAnnotHMRDataset`` (give
            ``smplx_model_path`` so hands are converted), ``PoseDreamerHMRDataset``, ``GeneratedHMRDataset``);
            ``pipeline=[]`` and ``test_mode=False`` are filled in.
    """
    name = 'photo'

    def __init__(self, dataset: dict) -> None:
        super().__init__()
        _register_hmr_datasets()
        cfg = dict(dataset)
        cfg.setdefault('pipeline', [])
        cfg.setdefault('test_mode', False)
        self.dataset = DATASETS.build(cfg)
        self.dataset_name = str(getattr(self.dataset, 'dataset_name', type(self.dataset).__name__))
        for file, reason in getattr(self.dataset, 'skipped', []):
            self.skipped.append((file, reason))
        self._items: list[int] = []
        self._paths: list[str] = []
        for i, path in enumerate(self._photo_paths()):
            if path is None:  # a label the dataset refuses when building it (only where paths need built items)
                self.skip(f'{self.dataset_name} item {i}', 'the dataset refuses its label')
                continue
            self._items.append(i)
            self._paths.append(osp.normpath(path))
        self._by_photo: dict[str, list[int]] = collections.defaultdict(list)
        for k, path in enumerate(self._paths):
            self._by_photo[path].append(k)
        self._finish(f'dataset {self.dataset_name} ({type(self.dataset).__name__})',
                     'an HMR dataset with at least one usable item')

    def _photo_paths(self) -> list[str | None]:
        """Every item's photo: the dataset's ``image_paths()`` where it lists them (the HMR datasets; BEDLAM and
        generated data without building a label), else each item's ``data_info`` (``None``: a refused label)."""
        listed = getattr(self.dataset, 'image_paths', None)
        if callable(listed):
            return list(listed())
        out = []
        for i in range(len(self.dataset)):
            try:
                out.append(self.dataset.get_data_info(i)['img_path'])
            except ValueError:
                out.append(None)
        return out

    def __len__(self) -> int:
        return len(self._items)

    def _box(self, k: int) -> list[float] | None:
        """Person ``k``'s box (xyxy), or None when the dataset refuses that person's label."""
        try:
            info = self.dataset.get_data_info(self._items[k])
        except ValueError:
            return None
        return np.asarray(info['bbox'], np.float64).reshape(4).tolist()

    def _get(self, index: int) -> BodySample:
        try:
            info = self.dataset.get_data_info(self._items[index])
        except ValueError as err:  # a lazy dataset's bad row: this sample fails, named; the run goes on
            raise ValueError(f'{self.dataset_name} item {self._items[index]}: {err}') from err
        path = self._paths[index]
        others = [box for k in self._by_photo[path] if k != index for box in [self._box(k)] if box is not None]
        h, w = (int(v) for v in np.asarray(info['img_shape_full']).reshape(2))
        meta = dict(img_path=path, person_bbox=np.asarray(info['bbox'], np.float64).reshape(4).tolist(),
                    other_boxes=others, keypoints_annotated=np.asarray(info['keypoints_coco17'], np.float32).tolist(),
                    has_smplx=dict(info['has_smplx']), dataset=self.dataset_name)
        return BodySample(id=str(info['id']), **{k: np.asarray(info['smplx'][k], np.float32) for k in _SMPLX_FIELDS},
                          focal=info['focal'], princpt=info['princpt'], img_size=(w, h),
                          gender=str(info.get('gender', 'neutral')), source=self.name, meta=meta)


def _box_area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))


def _intersection(a: np.ndarray, b: np.ndarray) -> float:
    """Area of the intersection of two xyxy boxes."""
    lo, hi = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    return float(np.prod(np.clip(hi - lo, 0, None)))


@TRANSFORMS.register_module()
class PhotoPairCheck(BaseTransform):
    """Drops pairs whose photo crop would not show the label's person well (reasons counted by the generator).

    Runs after :class:`~posedreamer_mm.generation.transforms.BodyCropCamera` (its ``crop_box`` is in photo pixels;
    ``meta['source_camera']`` is the photo's camera). Reasons, checked in this order:

    - ``photo_missing``: the record names no photo (``meta['img_path']``; :class:`HMRPhotoSource` sets it);
    - ``unlabelled_parts``: a part in ``required_parts`` is not a label (``meta['has_smplx']``);
    - ``too_small``: the crop square is narrower than ``min_crop_px`` photo pixels (the photo would be enlarged
      more than ``size / min_crop_px`` times);
    - ``truncated``: more than ``max_truncation`` of the body's projected vertices fall outside the photo;
    - ``padded``: more than ``max_padding`` of the crop square lies outside the photo (black in the image, while
      the control shows the body there);
    - ``crowded``: another annotated person of the same photo (``meta['other_boxes']``) has more than
      ``max_other_overlap`` of their box inside the crop square (their body would be in the image unlabelled).

    Required Keys:
        - sample: with the crop camera, ``meta['crop_box']`` and ``meta['source_camera']``
        - vertices: camera frame, metres

    Added Keys:
        - drop_reason: one of the reasons above when dropped

    Args:
        min_crop_px: Smallest crop side in photo pixels.
        max_truncation: Largest fraction of projected vertices outside the photo.
        max_padding: Largest fraction of the crop square's area outside the photo.
        max_other_overlap: Largest fraction of another person's box area inside the crop square.
        required_parts: ``has_smplx`` keys that must be labels (``datasets/hmr_base.py``, HAS_SMPLX_KEYS).
    """

    def __init__(self, min_crop_px: float = 128.0, max_truncation: float = 0.05, max_padding: float = 0.1,
                 max_other_overlap: float = 0.1,
                 required_parts: Sequence[str] = ('global_orient', 'body_pose', 'betas', 'transl')) -> None:
        for name, value in (('max_truncation', max_truncation), ('max_padding', max_padding),
                            ('max_other_overlap', max_other_overlap)):
            if not 0 <= float(value) <= 1:
                raise ValueError(f'PhotoPairCheck: {name} must be a fraction in [0, 1], got {value}')
        if float(min_crop_px) < 0:
            raise ValueError(f'PhotoPairCheck: min_crop_px must be >= 0, got {min_crop_px}')
        self.min_crop_px, self.max_truncation = float(min_crop_px), float(max_truncation)
        self.max_padding, self.max_other_overlap = float(max_padding), float(max_other_overlap)
        self.required_parts = tuple(required_parts)

    def transform(self, results: dict) -> dict | None:
        sample: BodySample = results['sample']
        meta = sample.meta
        if not meta.get('img_path'):
            return drop(results, 'photo_missing')
        has = meta.get('has_smplx', {})
        if any(not has.get(part, True) for part in self.required_parts):
            return drop(results, 'unlabelled_parts')
        x, y, side, _ = (float(v) for v in meta['crop_box'])
        if side < self.min_crop_px:
            return drop(results, 'too_small')
        cam = meta['source_camera']
        (fx, fy), (cx, cy), (w, h) = cam['focal'], cam['princpt'], cam['img_size']
        v = np.asarray(results['vertices'], np.float64)
        z = np.maximum(v[:, 2], 1e-9)
        u, t = v[:, 0] / z * fx + cx, v[:, 1] / z * fy + cy
        outside = (u < -0.5) | (u >= w - 0.5) | (t < -0.5) | (t >= h - 0.5)
        if outside.mean() > self.max_truncation:
            return drop(results, 'truncated')
        crop = np.array([x, y, x + side, y + side])
        photo = np.array([-0.5, -0.5, w - 0.5, h - 0.5])
        if 1.0 - _intersection(crop, photo) / (side * side) > self.max_padding:
            return drop(results, 'padded')
        for other in meta.get('other_boxes', []):
            other = np.asarray(other, np.float64)
            area = _box_area(other)
            if area > 0 and _intersection(crop, other) / area > self.max_other_overlap:
                return drop(results, 'crowded')
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(min_crop_px={self.min_crop_px}, max_truncation={self.max_truncation}, '
                f'max_padding={self.max_padding}, max_other_overlap={self.max_other_overlap}, '
                f'required_parts={self.required_parts})')


@TRANSFORMS.register_module()
class LoadPhotoCrop(BaseTransform):
    """Reads the record's photo and crops it with the crop camera (:func:`crop_photo`).

    Runs in the generation workers, so reading and resizing large photos is spread over them; an unreadable photo
    drops its sample (``photo_unreadable``, counted) instead of stopping the run.

    Required Keys:
        - sample: with the crop camera (``img_size``), ``meta['crop_box']`` and ``meta['img_path']``

    Added Keys:
        - photo: ``(H, W, 3)`` uint8 RGB, the photo crop at the crop camera (what :class:`PhotoCropBackend`
          returns)
        - drop_reason: ``'photo_unreadable'`` (missing or corrupt file) or ``'photo_size_mismatch'`` (the file is not
          the size the label's camera says) when dropped

    Args:
        check_size: Drop a photo whose (W, H) differs from the record's full-image ``meta['source_camera']``
            size (a label of another image, or a resized copy).
    """

    def __init__(self, check_size: bool = True) -> None:
        self.check_size = bool(check_size)

    def transform(self, results: dict) -> dict | None:
        sample: BodySample = results['sample']
        path = sample.meta.get('img_path')
        img = cv2.imread(path, cv2.IMREAD_COLOR) if path else None
        if img is None:
            return drop(results, 'photo_unreadable')
        if self.check_size:
            want = tuple(int(v) for v in sample.meta['source_camera']['img_size'])
            if (img.shape[1], img.shape[0]) != want:
                return drop(results, 'photo_size_mismatch')
        w, h = (int(v) for v in np.asarray(sample.img_size).reshape(2))
        if w != h:
            raise ValueError(f'LoadPhotoCrop: the crop camera of {sample.id!r} is {w}x{h}; BodyCropCamera makes '
                             'square crops')
        results['photo'] = crop_photo(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), sample.meta['crop_box'], w)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(check_size={self.check_size})'


__all__ = ['HMRPhotoSource', 'PhotoPairCheck', 'LoadPhotoCrop', 'crop_photo']
