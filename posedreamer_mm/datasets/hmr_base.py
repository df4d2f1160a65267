"""Shared base of the HMR datasets: the one ``data_info`` convention (docs/conventions.md, "HMR data") and the
bad-label / bad-image policy.

Every HMR dataset turns its labels into :func:`make_data_info` dicts (one person per item, top-down). Policy for
bad data (docs/hmr_data.md):

- **labels**: a missing or unreadable label (file, row, annotation) raises a ``ValueError`` naming it in
  ``test_mode`` (an evaluation set must be complete), and is skipped and counted (WARNING) in training;
  :attr:`HMRBaseDataset.skipped` lists ``(file, reason)``.
- **images**: checked when loaded, by :class:`~posedreamer_mm.datasets.transforms.hmr_loading.LoadHMRImage`,
  which reads ``results['test_mode']`` (set by :meth:`HMRBaseDataset.prepare_data`): raise in test mode, drop and
  count in training (mmengine then draws another index).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from mmengine.dataset import BaseDataset
from mmengine.logging import print_log

from posedreamer_mm.body.flip import coco17_flip_indices
from posedreamer_mm.body.joint_maps import COCO17_NAMES, smplx_to_coco17
from posedreamer_mm.body.sample import BodySample

#: SMPL-X parameter keys of ``data_info['smplx']`` and their sizes (docs/conventions.md).
SMPLX_KEYS: dict[str, int] = dict(global_orient=3, body_pose=63, left_hand_pose=45, right_hand_pose=45, jaw_pose=3,
                                  betas=10, expression=10, transl=3)
#: Label parts a dataset may lack (``data_info['has_smplx']``; ``face`` = jaw pose and expression).
HAS_SMPLX_KEYS = ('global_orient', 'body_pose', 'hands', 'face', 'betas', 'transl')

#: Metainfo every HMR dataset shares (COCO-17 keypoints; mmpose-style names so mmpose wrappers can read them).
#: (``dataset_name`` is set per instance after loading: mmengine reads string metainfo values as file names.)
HMR_METAINFO = dict(keypoint_names=list(COCO17_NAMES), num_keypoints=17, flip_indices=coco17_flip_indices().tolist())


def _fit(value, n: int) -> np.ndarray:
    """float32 ``(n,)``: truncated or zero-padded (betas/expression counts differ between sources)."""
    value = np.asarray(value, np.float32).reshape(-1)[:n]
    return np.pad(value, (0, n - len(value)))


def keypoints_from_points(points_2d: np.ndarray, img_wh: Sequence[int]) -> np.ndarray:
    """``(17, 3)`` COCO-17 keypoints from SMPL-X 2D joints ``(>=127, 2)``: visibility 2 inside the image, else 0."""
    kpts = smplx_to_coco17(np.asarray(points_2d, np.float32)[:, :2])
    w, h = img_wh
    inside = (kpts[:, 0] >= -0.5) & (kpts[:, 0] < w - 0.5) & (kpts[:, 1] >= -0.5) & (kpts[:, 1] < h - 0.5)
    inside &= np.isfinite(kpts).all(1)
    return np.concatenate([np.nan_to_num(kpts), 2.0 * inside[:, None]], 1).astype(np.float32)


def bbox_from_keypoints(kpts: np.ndarray, margin: float = 0.1) -> np.ndarray | None:
    """Tight ``(4,)`` xyxy box around the labelled keypoints ``(K, 3)``, widened by ``margin`` per side, or None."""
    lab = kpts[kpts[:, 2] > 0, :2]
    if len(lab) < 2:
        return None
    lo, hi = lab.min(0), lab.max(0)
    pad = (hi - lo) * margin
    return np.concatenate([lo - pad, hi + pad]).astype(np.float32)


def make_data_info(*, img_path: str, sample_id: str, dataset_name: str, focal, princpt, img_wh: Sequence[int],
                   smplx: dict[str, np.ndarray], has_smplx: dict[str, bool], bbox_xyxy=None,
                   keypoints_coco17=None, joints_3d=None, gender: str = 'neutral') -> dict:
    """One person's ``data_info`` in the shared convention (docs/conventions.md, "HMR data").

    Args:
        img_path: Image file.
        sample_id: Stable id.
        dataset_name: Name used for metric prefixes.
        focal: ``(2,)`` full-image fx, fy, pixels.
        princpt: ``(2,)`` full-image cx, cy, pixels.
        img_wh: (W, H) of the full image.
        smplx: Any of :data:`SMPLX_KEYS` (camera frame, axis-angle, hands relative to the flat hand); missing keys
            are zeros, betas/expression are padded or truncated to 10.
        has_smplx: Which parts are labels (:data:`HAS_SMPLX_KEYS`; missing = False).
        bbox_xyxy: ``(4,)`` person box; default the labelled keypoints' box.
        keypoints_coco17: ``(17, 3)`` pixels + visibility (0 = unlabelled); default all unlabelled.
        joints_3d: Optional ``(J, 3)`` camera-frame joints, metres.
        gender: Body model of the label.

    Raises:
        ValueError: No usable box (none given, fewer than two labelled keypoints, or degenerate), a non-positive
            or non-finite camera, or NaN/inf in a parameter or keypoint (the message names the sample).
    """
    kpts = np.zeros((17, 3), np.float32) if keypoints_coco17 is None else np.asarray(keypoints_coco17, np.float32)
    if bbox_xyxy is None:
        bbox_xyxy = bbox_from_keypoints(kpts)
        if bbox_xyxy is None:
            raise ValueError(f'sample {sample_id!r}: no person box and fewer than two labelled keypoints')
    focal, princpt = np.asarray(focal, np.float32).reshape(2), np.asarray(princpt, np.float32).reshape(2)
    if not (np.isfinite(focal).all() and (focal > 0).all() and np.isfinite(princpt).all()):
        raise ValueError(f'sample {sample_id!r}: bad camera focal={focal.tolist()} princpt={princpt.tolist()}')
    params = {k: _fit(smplx.get(k, np.zeros(n)), n) for k, n in SMPLX_KEYS.items()}
    bad = [k for k, v in params.items() if not np.isfinite(v).all()]
    if bad or not np.isfinite(kpts).all():
        raise ValueError(f'sample {sample_id!r}: NaN or inf in {bad or "keypoints_coco17"}')
    bbox = np.asarray(bbox_xyxy, np.float32).reshape(4)
    if not np.isfinite(bbox).all() or bbox[2] <= bbox[0] or bbox[3] <= bbox[1]:
        raise ValueError(f'sample {sample_id!r}: degenerate person box {bbox.tolist()} (xyxy)')
    info = dict(
        img_path=img_path, id=str(sample_id), dataset_name=dataset_name, bbox=bbox,
        focal=focal, princpt=princpt,
        img_shape_full=np.array([int(img_wh[1]), int(img_wh[0])], np.int64),
        smplx=params,
        has_smplx={k: bool(has_smplx.get(k, False)) for k in HAS_SMPLX_KEYS},
        keypoints_coco17=kpts, gender=str(gender))
    if joints_3d is not None:
        info['joints_3d'] = np.asarray(joints_3d, np.float32)
    return info


def data_info_from_sample(sample: BodySample, img_path: str, dataset_name: str, bbox_xyxy=None,
                          has_smplx: dict[str, bool] | None = None) -> dict:
    """``data_info`` of a full-label :class:`BodySample` whose camera is the image's (BEDLAM, PoseDreamer,
    generated data): keypoints from ``keypoints_coco17``, else from ``joints_2d``; box from ``bbox`` (xywh),
    else ``bbox_xyxy``, else the keypoints."""
    wh = sample.img_size
    if sample.keypoints_coco17 is not None:
        kpts = sample.keypoints_coco17
    elif sample.joints_2d is not None and len(sample.joints_2d) >= 127:
        kpts = keypoints_from_points(sample.joints_2d, wh)
    else:
        kpts = None
    if sample.bbox is not None:
        x, y, w, h = sample.bbox
        bbox_xyxy = (x, y, x + w, y + h)
    smplx = {k: getattr(sample, k) for k in SMPLX_KEYS}
    has = has_smplx or {k: True for k in HAS_SMPLX_KEYS}
    return make_data_info(img_path=img_path, sample_id=sample.id, dataset_name=dataset_name, focal=sample.focal,
                          princpt=sample.princpt, img_wh=wh, smplx=smplx, has_smplx=has, bbox_xyxy=bbox_xyxy,
                          keypoints_coco17=kpts, joints_3d=sample.joints_3d, gender=sample.gender)


class HMRBaseDataset(BaseDataset):
    """Base of the HMR datasets (not registered): label policy and the ``test_mode`` hand-off to the loader.

    Subclasses implement :meth:`load_data_list` returning :func:`make_data_info` dicts and report bad labels
    through :meth:`skip_labels` before returning. Large sources set :attr:`lazy`: their data list holds only
    what locates a label (a row number), :meth:`build_data_info` turns it into a ``data_info`` on access, and a
    row that turns out bad raises in test mode and is dropped and counted (:attr:`num_bad_labels`, mmengine then
    draws another index) in training.

    Args:
        dataset_name: Name in ``data_info``, ``metainfo['dataset_name']`` and metric prefixes; default the
            class's :attr:`default_name`.
        **kwargs: :class:`mmengine.dataset.BaseDataset` arguments (``pipeline``, ``test_mode``, ``indices``, ...).
    """
    METAINFO = HMR_METAINFO
    default_name = 'hmr'
    lazy = False
    #: The data-list key of a :attr:`lazy` entry's integer locator (a row number) that :meth:`ids_of_locators`
    #: turns into sample ids; None: :meth:`sample_ids` builds every item.
    locator_key: str | None = None

    def __init__(self, dataset_name: str | None = None, **kwargs):
        self.dataset_name = dataset_name or self.default_name
        self.skipped: list[tuple[str, str]] = []
        self.num_bad_labels = 0
        super().__init__(**kwargs)
        self._metainfo['dataset_name'] = self.dataset_name

    def skip_labels(self, skipped: Sequence[tuple[str, str]], expected: str) -> None:
        """Applies the label policy to ``(file, reason)`` pairs: raise in test mode, else count and warn."""
        if not skipped:
            return
        self.skipped.extend(skipped)
        shown = '; '.join(f'{f}: {r}' for f, r in list(skipped)[:5])
        more = f' (and {len(skipped) - 5} more)' if len(skipped) > 5 else ''
        if self.test_mode:
            raise ValueError(f'{type(self).__name__} ({self.dataset_name}, test mode): {len(skipped)} bad or missing '
                             f'label(s): {shown}{more}. Expected {expected}')
        print_log(f'{type(self).__name__} ({self.dataset_name}): skipped {len(skipped)} bad or missing label(s): '
                  f'{shown}{more}', logger='current', level=logging.WARNING)

    def build_data_info(self, entry: dict) -> dict:
        """``data_info`` of one data-list entry of a :attr:`lazy` dataset (raise ``ValueError`` for a bad label)."""
        raise NotImplementedError(f'{type(self).__name__} sets lazy=True but does not implement build_data_info')

    # ------------------------------------------------------------------------------------------ sample ids
    def ids_of_locators(self, locators: np.ndarray) -> list[str]:
        """Sample ids of lazy entries given their :attr:`locator_key` values, without building the items."""
        raise NotImplementedError(f'{type(self).__name__} sets locator_key but does not implement ids_of_locators')

    def paths_of_locators(self, locators: np.ndarray) -> list[str]:
        """Image paths (``data_info['img_path']``) of lazy entries given their :attr:`locator_key` values."""
        raise NotImplementedError(f'{type(self).__name__} sets locator_key but does not implement '
                                  'paths_of_locators')

    def _index_keys(self, data_list: list[dict]) -> dict[str, np.ndarray] | None:
        """What :meth:`sample_ids` and :meth:`image_paths` read, one value per entry: ``id`` and ``img_path`` as
        UTF-8 bytes arrays for built ``data_info`` dicts, ``locator`` (int64) for a lazy dataset with
        :attr:`locator_key`; None when neither is known."""
        if not self.lazy:
            return {key: np.array([str(d[key]).encode('utf-8') for d in data_list], dtype=np.bytes_)
                    for key in ('id', 'img_path')}
        if self.locator_key is None:
            return None
        return dict(locator=np.fromiter((d[self.locator_key] for d in data_list), np.int64, len(data_list)))

    def _serialize_data(self):
        # mmengine packs the data list into one byte buffer and drops it; ids and photo paths are kept beside it
        # (arrays, copied into workers without touching Python objects), so listing them unpickles no item.
        self._keys = self._index_keys(self.data_list)
        return super()._serialize_data()

    def _subset_keys(self, indices) -> dict[str, np.ndarray] | None:
        """The kept keys under mmengine's ``get_subset`` rule (an int: the first/last n; a sequence: those)."""
        keys = getattr(self, '_keys', None)
        if keys is None or not self.serialize_data:
            return None
        if isinstance(indices, int):
            return {k: v[:indices] if indices >= 0 else v[indices:] for k, v in keys.items()}
        sel = np.asarray(list(indices), np.int64)
        return {k: v[sel] for k, v in keys.items()}

    def get_subset_(self, indices) -> None:
        self.full_init()
        keys = self._subset_keys(indices)
        super().get_subset_(indices)
        self._keys = keys

    def get_subset(self, indices):
        self.full_init()
        keys = self._subset_keys(indices)
        sub = super().get_subset(indices)
        sub._keys = keys
        return sub

    def _listed(self, key: str) -> list[str | None]:
        """Every index's ``data_info[key]`` (``'id'`` or ``'img_path'``) without building an item where the keys
        allow it, else item by item (``None`` for an item whose label is bad)."""
        self.full_init()
        keys = getattr(self, '_keys', None) if self.serialize_data else self._index_keys(self.data_list)
        if keys is not None and key in keys:
            return [v.decode('utf-8') for v in keys[key].tolist()]
        if keys is not None and 'locator' in keys:
            return (self.ids_of_locators if key == 'id' else self.paths_of_locators)(keys['locator'])
        out = []
        for i in range(len(self)):
            try:
                out.append(str(self.get_data_info(i)[key]))
            except ValueError:
                out.append(None)
        return out

    def sample_ids(self) -> list[str | None]:
        """The ``data_info['id']`` of every index, in order, without building or unpickling the items (what
        ``HardSampleSampler`` matches a difficulty file against; docs/mining.md).

        Eager datasets read the ids kept beside the serialized data list; a lazy dataset with
        :attr:`locator_key` turns its entries' locators into ids (:meth:`ids_of_locators`); any other builds every
        item (``None`` for an item whose label is bad). A lazy row whose label turns out bad on access is listed
        with its id all the same (it is dropped when loaded)."""
        return self._listed('id')

    def image_paths(self) -> list[str | None]:
        """The ``data_info['img_path']`` of every index, in order, the same way as :meth:`sample_ids` (lazy
        datasets: :meth:`paths_of_locators`); ``HMRPhotoSource`` groups people by photo with these."""
        return self._listed('img_path')

    def get_data_info(self, idx: int) -> dict:
        info = super().get_data_info(idx)
        if self.lazy:
            info = dict(self.build_data_info(info), sample_idx=info['sample_idx'])
        return info

    def prepare_data(self, idx: int):
        """``data_info`` plus ``test_mode`` (read by the image loader's error policy) through the pipeline."""
        try:
            info = self.get_data_info(idx)
        except ValueError as err:
            if not self.lazy:
                raise
            if self.test_mode:
                raise ValueError(f'{type(self).__name__} ({self.dataset_name}, test mode): item {idx}: {err}') from err
            self.num_bad_labels += 1
            print_log(f'{type(self).__name__} ({self.dataset_name}): dropped item {idx}: {err} ({self.num_bad_labels} '
                      'bad labels so far in this process)', logger='current', level=logging.WARNING)
            return None
        info['test_mode'] = self.test_mode
        return self.pipeline(info)


__all__ = ['SMPLX_KEYS', 'HAS_SMPLX_KEYS', 'HMR_METAINFO', 'HMRBaseDataset', 'make_data_info',
           'data_info_from_sample', 'keypoints_from_points', 'bbox_from_keypoints']
