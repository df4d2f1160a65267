"""DEPRECATED, kept only for benchmarks/bench_scorers.py (tools/demo.py runs ``DatasetGenerator``).

Builds the main job's stages from a config and runs them (``tools/demo.py`` is a thin wrapper)."""
from __future__ import annotations

import logging
from pathlib import Path

from mmengine.config import Config
from mmengine.logging import print_log

from posedreamer_mm.registry import BODY_MODELS, POSE_SOURCES, RENDERERS
from .contact_sheet import make_contact_sheet
from .control_stage import run_control_stage


def build_configured_body_model(cfg: Config, out_dir: Path):
    """The configured SMPL-X model; with ``model_path=None`` the open stand-in, written into ``out_dir``."""
    body_cfg = dict(cfg.body_model)
    if body_cfg.get('model_path') is None:
        from posedreamer_mm.body.standin import write_standin_smplx
        standin_dir = out_dir / 'body_models'
        if not (standin_dir / 'SMPLX_NEUTRAL.npz').exists():
            write_standin_smplx(standin_dir)
        print_log(f'body_model_dir is None: using the open SMPL-X STAND-IN written to {standin_dir} (a procedural '
                  'mannequin in the SMPL-X file format, not the licensed SMPL-X model)', logger='current',
                  level=logging.WARNING)
        body_cfg['model_path'] = str(standin_dir)
    return BODY_MODELS.build(body_cfg)


def run_demo(cfg: Config, out_dir: str | Path, num_samples: int | None = None) -> dict:
    """Runs the existing stages of the main job; returns the summary (also in ``<out_dir>/summary.json``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    body_model = build_configured_body_model(cfg, out_dir)
    source_cfg = dict(cfg.source)
    if num_samples is not None:
        inner = source_cfg['source'] if 'source' in source_cfg else source_cfg
        inner['num_samples'] = num_samples
    source = POSE_SOURCES.build(source_cfg)
    renderers = {}
    for name, rcfg in cfg.controls.items():
        rcfg = dict(rcfg)
        if rcfg['type'] == 'PNCCRenderer':
            rcfg.setdefault('body_model', body_model)
        renderers[name] = RENDERERS.build(rcfg)
    result = run_control_stage(source, body_model, renderers, out_dir, batch_size=cfg.get('batch_size', 16),
                               max_samples=num_samples)
    summary = result.summary()
    if result.written:
        summary['contact_sheet'] = str(make_contact_sheet(out_dir))
    summary['out_dir'] = str(out_dir)
    return summary
