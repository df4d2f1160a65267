"""What ``tools/report.py`` calls: one HTML page describing a generated dataset, with its PNGs beside it.

``run_report(data_root)`` reads the dataset (:class:`~posedreamer_mm.generation.reader.GeneratedDataReader`; the
format is docs/dataset_format.md), the outcome of ``tools/filter.py`` when there is one (``<data_root>/filter`` or
``filter_dir``: ``summary.json`` for the counts per stage, ``scores.jsonl`` for each sample's OKS and whether it was
kept; ``posedreamer_mm/apis/filter.py``) and writes to ``out_dir`` (default ``<data_root>/report``):

- ``index.html``: counts (committed, dropped and failed by the generator per reason, kept/rejected per filter
  stage), which parts are stand-ins (the open SMPL-X stand-in body, the rendering-baseline backend), the figures
  below, FID/KID against a reference folder when one is given, and the HMR run's figures when a work dir is given;
- ``filter.png`` (kept/rejected per stage, OKS histogram), ``pose_coverage.png`` (per body joint, the rotation
  angle of the dataset's poses against the pose source's: ranges and coverage), ``shape_camera.png`` (betas,
  focal, distance, yaw), ``contact_sheet.png`` (images with the label's SMPL-X mesh and COCO-17 skeleton drawn
  over them), ``hmr_loss.png`` (training loss of ``hmr_work_dir``);
- ``image_quality.json``: FID-64, FID-2048, KID of the (kept) images against ``reference``, with the protocol
  (``posedreamer_mm/apis/image_quality.py``, docs/image_quality.md), when a reference folder is given;
- ``report.json``: every number the page shows.

Nothing in the dataset is changed. Every file is written atomically.
"""
from __future__ import annotations

import glob
import json
import math
import os
import os.path as osp
import time
from collections import Counter

import numpy as np

from posedreamer_mm.generation.reader import DatasetIntegrityError, GeneratedDataReader, check_label_ids, memmap_npz
from posedreamer_mm.utils.fileio import atomic_write_text

#: Width of the joint-angle bins of the coverage measure, degrees.
COVERAGE_BIN_DEG = 10.0
#: A bin of the pose source counts for coverage when it holds at least this fraction of the source's poses (a few
#: outliers of the source do not make every dataset look incomplete).
COVERAGE_MIN_FRACTION = 0.01


def log(message: str) -> None:
    print(f'[report] {message}', flush=True)


# ---- numbers ---------------------------------------------------------------------------------------------------

def joint_angles_deg(body_pose: np.ndarray) -> np.ndarray:
    """Rotation angle of each body joint relative to its rest pose, degrees.

    Args:
        body_pose: ``(N, 63)`` or ``(N, 21, 3)`` SMPL-X body pose, axis-angle, radians.

    Returns:
        ``(N, 21)`` angles in ``[0, 180]`` (the norm of each joint's axis-angle vector).
    """
    aa = np.asarray(body_pose, np.float64).reshape(len(body_pose), 21, 3)
    return np.degrees(np.linalg.norm(aa, axis=-1))


def angle_coverage(pool: np.ndarray, data: np.ndarray, bin_deg: float = COVERAGE_BIN_DEG,
                   min_fraction: float = COVERAGE_MIN_FRACTION) -> np.ndarray:
    """Per joint, the fraction of the pose source's angle bins that the dataset reaches.

    The bins are ``bin_deg`` wide over ``[0, 180]``; a bin is part of the source when it holds at least
    ``min_fraction`` of the source's poses, and it is covered when at least one dataset pose falls in it.

    Args:
        pool: ``(M, J)`` joint angles of the source's poses, degrees.
        data: ``(N, J)`` joint angles of the dataset's poses, degrees.

    Returns:
        ``(J,)`` coverage in ``[0, 1]`` (``nan`` for a joint whose source has no bin over ``min_fraction``).
    """
    pool, data = np.asarray(pool, np.float64), np.asarray(data, np.float64)
    edges = np.arange(0.0, 180.0 + bin_deg, bin_deg)
    out = np.full(pool.shape[1], np.nan)
    for j in range(pool.shape[1]):
        source_bins = np.histogram(pool[:, j], edges)[0] >= max(1.0, min_fraction * len(pool))
        if source_bins.any():
            out[j] = (np.histogram(data[:, j], edges)[0][source_bins] > 0).mean()
    return out


def camera_numbers(global_orient: np.ndarray, pelvis: np.ndarray) -> dict[str, np.ndarray]:
    """The body's heading and distance as the augmentation draws them (``BodyAugment``'s ``yaw_range`` and
    ``distance_range``).

    Args:
        global_orient: ``(N, 3)`` camera-frame root rotations, axis-angle.
        pelvis: ``(N, 3)`` pelvis joints, camera frame, metres.

    Returns:
        ``yaw_deg`` ``(N,)`` (0 faces the camera, positive turns counter-clockwise seen from above;
        ``body.camera.split_heading``), ``distance_m`` ``(N,)`` (the pelvis depth in front of the camera).
    """
    from posedreamer_mm.body.camera import split_heading
    yaw, _ = split_heading(np.asarray(global_orient, np.float64).reshape(-1, 3))
    return dict(yaw_deg=np.degrees(yaw.numpy()), distance_m=np.asarray(pelvis, np.float64)[:, 2])


def load_label_arrays(reader: GeneratedDataReader) -> dict[str, np.ndarray]:
    """The columns the report plots, over every committed row, read shard by shard from the memory-mapped labels.

    Returns:
        ``body_pose`` (N, 63), ``global_orient`` (N, 3), ``betas`` (N, B), ``pelvis`` (N, 3) metres,
        ``crop_focal`` (N,) pixels of the stored image, ``source_focal`` (N,) pixels of the full source image
        (``nan`` where the label's meta has no ``source_camera``).

    Raises:
        DatasetIntegrityError: a shard's labels do not line up with its metadata (naming both files).
    """
    cols: dict[str, list] = {k: [] for k in ('body_pose', 'global_orient', 'betas', 'pelvis', 'crop_focal',
                                              'source_focal')}
    start = 0
    for name in reader.shards:
        folder = osp.join(reader.root, 'shards', name)
        try:
            labels = memmap_npz(osp.join(folder, 'labels.npz'))
        except ValueError as err:
            raise DatasetIntegrityError(str(err)) from err
        ids = [str(x) for x in np.asarray(labels.get('id', [])).reshape(-1)]
        check_label_ids(reader.ids[start:start + len(ids)], ids, osp.join(folder, 'meta.jsonl'),
                        osp.join(folder, 'labels.npz'))
        start += len(ids)
        if not ids:
            continue
        missing = sorted({'body_pose', 'global_orient', 'betas', 'joints_3d', 'focal'} - set(labels))
        if missing:
            raise DatasetIntegrityError(f'{osp.join(folder, "labels.npz")} lacks {missing} (docs/dataset_format.md)')
        cols['body_pose'].append(np.asarray(labels['body_pose'], np.float64))
        cols['global_orient'].append(np.asarray(labels['global_orient'], np.float64))
        cols['betas'].append(np.asarray(labels['betas'], np.float64))
        cols['pelvis'].append(np.asarray(labels['joints_3d'][:, 0], np.float64))
        cols['crop_focal'].append(np.asarray(labels['focal'][:, 0], np.float64))
        src = []
        for text in labels.get('meta_json', [''] * len(ids)):
            try:
                src.append(float(json.loads(str(text))['source_camera']['focal'][0]))
            except (ValueError, KeyError, TypeError, IndexError):
                src.append(np.nan)
        cols['source_focal'].append(np.array(src))
    if start != len(reader):
        raise DatasetIntegrityError(f'{reader.root}: the shards\' labels hold {start} rows, their metadata '
                                    f'{len(reader)}')
    if not len(reader):
        return {'body_pose': np.zeros((0, 63)), 'global_orient': np.zeros((0, 3)), 'betas': np.zeros((0, 10)),
                'pelvis': np.zeros((0, 3)), 'crop_focal': np.zeros(0), 'source_focal': np.zeros(0)}
    return {k: np.concatenate(v) for k, v in cols.items()}


def source_pool_angles(reader: GeneratedDataReader, num: int) -> tuple[np.ndarray | None, str]:
    """Joint angles of ``num`` poses spread evenly over the dataset's pose source (rebuilt from the manifest's
    ``config.source``), and a line describing it; ``(None, why)`` when the source cannot be built here (e.g. its
    motion files are on another machine)."""
    from posedreamer_mm.registry import POSE_SOURCES
    cfg = (reader.manifest.get('config') or {}).get('source')
    if not isinstance(cfg, dict):
        return None, 'manifest.json records no config.source'
    try:
        source = POSE_SOURCES.build(cfg)
        n = len(source)
        idx = np.unique(np.linspace(0, n - 1, min(n, int(num))).round().astype(int))
        poses = np.stack([np.asarray(source[int(i)].body_pose, np.float64).reshape(63) for i in idx])
    except Exception as err:  # noqa: BLE001  any failure of a user's source only removes the comparison
        return None, f'the pose source {cfg.get("type")} could not be read here ({type(err).__name__}: {err})'
    return joint_angles_deg(poses), f'{len(idx)} of the {n} poses of {cfg.get("type")}, evenly spaced'


def generator_outcomes(reader: GeneratedDataReader) -> dict:
    """Samples the generator dropped or failed, by reason, from every committed shard's ``shard.json``."""
    dropped, failed = Counter(), Counter()
    for name in reader.shards:
        path = osp.join(reader.root, 'shards', name, 'shard.json')
        try:
            with open(path) as f:
                info = json.load(f)
            for d in info['dropped']:
                dropped[str(d.get('reason'))] += 1
            for d in info['failed']:
                failed[str(d.get('reason'))] += 1
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise DatasetIntegrityError(f'{path} is unreadable ({type(err).__name__}: {err}); '
                                        'tools/verify_dataset.py checks every shard') from err
    return dict(dropped=dict(dropped), failed=dict(failed))


def filter_outcomes(reader: GeneratedDataReader, filter_dir: str) -> dict | None:
    """What ``tools/filter.py`` wrote to ``filter_dir``, per dataset row; ``None`` when it has not run.

    Returns:
        ``stage_counts`` (as the filter's ``summary.json``), ``kept`` (N,) bool, ``scored`` (N,) bool, ``oks``
        (N,) float (``nan`` where not scored), ``reason`` (N,) drop reasons (``''`` where kept), ``oks_thr``
        (the ``FilterByOKS`` threshold or ``None``), ``num_kept``, ``num_scored``, ``num_failed``,
        ``control_accuracy``.

    Raises:
        DatasetIntegrityError: ``summary.json`` or ``scores.jsonl`` unreadable, or naming ids not in the dataset.
    """
    summary_path, scores_path = osp.join(filter_dir, 'summary.json'), osp.join(filter_dir, 'scores.jsonl')
    if not osp.isfile(summary_path):
        return None
    try:
        with open(summary_path) as f:
            summary = json.load(f)
        stage_counts = list(summary['stage_counts'])
        with open(scores_path) as f:
            records = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetIntegrityError(f'{filter_dir}: the filter outputs are unreadable ({type(err).__name__}: {err}); '
                                    'run tools/filter.py again') from err
    n = len(reader)
    kept, scored, oks, reason = np.zeros(n, bool), np.zeros(n, bool), np.full(n, np.nan), [''] * n
    for line, rec in enumerate(records, 1):
        try:
            i = reader.index_of(rec['id'])
        except (KeyError, TypeError):
            raise DatasetIntegrityError(f'{scores_path}, line {line}: sample {rec.get("id")!r} is not in '
                                        f'{reader.root} (written for another dataset?)') from None
        if 'error' in rec:
            continue
        scored[i], kept[i], reason[i] = True, bool(rec.get('kept')), str(rec.get('drop_reason') or '')
        oks[i] = float((rec.get('scores') or {}).get('oks', np.nan))
    return dict(stage_counts=stage_counts, kept=kept, scored=scored, oks=oks, reason=reason,
                oks_thr=_oks_threshold(summary), num_kept=int(kept.sum()), num_scored=int(scored.sum()),
                num_failed=int(summary.get('num_failed', 0)), control_accuracy=summary.get('control_accuracy'))


def _oks_threshold(summary: dict) -> float | None:
    """The threshold of the filter run's OKS stage (a ``FilterByOKS``, built so that its default counts), if any."""
    from posedreamer_mm.datasets.transforms.filters import FilterByOKS
    from posedreamer_mm.registry import TRANSFORMS
    for cfg in summary.get('stages') or []:
        cls = TRANSFORMS.get(cfg['type']) if isinstance(cfg, dict) and isinstance(cfg.get('type'), str) else None
        if isinstance(cls, type) and issubclass(cls, FilterByOKS):
            return float(TRANSFORMS.build(dict(cfg)).thr)
    return None


def stand_in_notes(reader: GeneratedDataReader) -> list[str]:
    """Plain statements of which parts of the dataset are stand-ins, from its manifest."""
    from posedreamer_mm.generation.backends.render import RenderBackend
    from posedreamer_mm.registry import BACKENDS
    cfg = reader.manifest.get('config') or {}
    notes = []
    body = cfg.get('body_model') or {}
    if isinstance(body, dict) and body.get('model_path') in (None, ''):
        notes.append('Body model: the open SMPL-X stand-in (a procedural mannequin in the SMPL-X file format, '
                     'not SMPL-X: its shape space, pose correctives and surface are made up; docs/bodies.md). '
                     'Labels are exact for this body, not for real people.')
    backend_type = (cfg.get('backend') or {}).get('type')
    backend = BACKENDS.get(backend_type) if isinstance(backend_type, str) else None
    if isinstance(backend, type) and issubclass(backend, RenderBackend):
        notes.append('Images: the rendering-baseline backend (a lit, clothing-coloured body render over a '
                     'procedural background), not a diffusion model; FID/KID of these images says nothing about '
                     'a diffusion generator (docs/backends.md).')
    return notes


def hmr_results(work_dir: str) -> dict:
    """The training loss curve and the last evaluation of an mmengine work dir (``tools/train.py`` /
    ``tools/test.py``): ``loss`` as ``[(iter, loss), ...]`` from the newest ``*/vis_data/scalars.json`` with a
    loss; ``metrics`` from the newest test log ``<timestamp>/<timestamp>.json``, else the training run's last
    validation."""
    out: dict = dict(work_dir=osp.abspath(work_dir), loss=[], metrics={})
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')), reverse=True):
        rows = _json_lines(path)
        loss = [(int(r['iter']), float(r['loss'])) for r in rows if 'loss' in r and 'iter' in r]
        if loss:
            out['loss'], out['train_log'] = loss, path
            val = [r for r in rows if not any('loss' in k for k in r) and any('/' in k for k in r)]
            if val:
                out['metrics'] = _numbers(val[-1])
                out['metrics_from'] = path
            break
    for path in sorted(glob.glob(osp.join(work_dir, '*', '*.json')), reverse=True):
        if osp.basename(path)[:-5] != osp.basename(osp.dirname(path)):
            continue
        rows = [r for r in _json_lines(path) if r and not any('loss' in k for k in r)]
        if rows:
            out['metrics'], out['metrics_from'] = _numbers(rows[-1]), path
            break
    return out


def _numbers(row: dict) -> dict:
    """The metrics of a log row (``<prefix>/<name>`` keys; mmengine's timings and counters left out)."""
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and '/' in k}


def _json_lines(path: str) -> list[dict]:
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                rows.append(rec)
    return rows


def image_quality(data_root: str, reference: str, kept: str | None = None, out: str | None = None,
                  **kwargs) -> dict:
    """FID-64, FID-2048 and KID of the dataset's images (only the rows ``kept`` lists, a filter's
    ``manifest_filtered.jsonl``, when given) against the images of ``reference``, by
    ``posedreamer_mm/apis/image_quality.py`` (protocol: docs/image_quality.md); ``out`` gets its JSON.

    Returns:
        ``metrics`` and ``protocol`` as that module gives them.
    """
    from posedreamer_mm.apis.image_quality import run_image_quality
    return run_image_quality(data_root, reference, kept=kept, out=out, log=log, progress=False, **kwargs)


def _stats(values: np.ndarray) -> dict:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return dict(n=0)
    return dict(n=int(v.size), min=float(v.min()), p50=float(np.median(v)), max=float(v.max()), mean=float(v.mean()))


# ---- the report ------------------------------------------------------------------------------------------------

def run_report(data_root: str, out_dir: str | None = None, filter_dir: str | None = None,
               reference: str | None = None, hmr_work_dir: str | None = None, sheet_samples: int = 6,
               pool_samples: int = 1000, iq_kwargs: dict | None = None) -> dict:
    """Writes the dataset report (module docstring) and returns what ``report.json`` holds.

    Args:
        data_root: The generated dataset (``tools/generate.py``'s output).
        out_dir: Where the page and its PNGs go (default ``<data_root>/report``).
        filter_dir: ``tools/filter.py``'s output (default ``<data_root>/filter``; skipped when absent).
        reference: A folder of reference images: FID/KID of the dataset's images against it.
        hmr_work_dir: An HMR work dir (``tools/train.py`` / ``tools/test.py``): its loss curve and test metrics.
        sheet_samples: Samples of the contact sheet (as many kept and as many rejected when filtered).
        pool_samples: Poses of the source the pose coverage compares with.
        iq_kwargs: More arguments of ``posedreamer_mm.apis.image_quality.run_image_quality`` (``max_images``,
            ``device``, ``is_weights``...).

    Raises:
        posedreamer_mm.generation.writer.OutputConflictError: ``data_root`` is not a generated dataset.
        DatasetIntegrityError: its files (or the filter's) are damaged; the message names the file.
    """
    from posedreamer_mm.visualization import dataset_figures as figs
    from posedreamer_mm.visualization.report_html import write_report_html
    start = time.time()
    reader = GeneratedDataReader(data_root)
    out_dir = osp.abspath(out_dir or osp.join(reader.root, 'report'))
    filter_dir = filter_dir or osp.join(reader.root, 'filter')
    os.makedirs(out_dir, exist_ok=True)
    log(f'{reader.root}: {len(reader)} samples in {len(reader.shards)} shards -> {out_dir}')

    arrays = load_label_arrays(reader)
    gen = generator_outcomes(reader)
    filt = filter_outcomes(reader, filter_dir)
    log(f'labels read; filter outputs: {"found in " + filter_dir if filt else "none (tools/filter.py not run)"}')
    n = len(reader)
    kept = filt['kept'] if filt else np.ones(n, bool)
    angles = joint_angles_deg(arrays['body_pose'])
    pool, pool_text = source_pool_angles(reader, pool_samples)
    coverage = dict(all=angle_coverage(pool, angles), kept=angle_coverage(pool, angles[kept])) if pool is not None \
        else None
    cam = camera_numbers(arrays['global_orient'], arrays['pelvis'])
    log(f'pose source: {pool_text}')

    report: dict = dict(
        data_root=reader.root, out_dir=out_dir, num_samples_planned=reader.manifest.get('num_samples'),
        status=reader.manifest.get('status'), num_committed=n, generator=gen,
        backend=(reader.manifest.get('config') or {}).get('backend'), stand_ins=stand_in_notes(reader),
        figures={}, pose_source=pool_text)
    if filt:
        report['filter'] = dict(dir=osp.abspath(filter_dir), stage_counts=filt['stage_counts'],
                                num_scored=filt['num_scored'], num_kept=filt['num_kept'],
                                num_failed=filt['num_failed'], oks_thr=filt['oks_thr'],
                                oks=_stats(filt['oks']), control_accuracy=filt['control_accuracy'])
    if coverage is not None:
        from posedreamer_mm.body.sources.procedural import SMPLX_BODY_JOINTS
        report['pose_coverage'] = {
            name: dict(all=_nan_none(coverage['all'][j]), kept=_nan_none(coverage['kept'][j]),
                       dataset_deg=[float(angles[:, j].min()), float(angles[:, j].max())] if n else None,
                       source_deg=[float(np.percentile(pool[:, j], 1)), float(np.percentile(pool[:, j], 99))])
            for j, name in enumerate(SMPLX_BODY_JOINTS)}
        report['pose_coverage_mean'] = dict(all=_nan_none(np.nanmean(coverage['all'])),
                                            kept=_nan_none(np.nanmean(coverage['kept'])))
    report['shape'] = {f'beta{k}': _stats(arrays['betas'][:, k]) for k in range(arrays['betas'].shape[1])}
    report['camera'] = dict(source_focal_px=_stats(arrays['source_focal']), crop_focal_px=_stats(arrays['crop_focal']),
                            distance_m=_stats(cam['distance_m']), yaw_deg=_stats(cam['yaw_deg']))

    report['figures']['filter'] = figs.save_filter_figure(
        osp.join(out_dir, 'filter.png'), filt['stage_counts'] if filt else [], filt['oks'] if filt else np.zeros(0),
        filt['oks_thr'] if filt else None)
    report['figures']['pose_coverage'] = figs.save_pose_coverage(
        osp.join(out_dir, 'pose_coverage.png'), angles, kept, pool, coverage)
    report['figures']['shape_camera'] = figs.save_shape_camera(
        osp.join(out_dir, 'shape_camera.png'), arrays['betas'], arrays['source_focal'], arrays['crop_focal'],
        cam['distance_m'], cam['yaw_deg'], kept)
    log('plots written')
    report['figures']['contact_sheet'] = figs.save_mesh_contact_sheet(
        osp.join(out_dir, 'contact_sheet.png'), reader, _sheet_rows(filt, n, sheet_samples),
        {i: _caption(filt, i) for i in range(n)})
    log('contact sheet with meshes written')
    if hmr_work_dir:
        report['hmr'] = hmr_results(hmr_work_dir)
        if report['hmr']['loss']:
            report['figures']['hmr_loss'] = figs.save_loss_curve(osp.join(out_dir, 'hmr_loss.png'),
                                                                 report['hmr']['loss'])
    if reference:
        log(f'FID/KID of the {"kept" if filt else "committed"} images against {reference} ...')
        kept_file = osp.join(filter_dir, 'manifest_filtered.jsonl') if filt else None
        report['image_quality'] = image_quality(reader.root, reference, kept=kept_file,
                                                out=osp.join(out_dir, 'image_quality.json'), **(iq_kwargs or {}))
    report['figures'] = {k: osp.basename(v) for k, v in report['figures'].items()}
    report['seconds'] = round(time.time() - start, 2)
    atomic_write_text(osp.join(out_dir, 'report.json'), json.dumps(report, indent=1, default=_json_default))
    report['html'] = write_report_html(osp.join(out_dir, 'index.html'), report)
    log(f'done in {report["seconds"]} s: open {report["html"]}')
    return report


def _sheet_rows(filt: dict | None, n: int, k: int) -> list[int]:
    """Rows of the contact sheet: the first ``k`` kept and first ``k`` rejected samples, or the first ``2k``."""
    if not filt:
        return list(range(min(n, 2 * k)))
    kept = [int(i) for i in np.flatnonzero(filt['kept'])[:k]]
    rejected = [int(i) for i in np.flatnonzero(filt['scored'] & ~filt['kept'])[:k]]
    return kept + rejected


def _caption(filt: dict | None, i: int) -> str:
    if not filt or not filt['scored'][i]:
        return ''
    oks = filt['oks'][i]
    # OKS rounded down, as the filter's own sheets show it: a value shown as the threshold was never dropped.
    text = ('kept' if filt['kept'][i] else 'rejected') + (f' oks {math.floor(oks * 1000) / 1000:.3f}'
                                                          if np.isfinite(oks) else '')
    return text + (f' {filt["reason"][i]}' if filt['reason'][i] else '')


def _nan_none(x) -> float | None:
    x = float(x)
    return None if not np.isfinite(x) else round(x, 4)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


__all__ = ['run_report', 'joint_angles_deg', 'angle_coverage', 'camera_numbers', 'load_label_arrays',
           'filter_outcomes', 'hmr_results']
