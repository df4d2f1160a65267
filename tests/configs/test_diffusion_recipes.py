"""The real control and DPO recipes (not the tiny_* test configs) take their runtime from one shared base,
configs/_base_/diffusion_runtime.py, and keep only their own settings."""
import ast
from pathlib import Path

import pytest
from mmengine.config import Config

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(p for folder in ('control', 'dpo') for p in (ROOT / 'configs' / folder).glob('*.py')
                 if not p.name.startswith('tiny_'))
#: Runtime names the shared base sets in full: a recipe that assigns one again repeats the runtime.
RUNTIME_ONLY = {'log_processor', 'randomness'}


def test_the_real_recipes_are_all_checked():
    assert {p.name for p in RECIPES} >= {
        'flux_control-lora_pncc.py', 'flux_easycontrol_pncc.py', 'sd15_controlnet_pncc.py', 'sdxl_controlnet_pncc.py',
        'flux_control-lora-dpo_pncc.py', 'sd15_controlnet-dpo_pncc.py', 'sdxl_controlnet-dpo_pncc.py'}


@pytest.mark.parametrize('path', RECIPES, ids=lambda p: p.name)
def test_recipe_inherits_the_diffusion_runtime_and_does_not_repeat_it(path):
    tree = ast.parse(path.read_text())
    assigned = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                if isinstance(t, ast.Name)}
    assert ast.literal_eval(next(n.value for n in tree.body if isinstance(n, ast.Assign)
                                 and n.targets[0].id == '_base_')) == ['../_base_/diffusion_runtime.py']
    assert not assigned & RUNTIME_ONLY
    cfg = Config.fromfile(path)
    # the shared runtime, as the recipes held it before it moved (docs/control_training.md, "Recipes")
    assert cfg.train_dataloader.sampler == dict(type='InfiniteSampler', shuffle=True)
    assert cfg.train_dataloader.collate_fn == dict(type='pseudo_collate')
    assert cfg.train_dataloader.num_workers == 4 and cfg.train_dataloader.persistent_workers
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.dtype == 'bfloat16'
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=1.0)
    assert cfg.optim_wrapper.optimizer.type == 'AdamW' and tuple(cfg.optim_wrapper.optimizer.betas) == (0.9, 0.999)
    assert cfg.default_hooks.checkpoint == dict(type='CheckpointHook', interval=cfg.save_interval, by_epoch=False,
                                                max_keep_ckpts=3)
    assert cfg.train_cfg == dict(by_epoch=False, max_iters=cfg.max_iters)
    assert cfg.log_processor.by_epoch is False and cfg.randomness == dict(seed=0)
    assert cfg.custom_hooks[0] == dict(type='DiffusersExportHook', interval=cfg.save_interval)


@pytest.mark.parametrize('name', ['sd15_controlnet-dpo_pncc.py', 'sdxl_controlnet-dpo_pncc.py',
                                  'flux_control-lora-dpo_pncc.py'])
def test_dpo_recipes_switch_on_pair_refresh_with_one_override(name):
    """Off by default; ``--cfg-options refresh_interval=N`` gives the DPOControlHook a refresh round every N
    iterations over the candidates the run's pairs came from (mmengine's DictAction cannot parse a dict, so the
    recipe exposes the interval as a variable)."""
    from posedreamer_mm.apis.dpo_refresh import refresh_settings
    from posedreamer_mm.apis.overrides import load_with_overrides
    path = str(ROOT / 'configs' / 'dpo' / name)
    hook = next(h for h in Config.fromfile(path).custom_hooks if h['type'] == 'DPOControlHook')
    assert hook['refresh'] is None
    cfg = load_with_overrides(path, {'refresh_interval': 800, 'candidates_root': '/data/cands'})
    hook = next(h for h in cfg.custom_hooks if h['type'] == 'DPOControlHook')
    settings = refresh_settings(hook['refresh'])
    assert settings['interval'] == 800 and settings['controls'] == '/data/cands'
    assert settings['candidates'] == 4 and settings['min_gap'] == 0.05 and settings['min_winner'] == 0.5
    assert cfg.train_dataloader.dataset.data_root == '/data/cands'
