"""Every HMR config loads, builds and trains one iteration at tiny size on the tiny dataset fixtures; the ViT-L
config also trains under tools/dist_train.sh on 2 CPU processes."""
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

from posedreamer_mm.apis.launch import load_config
from posedreamer_mm.registry import DATASETS, MODELS
from posedreamer_mm.testing import free_port
from posedreamer_mm.testing.hmr_fixtures import write_hmr_fixtures
from posedreamer_mm.testing.vit import tiny_head, tiny_vit_backbone

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / 'configs' / 'hmr').glob('*.py'))
TINY_INPUT = (48, 64)  # (W, H)


def write_config_fixtures(root: Path, standin_model_dir) -> dict:
    """Tiny datasets of every kind the HMR configs read (the data helper's fixtures) plus MPII's activities."""
    paths = write_hmr_fixtures(root, num=2, smplx_model_dir=standin_model_dir)
    # MPII's activity table as the yoga config reads it: {file_name: {act_name: ...}}.
    mpii_images = json.loads(Path(paths['mpii']['ann_file']).read_text())['images']
    activities = root / 'mpii_activities.json'
    activities.write_text(json.dumps({im['file_name']: {'act_name': im['act_name']} for im in mpii_images}))
    paths['mpii_attribute_file'] = str(activities)
    return paths


@pytest.fixture(scope='module')
def fixtures(tmp_path_factory, standin_model_dir):
    return write_config_fixtures(tmp_path_factory.mktemp('hmr_data'), standin_model_dir)


def data_options(paths: dict, standin_model_dir, **more) -> dict:
    """``--cfg-options`` pointing every asset variable of the HMR configs at the fixtures (and ``more``)."""
    return dict(**more,
        body_model_dir=f'{standin_model_dir}/', posedreamer_root=paths['posedreamer']['label_root'] + '/',
        posedreamer_yoga_root=paths['posedreamer']['label_root'] + '/',
        bedlam_label_root=paths['bedlam']['label_root'] + '/', bedlam_img_root=paths['bedlam']['img_root'] + '/',
        ubody_ann_file=paths['ubody']['ann_file'], ubody_smplx_file=paths['ubody']['smplx_file'],
        ubody_img_root=paths['ubody']['img_root'] + '/', mpii_ann_file=paths['mpii']['ann_file'],
        mpii_smplx_file=paths['mpii']['smplx_file'], mpii_img_root=paths['mpii']['img_root'] + '/',
        mpii_attribute_file=paths['mpii_attribute_file'])


def tiny_config(path, paths, standin_model_dir) -> Config:
    """The config at tiny size: width-32 ViT, 64x48 crops, batch 2, no workers; everything else as written."""
    names = Config.fromfile(str(path))  # the asset variables this config defines (others would be refused)
    options = data_options(paths, standin_model_dir, input_size=TINY_INPUT)
    cfg = load_config(str(path), {k: v for k, v in options.items() if k in names})
    cfg.model.backbone = tiny_vit_backbone((TINY_INPUT[1], TINY_INPUT[0]))
    head = tiny_head(with_hands=cfg.model.head.with_hands, with_face=cfg.model.head.with_face,
                     pos_embed_size=cfg.model.head.get('pos_embed_size'))
    cfg.model.head = head
    cfg.optim_wrapper.paramwise_cfg.num_layers = 2
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].update(batch_size=2, num_workers=0, persistent_workers=False)
        cfg[loader].pop('pin_memory', None)
    return cfg


def assert_geometric_transforms_use(pipeline, model_dir):
    """The flip and the crop of a built train pipeline pivot about the exact rest pelvis of the body model in
    ``model_dir`` (the config's ``body_model``, overridden through ``body_model_dir``), not the neutral default."""
    from posedreamer_mm.body.flip import PelvisRegressor
    from posedreamer_mm.registry import BODY_MODELS
    found = {type(t).__name__: t for t in pipeline.transforms if type(t).__name__ in ('HMRRandomFlip',
                                                                                      'HMRTopdownAffine')}
    assert set(found) == {'HMRRandomFlip', 'HMRTopdownAffine'}, pipeline
    expected = PelvisRegressor(BODY_MODELS.build(dict(type='SMPLXBodyModel', model_path=f'{model_dir}/')))
    for name, t in found.items():
        assert t.body_model is not None and t.body_model['model_path'] == f'{model_dir}/', (name, t.body_model)
        assert t._pelvis is not None, f'{name} fell back to the neutral pelvis'
        betas = np.linspace(-1.0, 1.0, 10)
        assert np.allclose(t._pelvis(betas, 'neutral'), expected(betas)), name


def test_user_facing_config_is_the_vitl_config():
    user = Config.fromfile(str(ROOT / 'configs' / 'hmr_vitl_posedreamer_bedlam.py'))
    main = Config.fromfile(str(ROOT / 'configs' / 'hmr' / 'hmr_vitl_posedreamer_bedlam.py'))
    assert user.to_dict() == main.to_dict()
    assert main.model.backbone.arch == 'large' and main.model.backbone.init_cfg.checkpoint == main.backbone_checkpoint
    assert [d['type'] for d in main.train_dataloader.dataset.datasets] == ['PoseDreamerHMRDataset', 'BEDLAMHMRDataset']


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_config_builds_and_trains_one_iteration(path, fixtures, standin_model_dir):
    cfg = tiny_config(path, fixtures, standin_model_dir)
    with DefaultScope.overwrite_default_scope('posedreamer_mm'):
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
        model.init_weights()
        dataset = DATASETS.build(cfg.train_dataloader.dataset)
        names = {ds.dataset_name for ds in dataset.datasets}
        assert names == {d['dataset_name'] for d in cfg.train_dataloader.dataset.datasets}
        assert_geometric_transforms_use(dataset.pipeline, standin_model_dir)
        batch = pseudo_collate([dataset[0], dataset[len(dataset) - 1]])
        optim = build_optim_wrapper(model, cfg.optim_wrapper)
        before = model.head.dec_pose.weight.detach().clone()
        losses = model.train_step(batch, optim)
        assert set(losses) >= {'loss', 'loss_keypoints_2d', 'loss_joints_3d', 'loss_smplx_params'}
        assert all(math.isfinite(float(v.detach())) for v in losses.values()), losses
        assert not torch.equal(before, model.head.dec_pose.weight)
        val = DATASETS.build(cfg.val_dataloader.dataset)
        assert len(val) > 0
        out = model.val_step(pseudo_collate([val[0]]))
        assert out[0].pred_instances.vertices.shape[-1] == 3
        assert out[0].metainfo['dataset_name'] == cfg.val_dataloader.dataset.dataset_name


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_train_metainfo_resolves_from_any_working_directory(path, fixtures, standin_model_dir, tmp_path,
                                                             monkeypatch):
    """The combined dataset's COCO metainfo is mmpose's own file, found without mmpose's fallback (which warns
    that a cwd-relative ``configs/_base_/datasets/coco.py`` is missing and substitutes its packaged copy)."""
    monkeypatch.chdir(tmp_path)  # neither this repository's nor mmpose's root
    cfg = tiny_config(path, fixtures, standin_model_dir)
    with warnings.catch_warnings(record=True) as caught, DefaultScope.overwrite_default_scope('posedreamer_mm'):
        warnings.simplefilter('always')
        dataset = DATASETS.build(cfg.train_dataloader.dataset)
    fallback = [str(w.message) for w in caught if 'metainfo config file' in str(w.message)]
    assert not fallback, fallback
    assert dataset.metainfo['dataset_name'] == 'coco' and dataset.metainfo['num_keypoints'] == 17
    assert dataset.metainfo['flip_indices'] == [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]


@pytest.mark.timeout(300)
def test_dist_train_runs_the_vitl_config_on_two_cpu_processes(tmp_path, fixtures, standin_model_dir):
    cfg = tiny_config(ROOT / 'configs' / 'hmr_vitl_posedreamer_bedlam.py', fixtures, standin_model_dir)
    cfg.merge_from_dict(dict(train_cfg=dict(max_iters=1, val_interval=10), default_hooks=dict(
        logger=dict(interval=1), checkpoint=dict(interval=1))))
    config = tmp_path / 'hmr_tiny.py'
    cfg.dump(str(config))
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1', 'PYTHON': sys.executable,
           'PORT': str(free_port())}  # a fixed port collides with other jobs on the machine
    res = subprocess.run(['bash', str(ROOT / 'tools' / 'dist_train.sh'), str(config), '2', '--work-dir',
                          str(tmp_path / 'wd')], capture_output=True, text=True, env=env, timeout=280)
    log = res.stdout + res.stderr
    errors = [line for line in log.splitlines() if 'Error' in line]
    assert res.returncode == 0, '\n'.join(errors[-20:]) + log[-3000:]
    # Two ranks (mmengine prints its environment from rank 0 only).
    assert 'rank 0/2' in log and 'Distributed training: True' in log and 'GPU number: 2' in log
    assert 'Iter(train) [1/1]' in log and (tmp_path / 'wd' / 'iter_1.pth').exists()
    assert 'rank 0/2: process group ended' in log  # not left to interpreter exit (gloo may abort there)
    # The validation at the end computed the key the config keeps the best checkpoint by.
    assert list((tmp_path / 'wd').glob('best_hmr_ubody_pa_pve_mm_iter_1.pth')), sorted(os.listdir(tmp_path / 'wd'))
    # The Runner's checkpoint (optimizer, message hub, ...) loads strictly for inference.
    from posedreamer_mm.apis import init_hmr_model
    model = init_hmr_model(config, tmp_path / 'wd' / 'iter_1.pth')
    assert not model.training


def test_adding_generated_data_is_one_dict(tmp_path, fixtures, standin_model_dir):
    """The docs/hmr.md recipe: a config inheriting the ViT-L one, plus one GeneratedHMRDataset dict and its ratio."""
    if 'generated' not in fixtures:
        pytest.fail('the HMR fixtures do not write a generated dataset')
    config = tmp_path / 'hmr_vitl_posedreamer_bedlam_generated.py'
    config.write_text(
        f"_base_ = [{str(ROOT / 'configs' / 'hmr_vitl_posedreamer_bedlam.py')!r}]\n"
        f"generated_root = {fixtures['generated']['data_root']!r}\n"
        "generated_train = dict(type='GeneratedHMRDataset', dataset_name='generated', data_root=generated_root)\n"
        "train_dataloader = dict(dataset=dict(\n"
        "    datasets=[{{_base_.posedreamer_train}}, {{_base_.bedlam_train}}, generated_train],\n"
        "    sample_ratio_factor=[1.0, 1.0, 2.0]))\n")
    cfg = tiny_config(config, fixtures, standin_model_dir)
    with DefaultScope.overwrite_default_scope('posedreamer_mm'):
        dataset = DATASETS.build(cfg.train_dataloader.dataset)
        lens = dataset.lens
        assert [ds.dataset_name for ds in dataset.datasets] == ['posedreamer', 'bedlam', 'generated']
        assert lens[2] == 2 * len(dataset.datasets[2])
        item = dataset[len(dataset) - 1]  # from the generated part
        assert item['data_samples'].metainfo['dataset_name'] == 'generated'
        model = MODELS.build(cfg.model)
        losses = model.train_step(pseudo_collate([item, dataset[0]]), build_optim_wrapper(model, cfg.optim_wrapper))
        assert all(math.isfinite(float(v.detach())) for v in losses.values())
