"""COCO / MPII / UBody with NeuralAnnot SMPL-X pseudo ground truth (Moon et al., "NeuralAnnot", CVPRW 2022;
used by Hand4Whole and SMPLer-X).

Two files per split: a COCO-format keypoint json (``images``, ``annotations`` with ``keypoints`` and ``bbox``)
and the NeuralAnnot json beside it, ``{ann_id: {smplx_param: {root_pose, body_pose, lhand_pose, rhand_pose,
jaw_pose, shape, expr, trans}, cam_param: {focal, princpt}}}``: camera-frame, axis-angle, neutral SMPL-X with
10 betas and 10 expression coefficients, ``cam_param`` the full image's intrinsics.

Hands: Hand4Whole/SMPLer-X build SMPL-X with ``smplx.create``'s default ``flat_hand_mean=False``, so NeuralAnnot
hand poses are relative to the mean curl. This project's records are relative to the flat hand
(docs/conventions.md), so the mean (``hands_mean`` of the SMPL-X file) is added on load; without the model file the
hands are marked unlabelled (``has_smplx['hands'] = False``) rather than misread.
"""
from __future__ import annotations

import fnmatch
import json
import logging
import os.path as osp
from collections.abc import Mapping, Sequence

import numpy as np
from mmengine.logging import print_log

from posedreamer_mm.body.body_model import check_model_file, resolve_model_file
from posedreamer_mm.registry import DATASETS

from .hmr_base import HMRBaseDataset, make_data_info

#: MPII's 16 joints -> COCO-17 index (MPII: 0 r_ankle 1 r_knee 2 r_hip 3 l_hip 4 l_knee 5 l_ankle 6 pelvis
#: 7 thorax 8 upper_neck 9 head_top 10 r_wrist 11 r_elbow 12 r_shoulder 13 l_shoulder 14 l_elbow 15 l_wrist).
MPII16_TO_COCO17 = {13: 5, 12: 6, 14: 7, 11: 8, 15: 9, 10: 10, 3: 11, 2: 12, 4: 13, 1: 14, 5: 15, 0: 16}
KEYPOINT_FORMATS = ('coco17', 'mpii16')
_PARAM_KEYS = dict(global_orient='root_pose', body_pose='body_pose', left_hand_pose='lhand_pose',
                   right_hand_pose='rhand_pose', jaw_pose='jaw_pose', betas='shape', expression='expr',
                   transl='trans')


def coco17_from_annotation(keypoints: Sequence[float], fmt: str) -> np.ndarray:
    """``(17, 3)`` COCO-17 keypoints from a COCO-format ``keypoints`` list (COCO/COCO-WholeBody: the first 17;
    MPII: mapped by :data:`MPII16_TO_COCO17`, face points unlabelled)."""
    values = np.asarray(keypoints, np.float32).reshape(-1, 3)
    if fmt == 'coco17':
        if len(values) < 17:
            raise ValueError(f'expected >= 17 keypoints, got {len(values)}')
        return values[:17].copy()
    if fmt == 'mpii16':
        if len(values) != 16:
            raise ValueError(f'expected 16 MPII keypoints, got {len(values)}')
        out = np.zeros((17, 3), np.float32)
        for src, dst in MPII16_TO_COCO17.items():
            out[dst] = values[src]
        return out
    raise ValueError(f'keypoint_format must be one of {KEYPOINT_FORMATS}, got {fmt!r}')


def _load_json(path: str, what: str):
    if not osp.isfile(path):
        raise FileNotFoundError(f'{what} {path!r} not found')
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f'{what} {path!r} is not valid JSON: {err}') from err


def _matches(value, patterns) -> bool:
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    return value is not None and any(fnmatch.fnmatch(str(value).lower(), str(p).lower()) for p in patterns)


@DATASETS.register_module()
class NeuralAnnotHMRDataset(HMRBaseDataset):
    """People of a COCO-format keypoint json with NeuralAnnot SMPL-X fits (COCO, MPII, UBody, ...).

    Each non-crowd annotation with a fit becomes one item; an annotation without a fit (or with a malformed one)
    is a missing label (raise in test mode, skip and count in training). Box: the annotation's ``bbox`` (xywh).
    ``has_smplx``: all parts, except hands without the SMPL-X file (see the module docstring) or where the
    annotation says ``lefthand_valid``/``righthand_valid`` (hands) or ``face_valid`` (face) is false (UBody).

    Attribute subsets (domain evaluation, e.g. MPII's yoga activity): ``attributes={'act_name': 'yoga*'}`` keeps
    annotations whose value matches one of the glob patterns (case-insensitive), looked up in the annotation,
    then its image record, then ``attribute_file`` (``{image file_name: {key: value}}``, e.g. MPII's ``act``
    table exported to json).

    Args:
        ann_file: COCO-format keypoint json, or a list of them (e.g. UBody's one per scene).
        smplx_file: NeuralAnnot json, or a list pairing ``ann_file``'s (ids then get the file's position:
            ``<dataset>_<k>_<ann_id>``, since annotation ids are unique per file only).
        img_root: Image directory (``file_name`` is relative to it).
        keypoint_format: ``'coco17'`` (COCO, COCO-WholeBody/UBody: the first 17) or ``'mpii16'``.
        smplx_model_path: SMPL-X model directory or ``SMPLX_NEUTRAL.npz`` (the body-model path variable of a
            config) whose ``hands_meanl``/``hands_meanr`` convert the hands; None marks hands unlabelled.
        hand_pose_mean: ``'mean'`` (NeuralAnnot's convention) or ``'flat'`` (fits already relative to the flat
            hand; no body model needed).
        attributes: ``{key: pattern or [patterns]}`` subset filter (``file_name`` globs select scenes/videos).
        attribute_file: Optional json of per-image attributes.
        min_keypoints: People with fewer labelled COCO-17 keypoints are left out and counted in
            ``num_filtered`` (SMPLer-X drops ``num_keypoints == 0``), as are UBody's ``valid_label == 0``
            annotations (not counted).
        **kwargs: :class:`~posedreamer_mm.datasets.hmr_base.HMRBaseDataset` arguments; ``data_root`` is the base
            of relative ``ann_file``, ``smplx_file`` and ``img_root``.
    """
    default_name = 'neuralannot'

    def __init__(self, ann_file: str | Sequence[str] = '', smplx_file: str | Sequence[str] = '', img_root: str = '',
                 keypoint_format: str = 'coco17',
                 smplx_model_path: str | None = None, hand_pose_mean: str = 'mean',
                 attributes: Mapping[str, str | Sequence[str]] | None = None, attribute_file: str | None = None,
                 min_keypoints: int = 1, **kwargs):
        if keypoint_format not in KEYPOINT_FORMATS:
            raise ValueError(f'keypoint_format must be one of {KEYPOINT_FORMATS}, got {keypoint_format!r}')
        if hand_pose_mean not in ('mean', 'flat'):
            raise ValueError(f"hand_pose_mean must be 'mean' or 'flat', got {hand_pose_mean!r}")
        self.ann_files = [ann_file] if isinstance(ann_file, str) else list(ann_file)
        self.smplx_files = [smplx_file] if isinstance(smplx_file, str) else list(smplx_file)
        if len(self.ann_files) != len(self.smplx_files):
            raise ValueError(f'{len(self.ann_files)} ann_file(s) but {len(self.smplx_files)} smplx_file(s): give one '
                             'NeuralAnnot json per keypoint json')
        self.img_root, self.keypoint_format = img_root, keypoint_format
        self.smplx_model_path, self.hand_pose_mean = smplx_model_path, hand_pose_mean
        self.attributes, self.attribute_file = dict(attributes or {}), attribute_file
        self.min_keypoints = int(min_keypoints)
        self.num_filtered = 0
        super().__init__(**kwargs)

    def _hand_means(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(left, right)`` ``(45,)`` means to add to NeuralAnnot's hand poses, or None (hands unlabelled)."""
        if self.hand_pose_mean == 'flat':
            return np.zeros(45, np.float32), np.zeros(45, np.float32)
        if self.smplx_model_path is None:
            print_log(f'{type(self).__name__} ({self.dataset_name}): no smplx_model_path given, so the NeuralAnnot '
                      'hand poses (relative to the mean hand) cannot be converted; hands are marked unlabelled',
                      logger='current', level=logging.INFO)
            return None
        path = resolve_model_file(self.smplx_model_path, 'neutral', 'npz')
        check_model_file(path, model_path=self.smplx_model_path)
        with np.load(path, allow_pickle=False) as npz:
            return (np.asarray(npz['hands_meanl'], np.float32).reshape(45),
                    np.asarray(npz['hands_meanr'], np.float32).reshape(45))

    def load_data_list(self) -> list[dict]:
        attr_table = _load_json(self.attribute_file, 'attribute json') if self.attribute_file else {}
        means = self._hand_means()
        data_list, skipped = [], []
        root = self.data_root or ''  # BaseDataset's data_root: the base of relative file names
        self.img_root = osp.join(root, self.img_root)
        for k, (ann_file, smplx_file) in enumerate(zip(self.ann_files, self.smplx_files)):
            ann_file, smplx_file = osp.join(root, ann_file), osp.join(root, smplx_file)
            tag = f'{k}_' if len(self.ann_files) > 1 else ''  # ann ids are unique per file only
            data_list += self._load_pair(ann_file, smplx_file, tag, attr_table, means, skipped)
        self.skip_labels(skipped, 'a NeuralAnnot fit {smplx_param, cam_param} per annotation id')
        return data_list

    def _load_pair(self, ann_file: str, smplx_file: str, tag: str, attr_table: dict, means, skipped: list) -> list:
        coco = _load_json(ann_file, 'COCO-format keypoint json')
        fits = _load_json(smplx_file, 'NeuralAnnot SMPL-X json')
        if not isinstance(coco, dict) or 'annotations' not in coco or 'images' not in coco:
            raise ValueError(f'{ann_file!r} is not a COCO-format json (needs "images" and "annotations")')
        if not isinstance(fits, dict):
            raise ValueError(f'{smplx_file!r} is not a NeuralAnnot json ({{ann_id: {{smplx_param, cam_param}}}})')
        images = {img['id']: img for img in coco['images']}
        out = []
        for ann in coco['annotations']:
            if ann.get('iscrowd', 0):
                continue
            img = images.get(ann['image_id'])
            where = f'{ann_file} annotation {ann.get("id")}'
            if img is None:
                skipped.append((where, f'image_id {ann["image_id"]} not in "images"'))
                continue
            if not self._keep(ann, img, attr_table) or ann.get('valid_label', 1) == 0:
                continue  # a subset filter, or UBody's own "not a usable person" flag (as SMPLer-X)
            try:
                kpts = coco17_from_annotation(ann['keypoints'], self.keypoint_format)
            except (KeyError, ValueError, TypeError) as err:
                skipped.append((where, f'malformed keypoints: {err!r}'))
                continue
            if (kpts[:, 2] > 0).sum() < self.min_keypoints:
                self.num_filtered += 1  # too few labelled keypoints: left out, as SMPLer-X does
                continue
            fit = fits.get(str(ann['id']))
            if fit is None:
                skipped.append((where, f'no NeuralAnnot fit for ann id {ann["id"]} in {smplx_file}'))
                continue
            try:
                out.append(self._parse(ann, img, fit, means, kpts, f'{self.dataset_name}_{tag}{ann["id"]}'))
            except (KeyError, ValueError, TypeError) as err:
                skipped.append((where, f'malformed label: {err!r}'))
        return out

    def _keep(self, ann: dict, img: dict, attr_table: dict) -> bool:
        for key, patterns in self.attributes.items():
            value = ann.get(key, img.get(key, attr_table.get(img.get('file_name'), {}).get(key)))
            if not _matches(value, patterns):
                return False
        return True

    def _parse(self, ann: dict, img: dict, fit: dict, means, kpts: np.ndarray, sample_id: str) -> dict:
        param, cam = fit['smplx_param'], fit['cam_param']
        smplx = {ours: np.asarray(param[theirs], np.float32).reshape(-1) for ours, theirs in _PARAM_KEYS.items()}
        for key in ('global_orient', 'body_pose', 'transl'):
            if not np.isfinite(smplx[key]).all():
                raise ValueError(f'{key} is not finite')
        flags = {**param, **ann}  # UBody puts the validity flags in the annotation or in smplx_param
        hands = means is not None and all(bool(flags.get(k, True)) for k in ('lefthand_valid', 'righthand_valid',
                                                                             'lhand_valid', 'rhand_valid'))
        if means is not None:
            smplx['left_hand_pose'] = smplx['left_hand_pose'] + means[0]
            smplx['right_hand_pose'] = smplx['right_hand_pose'] + means[1]
        x, y, w, h = (float(v) for v in ann['bbox'])
        return make_data_info(
            img_path=osp.join(self.img_root, img['file_name']), sample_id=sample_id,
            dataset_name=self.dataset_name, focal=np.asarray(cam['focal'], np.float32).reshape(-1)[[0, -1]],
            princpt=cam['princpt'], img_wh=(img['width'], img['height']), smplx=smplx,
            has_smplx=dict(global_orient=True, body_pose=True, hands=hands, face=bool(flags.get('face_valid', True)),
                           betas=True, transl=True),
            bbox_xyxy=(x, y, x + w, y + h), keypoints_coco17=kpts)
