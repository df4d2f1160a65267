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

from posedreamer_mm.body.gendered import shared_body_models
from posedreamer_mm.evaluation.functional.mesh import hand_regressors, part_vertex_ids, smplx_errors_mm
from posedreamer_mm.registry import METRICS

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
class HMRMetric(BaseMetric):
    """SMPLer-X-protocol mesh errors in millimetres, reported per ``dataset_name``.

    Keys: ``<dataset>/pve_mm``, ``pa_pve_mm``, ``mpjpe_mm``, ``pa_mpjpe_mm`` (body joints), ``mpjpe_hand_mm``,
    ``pa_mpjpe_hand_mm``, ``pve_hand_mm``, ``pa_pve_hand_mm`` (samples with hand labels), ``pve_face_mm``,
    ``pa_pve_face_mm`` (samples with face labels), ``num_samples``; with several datasets also ``all/...`` over
    every sample. Samples whose ground truth lacks global orientation, body pose or betas are skipped and counted
    (``<dataset>/num_skipped``). Samples whose predicted vertices hold NaN or inf are counted
    (``<dataset>/num_nonfinite``), named in a logged warning and left out of every mean; ``num_samples`` counts
    the samples in the means.

    Args:
        body_model: Body-model config (``dict(type='SMPLXBodyModel', model_path=...)``); each gender the samples
            name (``metainfo['gender']``) is built once per process, shared with the HMR transforms
            (``shared_body_models``); a single-file ``model_path`` refuses samples of another gender by name.
        hand_vertex_ids: SMPLer-X's ``MANO_SMPLX_vertex_ids.pkl`` (``{'left_hand': ids, 'right_hand': ids}``) for
            the exact protocol; None derives the hands from the skinning weights (``part_vertex_ids``).
        face_vertex_ids: SMPLer-X's ``SMPL-X__FLAME_vertex_ids.npy``; None: from the skinning weights.
        body_joint_regressor: ``(J, V)`` ``.npy`` body-joint regressor (SMPLer-X's J14); None: the 22 SMPL-X body
            joints.
        only_in_image: Average only over ground-truth points that project inside the image (SMPLer-X's UBody
            protocol; needs the label translation and the data sample's ``focal``/``princpt``/``img_shape_full``).
            A sample with no such point of a kind (e.g. hands out of frame) is left out of that metric's mean.
        collect_device: mmengine's.
        prefix: mmengine's (put before every key).
    """
    default_prefix = 'hmr'

    def __init__(self, body_model: dict, hand_vertex_ids: str | None = None, face_vertex_ids: str | None = None,
                 body_joint_regressor: str | None = None, only_in_image: bool = True, collect_device: str = 'cpu',
                 prefix: str | None = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.only_in_image = only_in_image
        self.body_model_cfg = dict(body_model)
        model = shared_body_models(self.body_model_cfg).default  # the regressor and part ids are gender-free
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
        self.hand_regressors = hand_regressors(self.j_regressor)  # SMPLer-X's 21 joints per hand
        self.num_verts = model.num_verts

    def _model(self, gender: str):
        """The process's one model of ``gender`` (``posedreamer_mm/body/gendered.py``, shared with the transforms)."""
        return shared_body_models(self.body_model_cfg).model(gender)

    def _gt_vertices(self, gts: list[dict], gender: str) -> np.ndarray:
        """``(B, V, 3)`` ground-truth meshes of one gender's samples, one batched forward (hands zero = flat where
        a sample has no hand labels)."""
        params = {k: torch.as_tensor(np.stack([_np(gt[f'smplx_{k}']).reshape(-1) for gt in gts]),
                                     dtype=torch.float32) for k in _PARAMS}
        no_hands = torch.as_tensor([not _flag(gt, 'has_smplx_hands') for gt in gts])
        for key in ('left_hand_pose', 'right_hand_pose'):
            params[key][no_hands] = 0.0
        with torch.no_grad():
            return self._model(gender)(**params).vertices.numpy()

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Computes each sample's errors, batched per gender (small dicts are stored, not meshes)."""
        groups: dict[tuple[str, bool], list[int]] = defaultdict(list)
        rows: list[dict] = []
        for i, sample in enumerate(data_samples):
            gt, name = sample['gt_instances'], str(sample.get('dataset_name', 'hmr'))
            rows.append(dict(dataset_name=name, skipped=True))
            if not all(_flag(gt, k) for k in _NEEDED):
                continue
            pred = _np(sample['pred_instances']['vertices']).reshape(-1, 3)
            if pred.shape[0] != self.num_verts:
                raise ValueError(f'sample {sample.get("id")!r}: predicted vertices {pred.shape} but the metric\'s body '
                                 f'model has {self.num_verts} vertices (same body model for both)')
            if not np.isfinite(pred).all():
                # A diverging model's NaN must not stop validation (the Procrustes SVD would raise): counted and
                # named, left out of the means.
                rows[-1] = dict(dataset_name=name, skipped=False, nonfinite=True,
                                id=str(sample.get('id', sample.get('sample_idx', f'batch position {i}'))))
                continue
            # With a label translation the ground-truth mesh is in the image's camera frame, so only its points
            # inside the image count (SMPLer-X); without one, every point does.
            in_camera = self.only_in_image and _flag(gt, 'has_smplx_transl') and 'focal' in sample
            groups[(str(sample.get('gender', 'neutral')), in_camera)].append(i)
        for (gender, in_camera), index in groups.items():
            gts = [data_samples[i]['gt_instances'] for i in index]
            pred = np.stack([_np(data_samples[i]['pred_instances']['vertices']).reshape(-1, 3) for i in index])
            camera = None
            if in_camera:
                camera = tuple(np.stack([_np(data_samples[i][k]).reshape(2) for i in index]).astype(np.float64)
                               for k in ('focal', 'princpt', 'img_shape_full'))
                camera = (camera[0], camera[1], camera[2][:, ::-1])  # (H, W) -> (W, H)
            errors = smplx_errors_mm(pred, self._gt_vertices(gts, gender), self.j_regressor, self.hand_ids,
                                     self.face_ids, self.body_regressor, self.hand_regressors, camera)
            for b, (i, gt) in enumerate(zip(index, gts)):
                has_hands, has_face = _flag(gt, 'has_smplx_hands'), _flag(gt, 'has_smplx_face')
                rows[i] = dict(dataset_name=rows[i]['dataset_name'], skipped=False, errors={
                    key: float(value[b]) for key, value in errors.items()
                    if np.isfinite(value[b]) and not (('hand' in key and not has_hands)
                                                      or ('face' in key and not has_face))})
        self.results.extend(rows)

    def compute_metrics(self, results: list) -> dict[str, float]:
        groups: dict[str, list] = defaultdict(list)
        for r in results:
            groups[r['dataset_name']].append(r)
        if len(groups) > 1:
            groups['all'] = list(results)
        metrics: dict[str, float] = {}
        for name, rows in groups.items():
            kept = [r['errors'] for r in rows if not r['skipped'] and not r.get('nonfinite')]
            nonfinite = [r['id'] for r in rows if r.get('nonfinite')]
            skipped = sum(r['skipped'] for r in rows)
            if skipped:
                print_log(f'HMRMetric: {name}: skipped {skipped} sample(s) without SMPL-X ground truth',
                          logger='current', level=logging.WARNING)
            if nonfinite:
                print_log(f'HMRMetric: {name}: {len(nonfinite)} sample(s) with non-finite (NaN/inf) predicted '
                          f'vertices left out of the means: {nonfinite[:10]}{" ..." if len(nonfinite) > 10 else ""}',
                          logger='current', level=logging.WARNING)
            metrics[f'{name}/num_samples'] = float(len(kept))
            metrics[f'{name}/num_skipped'] = float(skipped)
            metrics[f'{name}/num_nonfinite'] = float(len(nonfinite))
            keys = sorted({k for e in kept for k in e})
            for key in keys:
                values = [e[key] for e in kept if key in e]
                metrics[f'{name}/{key}_mm'] = float(np.mean(values))
        return metrics
