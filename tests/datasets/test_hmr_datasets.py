"""HMR datasets: each format parses into the shared data_info convention with the values that were written, and
bad labels / images follow the policy (error naming the file in test mode, skip and count in training)."""
import json
import os
import shutil

import cv2
import numpy as np
import pytest

from posedreamer_mm.registry import DATASETS
from posedreamer_mm.testing.hmr_fixtures import FOCAL, IMG_WH, hmr_dataset_cfgs

KINDS = ('bedlam', 'posedreamer', 'coco', 'mpii', 'ubody', 'generated')
LOAD = [dict(type='LoadHMRImage')]


@pytest.mark.parametrize('kind', KINDS)
def test_data_info_matches_written_labels(hmr_paths, kind):
    ds = DATASETS.build(hmr_dataset_cfgs(hmr_paths)[kind])
    bodies = hmr_paths['bodies'][kind]
    assert len(ds) == 4 and ds.metainfo['dataset_name'] == kind
    for i in range(4):
        info = ds.get_data_info(i)
        assert info['dataset_name'] == kind and info['gender'] == 'neutral'
        np.testing.assert_allclose(info['focal'], [FOCAL, FOCAL])
        np.testing.assert_allclose(info['princpt'], np.array(IMG_WH) / 2)
        assert tuple(info['img_shape_full']) == (IMG_WH[1], IMG_WH[0])
        for key in ('global_orient', 'body_pose', 'betas', 'transl', 'left_hand_pose', 'right_hand_pose'):
            # NeuralAnnot hands went through "minus the mean" on writing and "plus the mean" on loading.
            np.testing.assert_allclose(info['smplx'][key], bodies[key][i], atol=1e-5, err_msg=f'{kind} {key}')
        kpts = info['keypoints_coco17']
        assert kpts.shape == (17, 3)
        labelled = kpts[:, 2] > 0
        assert labelled[5:].all()  # body points are in the image for these fixtures
        if kind == 'mpii':
            assert not labelled[:5].any()  # MPII has no face points
        x0, y0, x1, y1 = info['bbox']
        assert (kpts[labelled, 0] >= x0).all() and (kpts[labelled, 0] <= x1).all()
        assert (kpts[labelled, 1] >= y0).all() and (kpts[labelled, 1] <= y1).all()
        assert os.path.isfile(info['img_path'])
    has = ds.get_data_info(1)['has_smplx']
    assert has['body_pose'] and has['transl']
    assert has['face'] == (kind != 'bedlam')
    assert has['hands'] == (kind != 'ubody')  # the fixture's second UBody person has righthand_valid=False
    if kind in ('posedreamer', 'generated'):
        assert ds.get_data_info(0)['joints_3d'].shape == (127, 3)
    if kind == 'generated':
        assert ds.get_data_info(0)['scores'] == {'oks': 0.9}


def test_neuralannot_without_model_marks_hands_unlabelled(hmr_paths):
    cfg = dict(hmr_dataset_cfgs(hmr_paths)['coco'], smplx_model_path=None)
    ds = DATASETS.build(cfg)
    assert not ds.get_data_info(0)['has_smplx']['hands']


def test_attribute_subset(hmr_paths, tmp_path):
    cfg = dict(hmr_dataset_cfgs(hmr_paths)['mpii'], attributes={'act_name': 'yoga*'})
    ds = DATASETS.build(cfg)
    assert len(ds) == 2  # images 0 and 2 are 'yoga, Power'
    # The same subset from a side table keyed by file name.
    coco = json.load(open(hmr_paths['mpii']['ann_file']))
    table = {img.pop('file_name'): {'activity': img.pop('act_name')} for img in coco['images']}
    attr_file = tmp_path / 'acts.json'
    attr_file.write_text(json.dumps(table))
    ds = DATASETS.build(dict(hmr_dataset_cfgs(hmr_paths)['mpii'], attributes={'activity': ['YOGA*']},
                             attribute_file=str(attr_file)))
    assert [ds.get_data_info(i)['id'] for i in range(len(ds))] == ['mpii_100', 'mpii_102']


def _coco_copy(hmr_paths, tmp_path, drop_fit: bool):
    src = hmr_paths['coco']
    fits = json.load(open(src['smplx_file']))
    if drop_fit:
        fits.pop('101')
    smplx_file = tmp_path / 'fits.json'
    smplx_file.write_text(json.dumps(fits))
    return dict(hmr_dataset_cfgs(hmr_paths)['coco'], smplx_file=str(smplx_file))


def test_missing_label_errors_in_test_mode_and_is_counted_in_training(hmr_paths, tmp_path):
    cfg = _coco_copy(hmr_paths, tmp_path, drop_fit=True)
    with pytest.raises(ValueError, match=r'annotation 101.*no NeuralAnnot fit'):
        DATASETS.build(dict(cfg, test_mode=True))
    ds = DATASETS.build(cfg)
    assert len(ds) == 3 and len(ds.skipped) == 1


def test_bad_label_file_in_test_mode_names_it(hmr_paths, tmp_path):
    root = tmp_path / 'pd'
    shutil.copytree(hmr_paths['posedreamer']['label_root'], root)
    (root / 'pd_00002.npz').write_bytes(b'not a zip')
    cfg = dict(hmr_dataset_cfgs(hmr_paths)['posedreamer'], label_root=str(root))
    with pytest.raises(ValueError, match='pd_00002.npz'):
        DATASETS.build(dict(cfg, test_mode=True))
    assert len(DATASETS.build(cfg)) == 3


def test_missing_image_errors_in_test_mode_and_is_skipped_in_training(hmr_paths, tmp_path):
    root = tmp_path / 'pd'
    shutil.copytree(hmr_paths['posedreamer']['label_root'], root)
    os.remove(root / 'pd_00001.jpg')
    (root / 'pd_00002.jpg').write_bytes(b'\xff\xd8 not really a jpeg')
    cfg = dict(hmr_dataset_cfgs(hmr_paths, pipeline=LOAD)['posedreamer'], label_root=str(root))
    with pytest.raises(FileNotFoundError, match='pd_00001.jpg.* not found'):
        DATASETS.build(dict(cfg, test_mode=True))[1]
    with pytest.raises(FileNotFoundError, match='pd_00002.jpg.* cannot be decoded'):
        DATASETS.build(dict(cfg, test_mode=True))[2]
    ds = DATASETS.build(cfg)
    for bad in (1, 2):
        out = ds[bad]  # dropped, another index drawn
        assert out['img_path'].endswith(('pd_00000.jpg', 'pd_00003.jpg'))
    assert ds.pipeline.transforms[0].num_skipped >= 2


def test_image_at_half_resolution_rescales_labels(hmr_paths, tmp_path):
    root = tmp_path / 'pd'
    shutil.copytree(hmr_paths['posedreamer']['label_root'], root)
    img = cv2.imread(str(root / 'pd_00000.jpg'))
    cv2.imwrite(str(root / 'pd_00000.jpg'), cv2.resize(img, (IMG_WH[0] // 2, IMG_WH[1] // 2)))
    ds = DATASETS.build(dict(hmr_dataset_cfgs(hmr_paths, pipeline=LOAD)['posedreamer'], label_root=str(root)))
    full = ds.get_data_info(0)
    out = ds[0]
    assert out['img'].shape == (IMG_WH[1] // 2, IMG_WH[0] // 2, 3)
    np.testing.assert_allclose(out['focal'], full['focal'] / 2)
    np.testing.assert_allclose(out['princpt'], (full['princpt'] + 0.5) / 2 - 0.5)
    np.testing.assert_allclose(out['keypoints_coco17'][:, :2], (full['keypoints_coco17'][:, :2] + 0.5) / 2 - 0.5,
                               rtol=1e-6)
    # A different aspect ratio is a wrong image, not a resize.
    cv2.imwrite(str(root / 'pd_00000.jpg'), cv2.resize(img, (IMG_WH[0], IMG_WH[1] // 2)))
    with pytest.raises(FileNotFoundError, match='different aspect ratio'):
        DATASETS.build(dict(hmr_dataset_cfgs(hmr_paths, pipeline=LOAD, test_mode=True)['posedreamer'],
                            label_root=str(root)))[0]


def test_generated_dataset_pickles_for_workers_and_runs_the_pipeline(hmr_paths):
    import pickle
    pipeline = [dict(type='LoadHMRImage'), dict(type='HMRBBoxCenterScale'),
                dict(type='HMRTopdownAffine', input_size=(48, 64)), dict(type='PackHMRInputs')]
    ds = DATASETS.build(hmr_dataset_cfgs(hmr_paths, pipeline=pipeline)['generated'])
    clone = pickle.loads(pickle.dumps(ds))
    out = clone[3]
    assert out['inputs'].shape == (3, 64, 48)
    assert out['data_samples'].metainfo['id'] == 'gen_00003'


def test_nan_and_degenerate_labels_are_bad_labels(hmr_paths, tmp_path):
    coco = json.load(open(hmr_paths['coco']['ann_file']))
    fits = json.load(open(hmr_paths['coco']['smplx_file']))
    fits['100']['smplx_param']['shape'][3] = float('nan')
    coco['annotations'][2]['bbox'] = [10.0, 10.0, 0.0, 40.0]
    ann, smplx = tmp_path / 'ann.json', tmp_path / 'fits.json'
    ann.write_text(json.dumps(coco))
    smplx.write_text(json.dumps(fits).replace('NaN', 'NaN'))
    cfg = dict(hmr_dataset_cfgs(hmr_paths)['coco'], ann_file=str(ann), smplx_file=str(smplx))
    ds = DATASETS.build(cfg)
    assert len(ds) == 2 and len(ds.skipped) == 2
    assert any('NaN' in reason for _, reason in ds.skipped) and any('degenerate' in r for _, r in ds.skipped)
    with pytest.raises(ValueError, match='annotation 100'):
        DATASETS.build(dict(cfg, test_mode=True))


def test_lazy_rows_without_a_box_error_in_test_mode_and_are_dropped_in_training(hmr_paths, tmp_path):
    src = os.path.join(hmr_paths['bedlam']['label_root'], 'scene0.npz')
    data = dict(np.load(src))
    data['gtkps'][1] = np.nan  # no keypoints and no center/scale: no person box for row 1
    (tmp_path / 'labels').mkdir()
    np.savez(tmp_path / 'labels' / 'scene0.npz', **data)
    cfg = dict(hmr_dataset_cfgs(hmr_paths, pipeline=LOAD)['bedlam'], label_root=str(tmp_path / 'labels'))
    with pytest.raises(ValueError, match=r'scene0.npz row 1: .*no person box'):
        DATASETS.build(dict(cfg, test_mode=True))[1]
    ds = DATASETS.build(cfg)
    assert not ds[1]['id'].endswith('_000001')  # another index was drawn
    assert ds.num_bad_labels >= 1  # (the random redraw may hit row 1 again)


def test_neuralannot_several_files_and_data_root(hmr_paths):
    root = os.path.dirname(hmr_paths['ubody']['img_root'])
    rel = dict(ann_file='annotations/train.json', smplx_file='annotations/train_smplx.json')
    cfg = dict(hmr_dataset_cfgs(hmr_paths)['ubody'], data_root=root, img_root='images',
               ann_file=[rel['ann_file']] * 2, smplx_file=[rel['smplx_file']] * 2)
    ds = DATASETS.build(cfg)
    ids = [ds.get_data_info(i)['id'] for i in range(len(ds))]
    assert len(ds) == 8 and len(set(ids)) == 8 and ids[0] == 'ubody_0_100' and ids[4] == 'ubody_1_100'
    assert os.path.isfile(ds.get_data_info(5)['img_path'])
    scene = DATASETS.build(dict(cfg, attributes=dict(file_name='ubody_00000[13].jpg')))
    assert len(scene) == 4
    with pytest.raises(ValueError, match='one NeuralAnnot json per keypoint json'):
        DATASETS.build(dict(cfg, smplx_file=rel['smplx_file']))


def test_neuralannot_filters_people_without_keypoints_and_invalid_labels(hmr_paths, tmp_path):
    coco = json.load(open(hmr_paths['ubody']['ann_file']))
    coco['annotations'][0]['keypoints'] = [0.0] * 51
    coco['annotations'][1]['valid_label'] = 0
    ann = tmp_path / 'ann.json'
    ann.write_text(json.dumps(coco))
    ds = DATASETS.build(dict(hmr_dataset_cfgs(hmr_paths, test_mode=True)['ubody'], ann_file=str(ann)))
    assert len(ds) == 2 and ds.num_filtered == 1 and not ds.skipped


def _ids_item_by_item(ds) -> list:
    return [ds.get_data_info(i)['id'] for i in range(len(ds))]


def _no_item_built(monkeypatch):
    """Makes building or unpickling any item an error (what ``sample_ids()`` must not do)."""
    from mmengine.dataset import BaseDataset

    from posedreamer_mm.body.sources.bedlam import BEDLAMSource
    from posedreamer_mm.body.sources.posedreamer import PoseDreamerLabelSource
    fail = lambda *a, **k: pytest.fail('sample_ids() built or unpickled an item')  # noqa: E731
    monkeypatch.setattr(BaseDataset, 'get_data_info', fail)
    monkeypatch.setattr(BEDLAMSource, '_get', fail)
    monkeypatch.setattr(PoseDreamerLabelSource, '_get', fail)


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('subset', ['all', 'indices', 'get_subset', 'get_subset_', 'unserialized'])
def test_sample_ids_are_the_items_ids_without_building_them(hmr_paths, kind, subset, monkeypatch):
    """``sample_ids()``/``image_paths()`` list exactly ``get_data_info(i)['id']``/``['img_path']`` in order, for the
    whole set, an ``indices`` subset, mmengine's ``get_subset``/``get_subset_`` after loading and an unserialized
    list, and build or unpickle no item."""
    cfg = hmr_dataset_cfgs(hmr_paths)[kind]
    if subset == 'indices':
        cfg = dict(cfg, indices=[3, 0, 2])
    elif subset == 'unserialized':
        cfg = dict(cfg, serialize_data=False)
    ds = DATASETS.build(cfg)
    if subset == 'get_subset':
        ds = ds.get_subset([2, -1, 0])
    elif subset == 'get_subset_':
        ds.get_subset_(-3)
    want = _ids_item_by_item(ds)
    paths = [ds.get_data_info(i)['img_path'] for i in range(len(ds))]
    assert len(want) == {'indices': 3, 'get_subset': 3, 'get_subset_': 3}.get(subset, 4)
    assert len(set(want)) == len(want) and all(isinstance(i, str) for i in want)
    _no_item_built(monkeypatch)
    assert ds.sample_ids() == want and ds.image_paths() == paths


def test_bedlam_sample_ids_follow_kept_rows_of_several_files(hmr_paths, tmp_path, monkeypatch):
    """Two label files, a NaN row dropped from one: the ids name each file and its original row numbers."""
    data = dict(np.load(os.path.join(hmr_paths['bedlam']['label_root'], 'scene0.npz')))
    (tmp_path / 'labels').mkdir()
    np.savez(tmp_path / 'labels' / 'scene0.npz', **data)
    data['trans_cam'] = data['trans_cam'].copy()
    data['trans_cam'][1] = np.nan  # row 1 of scene1 is dropped when loading
    np.savez(tmp_path / 'labels' / 'scene1.npz', **data)
    ds = DATASETS.build(dict(hmr_dataset_cfgs(hmr_paths)['bedlam'], label_root=str(tmp_path / 'labels')))
    want = _ids_item_by_item(ds)
    assert len(want) == 7 and [i[-6:] for i in want] == ['000000', '000001', '000002', '000003',
                                                          '000000', '000002', '000003']
    paths = [ds.get_data_info(i)['img_path'] for i in range(len(ds))]
    _no_item_built(monkeypatch)
    assert ds.sample_ids() == want and ds.image_paths() == paths
    assert ds.source.sample_ids([6, -7]) == [want[6], want[0]]
    with pytest.raises(IndexError, match='out of range for 7'):
        ds.source.sample_ids([7])
