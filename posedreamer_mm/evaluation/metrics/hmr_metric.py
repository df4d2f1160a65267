"""SMPL-X mesh-recovery metric (PVE, PA-PVE, MPJPE, PA-MPJPE, hand and face variants; mm), per dataset.

A thin :class:`mmengine.evaluator.BaseMetric` around :mod:`posedreamer_mm.evaluation.functional.mesh` (the protocol
is written there). Ground-truth meshes are made from the packed ground-truth SMPL-X parameters by a body model the
metric builds from its nested config; predictions are the model's ``pred_instances['vertices']``
(docs/conventions.md, "HMR data").
"""
from __future__ import annotations

import logging
import pickle
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from posedreamer_mm.evaluation.functional.mesh import part_vertex_ids, smplx_errors_mm
from posedreamer_mm.registry import BODY_MODELS, METRICS

_PARAMS = ('global_orient', 'body_pose', 'left_hand_pose', 'right_hand_pose', 'jaw_pose', 'betas', 'expression',
           'transl')
#: Ground-truth flags a sample needs for a mesh (pseudo-GT without them is skipped and counted).
_NEEDED = ('has_smplx_global_orient', 'has_smplx_body_pose', 'has_smplx_betas')


def _np(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _flag(gt: dict, key: str) -> bool:
    return key in gt and float(_np(gt[key]).reshape(-1)[0]) > 0


@METRICS.register_module()
class SMPLXMeshMetric(BaseMetric):
    """SMPLer-X-protocol mesh errors in millimetres, reported per ``dataset_name``.

    Keys: ``<dataset>/pve_mm``, ``pa_pve_mm``, ``mpjpe_mm``, ``pa_mpjpe_mm`` (body joints), ``mpjpe_hand_mm``,
    ``pa_mpjpe_hand_mm``, ``pve_hand_mm``, ``pa_pve_hand_mm`` (samples with hand labels), ``pve_face_mm``,
    ``pa_pve_face_mm`` (samples with face labels), ``num_samples``; with several datasets also ``all/...`` over
    every sample. Samples whose ground truth lacks global orientation, body pose or betas are skipped and counted
    (``<dataset>/num_skipped``).

    Args:
        body_model: Body-model config (``dict(type='SMPLXBodyModel', model_path=...)``); built once per gender
            the samples name (``metainfo['gender']``) with ``gender`` set.
        hand_vertex_ids: SMPLer-X's ``MANO_SMPLX_vertex_ids.pkl`` (``{'left_hand': ids, 'right_hand': ids}``) for
            the exact protocol; None derives the hands from the skinning weights (``part_vertex_ids``).
        face_vertex_ids: SMPLer-X's ``SMPL-X__FLAME_vertex_ids.npy``; None: from the skinning weights.
        body_joint_regressor: ``(J, V)`` ``.npy`` body-joint regressor (SMPLer-X's J14); None: the 22 SMPL-X body
            joints.
        collect_device: mmengine's.
        prefix: mmengine's (put before every key).
    """
    default_prefix = 'hmr'

    def __init__(self, body_model: dict, hand_vertex_ids: str | None = None, face_vertex_ids: str | None = None,
                 body_joint_regressor: str | None = None, collect_device: str = 'cpu', prefix: str | None = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.body_model_cfg = dict(body_model)
        self._models: dict = {}
        model = self._model('neutral')
        weights = model.smplx.lbs_weights.detach().cpu().numpy()
        self.j_regressor = model.smplx.J_regressor.detach().cpu().numpy().astype(np.float64)
        (hands, face) = part_vertex_ids(weights)
        if hand_vertex_ids is not None:
            with open(hand_vertex_ids, 'rb') as f:
                ids = pickle.load(f, encoding='latin1')
            hands = (np.asarray(ids['left_hand']), np.asarray(ids['right_hand']))
        if face_vertex_ids is not None:
            face = np.load(face_vertex_ids)
        self.hand_ids, self.face_ids = hands, face
        self.body_regressor = None if body_joint_regressor is None else np.load(body_joint_regressor)
        self.num_verts = model.num_verts

    def _model(self, gender: str):
        if gender not in self._models:
            self._models[gender] = BODY_MODELS.build(dict(self.body_model_cfg, gender=gender)).eval()
        return self._models[gender]

    def _gt_vertices(self, gt: dict, gender: str) -> np.ndarray:
        params = {k: torch.as_tensor(_np(gt[f'smplx_{k}']), dtype=torch.float32).reshape(1, -1) for k in _PARAMS}
        if not _flag(gt, 'has_smplx_hands'):
            params.pop('left_hand_pose'), params.pop('right_hand_pose')
        with torch.no_grad():
            return self._model(gender)(**params).vertices[0].numpy()

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Computes each sample's errors (small dicts are stored, not meshes)."""
        for sample in data_samples:
            gt, pred = sample['gt_instances'], sample['pred_instances']
            name = str(sample.get('dataset_name', 'hmr'))
            if not all(_flag(gt, k) for k in _NEEDED):
                self.results.append(dict(dataset_name=name, skipped=True))
                continue
            pred_verts = _np(pred['vertices']).reshape(-1, 3)
            if pred_verts.shape[0] != self.num_verts:
                raise ValueError(f'sample {sample.get("id")!r}: predicted vertices {pred_verts.shape} but the metric\'s '
                                 f'body model has {self.num_verts} vertices (same body model for both)')
            gt_verts = self._gt_vertices(gt, str(sample.get('gender', 'neutral')))
            errors = smplx_errors_mm(pred_verts[None], gt_verts[None], self.j_regressor, self.hand_ids, self.face_ids,
                                     self.body_regressor)
            has_hands, has_face = _flag(gt, 'has_smplx_hands'), _flag(gt, 'has_smplx_face')
            row = {}
            for key, value in errors.items():
                if ('hand' in key and not has_hands) or ('face' in key and not has_face):
                    continue
                row[key] = float(value[0])
            self.results.append(dict(dataset_name=name, skipped=False, errors=row))

    def compute_metrics(self, results: list) -> dict[str, float]:
        groups: dict[str, list] = defaultdict(list)
        for r in results:
            groups[r['dataset_name']].append(r)
        if len(groups) > 1:
            groups['all'] = list(results)
        metrics: dict[str, float] = {}
        for name, rows in groups.items():
            kept = [r['errors'] for r in rows if not r['skipped']]
            skipped = len(rows) - len(kept)
            if skipped:
                print_log(f'SMPLXMeshMetric: {name}: skipped {skipped} sample(s) without SMPL-X ground truth',
                          logger='current', level=logging.WARNING)
            metrics[f'{name}/num_samples'] = float(len(kept))
            metrics[f'{name}/num_skipped'] = float(skipped)
            keys = sorted({k for e in kept for k in e})
            for key in keys:
                values = [e[key] for e in kept if key in e]
                metrics[f'{name}/{key}_mm'] = float(np.mean(values))
        return metrics
