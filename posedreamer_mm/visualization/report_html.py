"""The dataset report's HTML page: one self-contained ``index.html`` whose images are PNGs in its own folder,
linked by relative paths, so the folder can be copied or opened from anywhere (no scripts, no network).

``write_report_html(path, report)`` takes the dict ``posedreamer_mm/apis/report.py`` builds (and writes as
``report.json``).
"""
from __future__ import annotations

import html
import os
from collections.abc import Iterable

from posedreamer_mm.utils.fileio import atomic_write_text

STYLE = """body{font-family:sans-serif;margin:24px;max-width:1240px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
.note{background:#fff6d5;border:1px solid #e0c060;padding:8px 12px;margin:8px 0;font-size:13px}
img{max-width:100%;border:1px solid #ddd}figcaption{font-size:12px;color:#555;margin-bottom:12px}
code{background:#f2f2f2;padding:0 3px}"""

#: Figure key -> (section title, caption).
FIGURES = {
    'filter': ('Filtering', 'Kept (green) and rejected (red) samples per stage of tools/filter.py, and the OKS of '
               'each label against the offline pose scorer\'s detection (dashed: the threshold).'),
    'pose_coverage': ('Pose diversity', 'Per SMPL-X body joint, its rotation angle away from the rest pose: the '
                      'pose source\'s 1st-99th percentile (grey), each dataset pose (ticks), and the fraction of '
                      'the source\'s 10-degree bins the dataset reaches.'),
    'shape_camera': ('Shape and camera', 'Betas per component; the focal length of the full source image and of '
                     'the stored crop; the pelvis distance from the camera; the body\'s yaw.'),
    'contact_sheet': ('Samples', 'Each sample\'s image, then the same image with its label\'s SMPL-X mesh and '
                      'COCO-17 skeleton drawn over it (hollow: occluded keypoint). Kept samples first, then '
                      'rejected ones.'),
    'hmr_loss': ('HMR training', 'Total training loss of the HMR run.'),
}


def _e(x) -> str:
    return html.escape(str(x))


def _table(rows: Iterable[Iterable], header: Iterable | None = None) -> str:
    out = ['<table>']
    if header is not None:
        out.append('<tr>' + ''.join(f'<th>{_e(h)}</th>' for h in header) + '</tr>')
    for row in rows:
        out.append('<tr>' + ''.join(f'<td>{_e(c)}</td>' for c in row) + '</tr>')
    out.append('</table>')
    return '\n'.join(out)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f'{v:.4g}'
    return str(v)


def _figure(report: dict, key: str) -> str:
    name = report.get('figures', {}).get(key)
    if not name:
        return ''
    title, caption = FIGURES[key]
    return (f'<h2>{_e(title)}</h2>\n<figure><img src="{_e(name)}" alt="{_e(title)}">'
            f'<figcaption>{_e(caption)}</figcaption></figure>')


def write_report_html(path: str | os.PathLike, report: dict) -> str:
    """Writes the page (atomically) and returns its path."""
    parts = [f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>Dataset report: '
             f'{_e(os.path.basename(report["data_root"]))}</title><style>{STYLE}</style></head><body>',
             f'<h1>Dataset report: <code>{_e(report["data_root"])}</code></h1>']
    for note in report.get('stand_ins', []):
        parts.append(f'<div class="note"><b>Stand-in.</b> {_e(note)}</div>')
    gen = report['generator']
    rows = [('samples planned', report.get('num_samples_planned')), ('status', report.get('status')),
            ('committed (written)', report['num_committed']),
            ('dropped by the generator', ', '.join(f'{k}: {v}' for k, v in gen['dropped'].items()) or 0),
            ('failed in the generator', ', '.join(f'{k}: {v}' for k, v in gen['failed'].items()) or 0),
            ('backend', (report.get('backend') or {}).get('type'))]
    filt = report.get('filter')
    if filt:
        rows += [('scored by tools/filter.py', filt['num_scored']), ('kept by the filter', filt['num_kept']),
                 ('unreadable when filtered', filt['num_failed']),
                 ('OKS threshold', filt['oks_thr']), ('mean OKS', _fmt(filt['oks'].get('mean', '-')))]
    parts += ['<h2>Counts</h2>', _table(rows)]
    if filt:
        parts.append(_table(((s['stage'], s['entered'], s['kept'], s['entered'] - s['kept'],
                              ', '.join(f'{k}: {v}' for k, v in sorted(s['dropped'].items())))
                             for s in filt['stage_counts']),
                            header=('filter stage', 'entered', 'kept', 'rejected', 'reasons')))
    parts.append(_figure(report, 'filter'))
    parts.append(_figure(report, 'pose_coverage'))
    if 'pose_coverage_mean' in report:
        m = report['pose_coverage_mean']
        parts.append(f'<p>Mean coverage of the pose source ({_e(report["pose_source"])}): all samples '
                     f'{_e(_fmt(m["all"]))}, kept {_e(_fmt(m["kept"]))}.</p>')
    else:
        parts.append(f'<p>No pose-source comparison: {_e(report.get("pose_source", ""))}.</p>')
    parts.append(_figure(report, 'shape_camera'))
    cam = report.get('camera', {})
    parts.append(_table(((k, *(_fmt(v.get(s, '-')) for s in ('n', 'min', 'p50', 'max'))) for k, v in cam.items()),
                        header=('camera', 'n', 'min', 'median', 'max')))
    parts.append(_figure(report, 'contact_sheet'))
    iq = report.get('image_quality')
    if iq:
        proto = iq.get('protocol', {})
        parts.append('<h2>Image quality</h2>')
        parts.append(f'<p>{_e(proto.get("generated_kind", "images"))} <code>{_e(proto.get("generated", ""))}</code>'
                     f'{" (kept rows only)" if proto.get("kept") else ""} against '
                     f'<code>{_e(proto.get("reference", ""))}</code>; FID-64 is the feature size of the paper\'s '
                     'FID, FID-2048 the usual one '
                     '(docs/image_quality.md). Full protocol: <code>image_quality.json</code>.</p>')
        parts.append(_table(((k, _fmt(v)) for k, v in iq.get('metrics', {}).items()), header=('metric', 'value')))
    hmr = report.get('hmr')
    if hmr:
        parts.append(_figure(report, 'hmr_loss') or '<h2>HMR training</h2>')
        if hmr.get('metrics'):
            parts.append('<p>Evaluation (tools/test.py):</p>')
            parts.append(_table(((k, _fmt(v)) for k, v in hmr['metrics'].items()), header=('metric', 'value')))
        parts.append(f'<p>Work dir: <code>{_e(hmr["work_dir"])}</code></p>')
    parts.append('<h2>Files</h2><p><code>report.json</code> (every number on this page), '
                 + ', '.join(f'<code>{_e(v)}</code>' for v in report.get('figures', {}).values())
                 + f'. Written in {_e(report.get("seconds", "?"))} s.</p></body></html>')
    atomic_write_text(path, '\n'.join(p for p in parts if p) + '\n')
    return os.fspath(path)


__all__ = ['write_report_html']
