"""The toy pose scorer (benchmarks/toy_pose_scorer.py, configs/dpo/toy/): its COCO export of rendered samples has
whole-image boxes and the labels' keypoints, its config builds in mmpose, the train pipeline flips left and right
correctly, a few training steps run, and a checkpoint of the model scores through ``MMPoseScorer`` (strict load)."""
import json
import sys
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.optim import build_optim_wrapper

from posedreamer_mm.apis.launch import load_config
from posedreamer_mm.body.joint_maps import COCO17_FLIP_PAIRS
from posedreamer_mm.generation.reader import GeneratedDataReader
from posedreamer_mm.registry import DATASETS, GENERATORS, MODELS
from posedreamer_mm.scoring.mmpose_scorer import MMPoseScorer
from posedreamer_mm.utils import register_all_modules

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'benchmarks'))
import toy_pose_scorer as tps  # noqa: E402

CONFIGS = sorted((ROOT / 'configs' / 'dpo' / 'toy').glob('*.py'))


@pytest.fixture(scope='module')
def renders(tmp_path_factory, standin_model_dir):
    """Two stand-in renders at 96 px with the benchmarks' generator set-up (in-process: no spawn worker)."""
    register_all_modules()
    root = tmp_path_factory.mktemp('toy_renders') / 'data'
    build = GENERATORS.build
    with mock.patch.object(GENERATORS, 'build', lambda cfg, *a, **k: build(dict(cfg, num_workers=0), *a, **k)):
        tps.render_dataset(str(root), 2, 96, 5, str(standin_model_dir))
    ann = tps.whole_image_coco(str(root), str(root.parent / 'coco.json'))
    return root, ann['path']


def test_whole_image_export_keeps_the_labels(renders, tmp_path):
    root, ann = renders
    coco = json.loads(Path(ann).read_text())
    reader = GeneratedDataReader(str(root))
    assert len(coco['images']) == len(reader) == 2
    for i, (img, a) in enumerate(zip(coco['images'], coco['annotations'])):
        assert (root / img['file_name']).is_file() and img['file_name'] == reader.meta(i)['image']
        assert a['bbox'] == [0.0, 0.0, 96.0, 96.0]          # the box MMPoseScorer uses without a detector
        label = np.asarray(reader.sample(i).keypoints_coco17)
        kp = np.asarray(a['keypoints']).reshape(17, 3)
        seen = label[:, 2] > 0
        np.testing.assert_allclose(kp[seen, :2], label[seen, :2], atol=1e-3)
    shaded = json.loads(Path(tps.whole_image_coco(str(root), str(tmp_path / 's.json'), 'shaded')['path']).read_text())
    assert all(im['file_name'].startswith('shards/') and '/controls/shaded/' in im['file_name']
               and (root / im['file_name']).is_file() for im in shaded['images'])


@pytest.mark.parametrize('config', CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_trains_and_scores(config, renders, tmp_path):
    root, ann = renders
    cfg = load_config(str(config), dict(data_root=f'{root}/', ann_file=ann))
    assert cfg.train_dataloader.dataset.ann_file == ann and cfg.test_evaluator.ann_file == ann
    size = cfg.codec['input_size']

    # The train pipeline with the flip forced and every other geometric change off: each joint's target is where
    # its left/right twin is without the flip, mirrored (flip_indices come from the COCO metainfo).
    def dataset(flip: bool):
        pipeline = []
        for t in cfg.train_pipeline:
            t = dict(t)
            if t['type'] == 'RandomFlip':
                t['prob'] = 1.0 if flip else 0.0
            elif t['type'] == 'RandomBBoxTransform':
                t.update(shift_prob=0.0, scale_prob=0.0, rotate_prob=0.0)
            elif t['type'] == 'PackPoseInputs':
                t['pack_transformed'] = True
            pipeline.append(t)
        return DATASETS.build(dict(cfg.train_dataloader.dataset, pipeline=pipeline))
    twin = np.arange(17)
    for a, b in COCO17_FLIP_PAIRS:
        twin[a], twin[b] = b, a
    plain, flipped = dataset(False), dataset(True)
    for i in range(len(plain)):
        k0 = plain[i]['data_samples'].gt_instances.transformed_keypoints[0]
        k1 = flipped[i]['data_samples'].gt_instances.transformed_keypoints[0]
        mirrored = np.stack([size[0] - 1 - k0[:, 0], k0[:, 1]], -1)
        # mmpose mirrors the image about its width and the box centre about width - 1: up to 1 input pixel apart
        assert np.abs(k1 - mirrored[twin]).max() <= 1.5
        assert np.abs(k1 - mirrored).max() > 3        # the twins are apart: a flip without the swap would fail
    sample = plain[0]
    assert sample['inputs'].shape == (3, size[1], size[0])
    heatmaps = sample['data_samples'].gt_fields.heatmaps
    assert heatmaps.shape == (17, cfg.codec['heatmap_size'][1], cfg.codec['heatmap_size'][0])

    # A few training steps with the config's model and optimiser on the real (augmented) pipeline.
    torch.manual_seed(0)
    ds = DATASETS.build(cfg.train_dataloader.dataset)
    model = MODELS.build(cfg.model)
    model.init_weights()
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    losses = [float(model.train_step(pseudo_collate([ds[0], ds[1]]), optim)['loss_kpt']) for _ in range(3)]
    assert all(np.isfinite(losses))

    # Its checkpoint (as the Runner writes: state_dict + dataset_meta) scores the whole image via MMPoseScorer.
    ckpt = tmp_path / 'toy.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=ds.metainfo)), ckpt)
    scorer = MMPoseScorer(str(config), str(ckpt), device='cpu')
    image = cv2.imread(str(root / json.loads(Path(ann).read_text())['images'][0]['file_name']))
    det = scorer.predict_batch([image[..., ::-1]])[0]
    assert len(det) == 1 and det.keypoints.shape == (1, 17, 2)
    assert ((det.keypoints >= -1) & (det.keypoints <= 97)).all()
    # the person box (the OKS scale) is the keypoints' extent within the image, not the whole-image crop
    np.testing.assert_allclose(det.bboxes[0], np.clip(np.r_[det.keypoints[0].min(0), det.keypoints[0].max(0)], 0, 96),
                               atol=1e-5)


def test_train_toy_scorer_trains_through_tools_train_and_reuses(renders, tmp_path):
    """The interface the DPO benchmark uses: a real (2-iteration) tools/train.py run whose dumped config and
    checkpoint build an MMPoseScorer; the same settings reuse it without training; other settings retrain."""
    root, _ = renders
    kwargs = tps.train_toy_scorer(str(tmp_path), str(root), n_train=2, iters=2)
    assert kwargs['det_config'] is None and kwargs['pose_checkpoint'].endswith('iter_2.pth')
    assert Path(kwargs['pose_config']).parent == Path(kwargs['pose_checkpoint']).parent == tmp_path / 'train'
    settings = json.loads((tmp_path / 'settings.json').read_text())
    assert settings['iters'] == 2 and settings['images_root'] == str(root)
    image = cv2.imread(str(next((root / 'shards').glob('*/images/*.png'))))[..., ::-1]
    det = MMPoseScorer(**kwargs).predict_batch([np.ascontiguousarray(image)])[0]
    assert det.keypoints.shape == (1, 17, 2)
    with mock.patch.object(tps.subprocess, 'run', side_effect=AssertionError('retrained')) as run:
        assert tps.train_toy_scorer(str(tmp_path), str(root), n_train=2, iters=2) == kwargs
        with pytest.raises(AssertionError, match='retrained'):
            tps.train_toy_scorer(str(tmp_path), str(root), n_train=2, iters=3)
    assert run.call_count == 1
