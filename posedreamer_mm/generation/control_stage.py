"""The control stage: pose source -> SMPL-X forward -> control images + per-sample labels on disk.

DEPRECATED: kept only for ``benchmarks/bench_scorers.py``; the main job is ``DatasetGenerator``.

Every sample's label is a :class:`~posedreamer_mm.body.sample.BodySample` in the frame of the control image
(the renderers' square body crop): ``focal``, ``princpt``, ``img_size`` describe the crop camera, and the
derived ``joints_3d`` (camera frame, metres), ``joints_2d`` (pixels), ``keypoints_coco17`` (17, 3) with
visibility and ``bbox`` are filled in. Output layout::

    <out_dir>/labels/<id>.npz            BodySample.save_npz
    <out_dir>/controls/<type>/<id>.png   one folder per control type
    <out_dir>/manifest.jsonl             one line per written sample: id, files, crop box, source camera
    <out_dir>/summary.json               counts (written / skipped with reasons), timings

A sample that fails (a NaN pose, a body behind the camera, a renderer error) is skipped, counted and named
in ``summary.json``; it never stops the batch or loses the samples already written.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import cv2
import numpy as np
import torch
from mmengine.logging import print_log
from tqdm import tqdm

from posedreamer_mm.body.sample import BodySample
from posedreamer_mm.render.visibility import coco17_keypoints

@dataclasses.dataclass
class ControlStageResult:
    """What a control-stage run wrote and skipped."""
    out_dir: Path
    written: list[str]
    skipped: list[tuple[str, str]]
    seconds: float
    control_types: list[str]

    def summary(self) -> dict:
        return dict(written=len(self.written), skipped=len(self.skipped),
                    skipped_samples=[dict(id=i, reason=r) for i, r in self.skipped], seconds=round(self.seconds, 3),
                    samples_per_s=round(len(self.written) / max(self.seconds, 1e-9), 2),
                    control_types=self.control_types)


def _batches(source: Iterable[BodySample], batch_size: int, limit: int | None):
    batch, n = [], 0
    for sample in source:
        if limit is not None and n >= limit:
            break
        batch.append(sample)
        n += 1
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_sample(sample: BodySample, vertices: np.ndarray, joints: np.ndarray, faces: np.ndarray,
                  renderers: Mapping[str, object], out_dir: Path) -> dict:
    if not np.isfinite(vertices).all():
        raise ValueError('non-finite vertices (check the pose parameters)')
    if (vertices[:, 2] <= 0).any():
        raise ValueError(f'body is not entirely in front of the camera (min z {vertices[:, 2].min():.3f} m)')
    results = {name: r.render(vertices, faces, sample.focal, sample.princpt, sample.img_size, joints=joints)
               for name, r in renderers.items()}
    first = next(iter(results.values()))
    for name, res in results.items():
        # All controls of one sample must share one camera, else the label fits only some of them.
        if not (np.allclose(res['focal'], first['focal']) and np.allclose(res['princpt'], first['princpt'])
                and np.array_equal(res['img_size'], first['img_size'])):
            raise ValueError(f'control {name!r} was rendered at a different camera than the others: give every '
                             'renderer the same size and margin')
    depth = next((res['depth'] for res in results.values() if res.get('depth') is not None), None)
    label = sample.copy()
    source_camera = dict(focal=sample.focal.tolist(), princpt=sample.princpt.tolist(),
                         img_size=np.asarray(sample.img_size).tolist())
    label.focal = np.asarray(first['focal'], np.float32)
    label.princpt = np.asarray(first['princpt'], np.float32)
    label.img_size = np.asarray(first['img_size'], np.int64)
    label.joints_3d = joints.astype(np.float32)
    label.joints_2d = np.asarray(first['joints_2d'], np.float32)
    label.bbox = np.asarray(first['bbox'], np.float32)
    label.keypoints_coco17 = coco17_keypoints(label.joints_2d, label.joints_3d, label.img_size, depth)
    crop_box = None if first.get('crop_box') is None else np.asarray(first['crop_box']).tolist()
    label.meta = {**label.meta, 'source_camera': source_camera, 'crop_box': crop_box}
    (out_dir / 'labels').mkdir(parents=True, exist_ok=True)
    label.save_npz(str(out_dir / 'labels' / f'{sample.id}.npz'))
    files = {}
    for name, res in results.items():
        d = out_dir / 'controls' / name
        d.mkdir(parents=True, exist_ok=True)
        path = d / f'{sample.id}.png'
        if not cv2.imwrite(str(path), cv2.cvtColor(res['image'], cv2.COLOR_RGB2BGR)):
            raise OSError(f'could not write {path}')
        files[name] = str(path.relative_to(out_dir))
    return dict(id=sample.id, label=f'labels/{sample.id}.npz', controls=files, crop_box=crop_box,
                source_camera=source_camera, source=sample.source)


def run_control_stage(source: Iterable[BodySample], body_model, renderers: Mapping[str, object],
                      out_dir: str | Path, batch_size: int = 16, max_samples: int | None = None,
                      progress: bool = True) -> ControlStageResult:
    """Runs bodies through the body model and every renderer, writing labels and control images.

    Args:
        source: an iterable of :class:`BodySample` (a registered pose source, possibly augmented).
        body_model: a :class:`~posedreamer_mm.body.body_model.SMPLXBodyModel` (or anything with the same
            ``forward(**params) -> .vertices, .joints`` and ``faces``).
        renderers: control type -> renderer (``BaseControlRenderer``); all share one crop size and margin.
        out_dir: output directory (created).
        batch_size: bodies per body-model forward.
        max_samples: stop after this many samples from the source.
        progress: show a progress bar.

    Returns:
        The written ids, the skipped ``(id, reason)`` pairs and the time taken; also in ``summary.json``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    faces = np.asarray(body_model.faces, np.int64)
    total = max_samples if max_samples is not None else (len(source) if hasattr(source, '__len__') else None)
    written, skipped = [], []
    start = time.perf_counter()
    bar = tqdm(total=total, desc='bodies -> controls', unit='sample', disable=not progress)
    with open(out_dir / 'manifest.jsonl', 'w') as manifest:
        for batch in _batches(source, batch_size, max_samples):
            batch_error = None
            try:
                with torch.no_grad():
                    out = body_model(**BodySample.stack(batch))
                verts_b = out.vertices.cpu().numpy()
                joints_b = out.joints.cpu().numpy()
            except Exception as e:  # one bad record must not take its batch down: retry one by one
                verts_b = joints_b = None
                batch_error = e
            for i, sample in enumerate(batch):
                try:
                    if verts_b is None:
                        with torch.no_grad():
                            o = body_model(**BodySample.stack([sample]))
                        verts, joints = o.vertices[0].cpu().numpy(), o.joints[0].cpu().numpy()
                    else:
                        verts, joints = verts_b[i], joints_b[i]
                    record = _write_sample(sample, verts, joints, faces, renderers, out_dir)
                    manifest.write(json.dumps(record) + '\n')
                    written.append(sample.id)
                except Exception as e:
                    reason = f'{type(e).__name__}: {e}'
                    if batch_error is not None:
                        reason += f' (batch forward failed: {batch_error})'
                    skipped.append((sample.id, reason))
                    print_log(f'skipped sample {sample.id}: {reason}', logger='current', level=logging.WARNING)
                bar.update(1)
    bar.close()
    result = ControlStageResult(out_dir, written, skipped, time.perf_counter() - start, list(renderers))
    source_skips = [dict(file=f, reason=r) for f, r in getattr(source, 'skipped', [])]
    summary = {**result.summary(), 'source_files_skipped': source_skips}
    (out_dir / 'summary.json').write_text(json.dumps(summary, indent=2))
    print_log(f'control stage: wrote {len(written)} samples, skipped {len(skipped)} samples and '
              f'{len(source_skips)} source files, in {result.seconds:.1f} s -> {out_dir}', logger='current')
    return result
