"""HMR inference: model from config + checkpoint, image + boxes -> the same predictions as the test pipeline."""
import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.registry import DefaultScope

from posedreamer_mm.apis import inference_hmr, init_hmr_model
from posedreamer_mm.apis.inference import default_camera
from posedreamer_mm.registry import DATASETS, MODELS
from tests.configs.test_hmr_configs import ROOT, tiny_config, write_config_fixtures


@pytest.fixture(scope='module')
def setup(tmp_path_factory, standin_model_dir):
    root = tmp_path_factory.mktemp('hmr_infer')
    paths = write_config_fixtures(root / 'data', standin_model_dir)
    cfg = tiny_config(ROOT / 'configs' / 'hmr_vitl_posedreamer_bedlam.py', paths, standin_model_dir)
    config = root / 'hmr_tiny.py'
    cfg.dump(str(config))
    torch.manual_seed(1)
    with DefaultScope.overwrite_default_scope('posedreamer_mm'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    with torch.no_grad():
        model.head.dec_pose.bias.normal_(0, 0.3)  # a non-rest body, as a trained model gives
        model.head.dec_cam.bias.copy_(torch.tensor([0.2, 0.05, -0.03]))
    ckpt = root / 'tiny.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    return dict(cfg=cfg, config=config, ckpt=ckpt, model=model, paths=paths)


def test_init_loads_the_checkpoint(setup):
    model = init_hmr_model(setup['config'], setup['ckpt'])
    assert not model.training and model.cfg is not None
    for k, v in setup['model'].state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, msg=k)


def test_inference_equals_the_test_pipeline(setup):
    """Image + box + camera through inference_hmr == the dataset's test pipeline and test_step."""
    cfg, model = setup['cfg'], init_hmr_model(setup['config'], setup['ckpt'])
    with DefaultScope.overwrite_default_scope('posedreamer_mm'):
        val = DATASETS.build(cfg.val_dataloader.dataset)
        ref = model.test_step(pseudo_collate([val[0], val[1]]))
    infos = [val.get_data_info(i) for i in range(2)]
    for info, r in zip(infos, ref):
        out = inference_hmr(model, info['img_path'], bboxes=[info['bbox']], focal=info['focal'],
                            princpt=info['princpt'])
        assert len(out) == 1
        for key in ('vertices', 'smplx_body_pose', 'smplx_global_orient', 'cam_t', 'keypoints'):
            np.testing.assert_allclose(out[0].pred_instances[key], r.pred_instances[key], atol=1e-4, err_msg=key)


def test_several_boxes_default_camera_and_arrays(setup):
    model = init_hmr_model(setup['config'], setup['ckpt'])
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (120, 160, 3), np.uint8)
    boxes = np.array([[10, 10, 60, 110], [80, 20, 150, 115], [0, 0, 159, 119]], np.float32)
    out = inference_hmr(model, img, bboxes=boxes, batch_size=2)
    assert len(out) == 3
    focal, princpt = default_camera((160, 120))
    np.testing.assert_allclose(focal, [200.0, 200.0])
    np.testing.assert_allclose(princpt, [79.5, 59.5])
    for box, r in zip(boxes, out):
        np.testing.assert_allclose(r.metainfo['focal'], focal)
        # The body sits in its own box: its origin projects inside the (padded) box.
        t = r.pred_instances['cam_t'][0]
        u, v = focal * t[:2] / t[2] + princpt
        pad = (box[2:] - box[:2]) * 0.5
        assert box[0] - pad[0] < u < box[2] + pad[0] and box[1] - pad[1] < v < box[3] + pad[1]
    single = inference_hmr(model, img)  # no boxes: the whole image
    np.testing.assert_allclose(single[0].pred_instances['vertices'], out[2].pred_instances['vertices'], atol=1e-4)


def test_bad_inputs_are_named(setup, tmp_path):
    model = init_hmr_model(setup['config'], setup['ckpt'])
    with pytest.raises(FileNotFoundError, match='nope.jpg'):
        inference_hmr(model, str(tmp_path / 'nope.jpg'))
    bad = tmp_path / 'bad.jpg'
    bad.write_bytes(b'not an image')
    with pytest.raises(FileNotFoundError, match='bad.jpg'):
        inference_hmr(model, str(bad))
    with pytest.raises(ValueError, match=r'bboxes must be \(N, 4\)'):
        inference_hmr(model, np.zeros((50, 40, 3), np.uint8), bboxes=[1, 2, 3])
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        init_hmr_model(setup['config'], tmp_path / 'missing.pth')
    state = dict(setup['model'].state_dict())
    state['head.dec_pose.weight'] = state['head.dec_pose.weight'][:, :16]  # another architecture's weights
    other = tmp_path / 'other.pth'
    torch.save({'state_dict': state}, other)
    with pytest.raises(RuntimeError, match=r'other.pth does not fit the HMR model.*head.dec_pose.weight: checkpoint'):
        init_hmr_model(setup['config'], other)
