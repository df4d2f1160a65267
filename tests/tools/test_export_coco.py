"""tools/export_coco.py end to end on a dataset the demo config generates: areas are the silhouettes the generator
itself stored (the depth control's foreground), the dataset is unchanged, mmpose reads the file, and COCO's OKS
metrics on it are not the optimistic box-area ones."""
import contextlib
import copy
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from posedreamer_mm.generation import GeneratedDataReader

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / 'configs' / 'demo' / 'render_standin_procedural.py'


def _env():
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    return {k: v for k, v in env.items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')}


def _run(*args):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=_env(), timeout=600)


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob('*'))
            if p.is_file()}


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp('export') / 'demo'
    res = _run(ROOT / 'tools' / 'generate.py', DEMO, '--out', out, '--num-samples', '3', '--no-progress')
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return out


def _ap(coco: dict, dts: list) -> float:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(coco)
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(copy.deepcopy(dts)), 'keypoints')
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


@pytest.mark.timeout(600)
def test_export_coco_writes_silhouette_areas_without_touching_the_dataset(dataset, tmp_path):
    before = _tree(dataset)
    out = tmp_path / 'coco.json'
    res = _run(ROOT / 'tools' / 'export_coco.py', dataset, '--out', out)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert _tree(dataset) == before                     # read only
    coco = json.loads(out.read_text())
    from posedreamer_mm.generation import export_coco_keypoints
    assert json.loads(Path(export_coco_keypoints(str(dataset), tmp_path / 'api.json')).read_text()) == coco
    reader = GeneratedDataReader(dataset)
    assert [im['sample_id'] for im in coco['images']] == reader.ids
    for i, (im, ann) in enumerate(zip(coco['images'], coco['annotations'])):
        # The generator's own depth control (same camera) is 0 exactly on the background.
        silhouette = cv2.imread(reader.control_path(i, 'depth')).any(-1)
        mask = mask_utils.decode(ann['segmentation']).astype(bool)
        np.testing.assert_array_equal(mask, silhouette)
        assert ann['area'] == silhouette.sum() < 0.5 * ann['bbox'][2] * ann['bbox'][3]
        assert os.path.isfile(dataset / im['file_name'])
        np.testing.assert_allclose(np.reshape(ann['keypoints'], (17, 3))[:, 2], reader.sample(i).keypoints_coco17[:, 2])

    # The same predictions score lower against the true area than against the box area (the issue: 0.804 vs 0.950).
    rng = np.random.default_rng(0)
    dts = []
    for ann in coco['annotations']:
        kp = np.reshape(ann['keypoints'], (17, 3)).astype(np.float64)
        kp[:, :2] += rng.normal(0.0, 6.0, (17, 2))
        dts.append(dict(image_id=ann['image_id'], category_id=1, keypoints=kp.reshape(-1).tolist(), score=1.0))
    boxed = copy.deepcopy(coco)
    for ann in boxed['annotations']:
        ann['area'] = ann['bbox'][2] * ann['bbox'][3]
    assert _ap(coco, dts) < _ap(boxed, dts) - 0.05

    # An mmpose config reads it as the README says: data_root = the dataset, img prefix ''.
    from mmengine.registry import DefaultScope
    from mmpose.registry import DATASETS
    with DefaultScope.overwrite_default_scope('mmpose'):
        ds = DATASETS.build(dict(type='CocoDataset', data_root=str(dataset), ann_file=str(out), data_mode='topdown',
                                 data_prefix=dict(img=''), pipeline=[dict(type='LoadImage')]))
    assert len(ds) == len(reader)
    item = ds[0]
    assert item['img'].shape[:2] == tuple(reader.sample(0).img_size[::-1])
    np.testing.assert_allclose(item['keypoints'][0], reader.sample(0).keypoints_coco17[:, :2], atol=1e-3)


@pytest.mark.timeout(300)
def test_export_coco_bad_input_is_named(dataset, tmp_path):
    from posedreamer_mm.apis.export import export_coco
    res = _run(ROOT / 'tools' / 'export_coco.py', tmp_path / 'nothing_here')
    assert res.returncode != 0 and 'nothing_here' in res.stderr
    with pytest.raises(FileNotFoundError, match='no_smplx is not a directory'):
        export_coco(dataset, tmp_path / 'x.json', body_model_dir=tmp_path / 'no_smplx')
    assert not (tmp_path / 'x.json').exists()
