"""Photo pairs: the photo crop is the controls' crop camera, bad pairs are dropped by reason, captions.

The fixture photos are either coordinate ramps (each pixel stores its own photo coordinates, so any crop can be
checked against the projected label by hand) or renders of the label itself (hmr_fixtures: the body's silhouette
in the photo must cover the rendered control's).
"""
import json
import os.path as osp

import cv2
import numpy as np
import pytest
import torch

from posedreamer_mm.body.body_model import SMPLXBodyModel
from posedreamer_mm.body.sources.base import SMPLX_NEUTRAL_PELVIS_REST
from posedreamer_mm.generation import GeneratedDataReader
from posedreamer_mm.generation.photo_pairs import crop_photo
from posedreamer_mm.registry import BACKENDS, GENERATORS, POSE_SOURCES, TRANSFORMS

W, H, F = 240, 200, 300.0   # ramp photos: every coordinate fits a uint8 channel
CROP = 48


def _ramp(w=W, h=H):
    """(H, W, 3) uint8 photo whose pixel (i, j) holds (i, j, 128)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.arange(w)[None, :]
    img[..., 1] = np.arange(h)[:, None]
    img[..., 2] = 128
    return img


def _body(x, y, z, yaw=0.0):
    """Camera-frame parameters of an upright body whose pelvis is at (x, y, z) metres."""
    from scipy.spatial.transform import Rotation
    orient = (Rotation.from_euler('x', np.pi) * Rotation.from_euler('y', yaw)).as_rotvec()
    return dict(global_orient=orient, transl=np.array([x, y, z]) - np.asarray(SMPLX_NEUTRAL_PELVIS_REST))


def _write_bedlam_like(root, model, people, photos):
    """A BEDLAM-layout label npz (one row per person, ``gtkps`` = projected joints) and its ramp photos.

    Args:
        people: ``[(imgname, body dict)]``.
        photos: imgnames to write (a name left out is a missing photo).
    """
    n = len(people)
    pose_cam = np.zeros((n, 165), np.float32)
    transl = np.zeros((n, 3), np.float32)
    for r, (_, body) in enumerate(people):
        pose_cam[r, :3], transl[r] = body['global_orient'], body['transl']
    with torch.no_grad():
        joints = model(global_orient=torch.as_tensor(pose_cam[:, :3]), transl=torch.as_tensor(transl),
                       betas=torch.zeros(n, 10)).joints.numpy()
    uv = np.stack([F * joints[..., 0] / joints[..., 2] + W / 2, F * joints[..., 1] / joints[..., 2] + H / 2], -1)
    cam = np.tile(np.array([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1]], np.float32), (n, 1, 1))
    (root / 'labels').mkdir(parents=True)
    np.savez(root / 'labels' / 'scene.npz', imgname=np.array([name for name, _ in people]), pose_cam=pose_cam,
             shape=np.zeros((n, 11), np.float32), trans_cam=transl, cam_int=cam,
             gtkps=np.concatenate([uv, np.ones((n, uv.shape[1], 1))], -1).astype(np.float32))
    for name in photos:
        path = root / 'images' / 'scene' / 'png' / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(_ramp(), cv2.COLOR_RGB2BGR))
    return dict(type='BEDLAMHMRDataset', label_root=str(root / 'labels'), img_root=str(root / 'images')), joints


def _pipeline(check=None, crop=CROP):
    return [dict(type='BodyForward'), dict(type='BodyCropCamera', size=crop, margin=0.1),
            dict(type='PhotoPairCheck', **(check or dict(min_crop_px=60))), dict(type='LoadPhotoCrop'),
            dict(type='RenderControls', controls=[dict(type='PNCCRenderer')]), dict(type='CaptionFromTemplate')]


def _generate(model_dir, dataset, out, check=None, n=None, crop=CROP, stages=()):
    gen = GENERATORS.build(dict(
        type='DatasetGenerator', body_model=dict(type='SMPLXBodyModel', model_path=str(model_dir)),
        source=dict(type='HMRPhotoSource', dataset=dataset), pipeline=_pipeline(check, crop),
        backend=dict(type='PhotoCropBackend', batch_size=2), stages=list(stages),
        writer=dict(shard_size=4, image_format='png'), num_samples=n, seed=0, progress=False))
    return gen.run(str(out))


def test_crop_photo_is_the_crop_camera_map_enlarging_shrinking_and_outside():
    ramp = np.stack([*np.meshgrid(np.arange(400.0), np.arange(300.0)), np.zeros((300, 400))], -1).astype(np.float32)
    for box, size in (((10.25, 20.5, 40.0, 40.0), 64),      # enlarged 1.6x
                      ((30.0, 12.0, 210.0, 210.0), 70),      # shrunk 3x: block means
                      ((50.5, 7.0, 123.0, 123.0), 50)):      # shrunk 2.46x: k = 2, then bilinear
        out = crop_photo(ramp, box, size)
        i = np.arange(size)
        x, y, w, _ = box
        # The crop camera's map by hand: output pixel i shows photo coordinate x + i * w / size.
        np.testing.assert_allclose(out[5, 3:-3, 0], x + i[3:-3] * w / size, atol=1e-3)
        np.testing.assert_allclose(out[3:-3, 7, 1], y + i[3:-3] * w / size, atol=1e-3)
    out = crop_photo(_ramp(), (-20.0, -10.0, 40.0, 40.0), 40)   # the top-left quarter lies outside the photo
    assert (out[:9, :19] == 0).all() and out[12, 22, 2] == 128 and out[12, 22, 0] == 2 and out[12, 22, 1] == 2


def test_photo_pairs_align_with_the_projected_label(tmp_path, standin_model_dir):
    model = SMPLXBodyModel(standin_model_dir)
    people = [('a.png', _body(0.3, 0.1, 5.0, 0.4)), ('b.png', _body(-0.4, -0.1, 4.0, -0.7))]
    dataset, joints = _write_bedlam_like(tmp_path / 'bedlam', model, people, ['a.png', 'b.png'])
    summary = _generate(standin_model_dir, dataset, tmp_path / 'out')
    assert summary['written'] == 2 and summary['dropped'] == {}
    reader = GeneratedDataReader(tmp_path / 'out')
    for row in range(2):
        sample, img = reader.sample(row), reader.load_image(row)
        r = [name for name, _ in people].index(osp.basename(sample.meta['img_path']))
        # The photo coordinates of every joint, projected by hand with the photo's camera...
        uv = np.stack([F * joints[r, :, 0] / joints[r, :, 2] + W / 2, F * joints[r, :, 1] / joints[r, :, 2] + H / 2], 1)
        # ...are what the photo crop shows at the label's crop-frame joints (the ramp stores its coordinates).
        crop_uv = sample.joints_2d[:25]
        pix = np.round(crop_uv).astype(int)
        inside = (pix >= 0).all(1) & (pix < CROP).all(1)
        assert inside.sum() >= 20
        scale = CROP / sample.meta['crop_box'][2]
        shown = img[pix[inside, 1], pix[inside, 0], :2].astype(np.float64)
        # Rounding to a pixel moves the photo coordinate by up to 0.5 / scale, the uint8 ramp by 0.5.
        expect = uv[:25][inside] + (pix[inside] - crop_uv[inside]) / scale
        np.testing.assert_allclose(shown, expect, atol=1.01)
        # Control and photo at one camera: the PNCC silhouette lies where the label projects.
        pncc = cv2.imread(reader.control_path(row, 'pncc'))
        silhouette = cv2.dilate((pncc.sum(-1) > 0).astype(np.uint8), np.ones((3, 3), np.uint8))
        assert silhouette[pix[inside][:, 1], pix[inside][:, 0]].mean() >= 0.9
        assert reader.meta(row)['prompt'] == 'a photo of a person' and reader.meta(row)['backend'] == 'photo_crop'
        assert sample.meta['img_path'].endswith(people[r][0])


@pytest.mark.parametrize('kind', ['bedlam', 'posedreamer', 'generated'])
def test_the_photo_silhouette_is_the_controls(tmp_path, standin_model_dir, hmr_paths, kind):
    """hmr_fixtures' photos are renders of their labels (BEDLAM npz + png, PoseDreamer label files + jpg, a generated
    dataset): the body in the photo crop is the control's body."""
    from posedreamer_mm.testing.hmr_fixtures import hmr_dataset_cfgs
    dataset = hmr_dataset_cfgs(hmr_paths)[kind]
    summary = _generate(standin_model_dir, dataset, tmp_path / 'out', check=dict(min_crop_px=20), crop=96)
    assert summary['written'] == 4, summary
    reader = GeneratedDataReader(tmp_path / 'out')
    for row in range(len(reader)):
        img = reader.load_image(row).astype(int)
        control = cv2.imread(reader.control_path(row, 'pncc')).sum(-1) > 0
        background = img[2, 2]   # the render's flat background colour (the crop's corner is off the body)
        jpg = kind != 'bedlam'   # posedreamer and generated photos are JPEG: ringing around the body
        body = np.abs(img - background).sum(-1) > (30 if jpg else 6)
        bound = 0.95 if jpg else 0.99
        near_control = cv2.dilate(control.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        # Every control pixel is body in the photo, and the photo's body (edges blended by the resize) lies
        # within a pixel of the control's.
        assert body[control].mean() > bound and near_control[body].mean() > bound, row
        shifted = np.roll(control, 2, axis=1)   # a crop 2 pixels off fails
        assert body[shifted].mean() < bound - 0.02 or np.roll(near_control, 2, axis=1)[body].mean() < bound - 0.02


def test_bad_pairs_are_dropped_and_counted_by_reason(tmp_path, standin_model_dir):
    model = SMPLXBodyModel(standin_model_dir)
    people = [('ok.png', _body(0.0, 0.0, 5.0)),
              ('far.png', _body(0.0, 0.0, 14.0)),              # ~35 px tall: crop narrower than 60 px
              ('edge.png', _body(2.0, 0.0, 5.0)),              # pelvis on the photo's right edge
              ('two.png', _body(-0.15, 0.0, 5.0)), ('two.png', _body(0.2, 0.0, 5.5)),   # overlapping people
              ('gone.png', _body(0.0, 0.0, 5.0))]              # its photo is missing
    dataset, _ = _write_bedlam_like(tmp_path / 'bedlam', model, people, ['ok.png', 'far.png', 'edge.png', 'two.png'])
    summary = _generate(standin_model_dir, dataset, tmp_path / 'out')
    assert summary['written'] == 1
    assert summary['dropped'] == {'too_small': 1, 'truncated': 1, 'crowded': 2, 'photo_unreadable': 1}
    info = [json.load(open(osp.join(tmp_path / 'out', 'shards', s, 'shard.json'))) for s in ('000000', '000001')]
    assert sorted(d['reason'] for i in info for d in i['dropped']) == sorted(
        ['too_small', 'truncated', 'crowded', 'crowded', 'photo_unreadable'])
    # Thresholds are the boundary: allowing the overlap and any size keeps the crowd and the far person.
    summary = _generate(standin_model_dir, dataset, tmp_path / 'out2',
                        check=dict(min_crop_px=0, max_other_overlap=1.0, max_truncation=1.0, max_padding=1.0))
    assert summary['written'] == 5 and summary['dropped'] == {'photo_unreadable': 1}


def test_photo_source_knows_the_other_people_of_a_photo(tmp_path, standin_model_dir, hmr_paths):
    model = SMPLXBodyModel(standin_model_dir)
    people = [('two.png', _body(-0.15, 0.0, 5.0)), ('two.png', _body(0.2, 0.0, 5.5)), ('one.png', _body(0, 0, 5))]
    dataset, _ = _write_bedlam_like(tmp_path / 'bedlam', model, people, ['one.png', 'two.png'])
    source = POSE_SOURCES.build(dict(type='HMRPhotoSource', dataset=dataset))
    assert len(source) == 3
    a, b, c = source[0], source[1], source[2]
    assert a.meta['other_boxes'] == [b.meta['person_bbox']] and b.meta['other_boxes'] == [a.meta['person_bbox']]
    assert c.meta['other_boxes'] == [] and c.meta['img_path'].endswith('one.png')
    assert tuple(a.img_size) == (W, H) and np.allclose(a.focal, F)
    # COCO with NeuralAnnot fits: the image's file_name, the fit's camera, hands converted to the flat hand.
    coco = POSE_SOURCES.build(dict(type='HMRPhotoSource', dataset=dict(
        type='NeuralAnnotHMRDataset', dataset_name='coco', smplx_model_path=hmr_paths['smplx_model_dir'],
        **hmr_paths['coco'])))
    bodies = hmr_paths['bodies']['coco']
    assert len(coco) == 4 and coco[1].meta['img_path'] == osp.join(hmr_paths['coco']['img_root'], 'coco_000001.jpg')
    np.testing.assert_allclose(coco[1].left_hand_pose, bodies['left_hand_pose'][1], atol=1e-5)
    np.testing.assert_allclose(coco[1].transl, bodies['transl'][1], atol=1e-6)


def test_backend_and_steps_refuse_what_they_cannot_use(standin_model_dir):
    backend = BACKENDS.build(dict(type='PhotoCropBackend'))
    from posedreamer_mm.body.sample import BodySample
    sample = BodySample(id='x', img_size=(8, 8))
    with pytest.raises(ValueError, match="LoadPhotoCrop"):
        backend.generate([dict(seed=0, sample=sample)])
    with pytest.raises(ValueError, match=r'\(8, 8, 3\) uint8'):
        backend.generate([dict(seed=0, sample=sample, photo=np.zeros((8, 9, 3), np.uint8))])
    with pytest.raises(ValueError, match='max_padding'):
        TRANSFORMS.build(dict(type='PhotoPairCheck', max_padding=1.5))
    with pytest.raises(FileNotFoundError, match='nowhere'):
        TRANSFORMS.build(dict(type='CaptionImage', model_path='/nowhere'))


@pytest.fixture(scope='module')
def hmr_paths(standin_model_dir, tmp_path_factory):
    from posedreamer_mm.testing.hmr_fixtures import write_hmr_fixtures
    return write_hmr_fixtures(tmp_path_factory.mktemp('hmr_data'), num=4, smplx_model_dir=standin_model_dir)


def _tiny_captioner(folder):
    """A random BLIP captioner (vision width 32, one layer) and its processor, saved to ``folder``."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor
    words = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'a', 'photo', 'of', 'person', 'man', 'woman', 'standing',
             'sitting', 'the', 'in', 'park']
    folder.mkdir()
    (folder / 'vocab.txt').write_text('\n'.join(words) + '\n')
    tokenizer = BertTokenizer.from_pretrained(str(folder), model_max_length=32)  # BertTokenizer(vocab_file=) ignores it
    processor = BlipProcessor(image_processor=BlipImageProcessor(size=dict(height=32, width=32)), tokenizer=tokenizer)
    cfg = BlipConfig(vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                        num_attention_heads=2, image_size=32, patch_size=8),
                     text_config=dict(vocab_size=len(words), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=64, bos_token_id=2,
                                      sep_token_id=3, pad_token_id=0, eos_token_id=3), projection_dim=32)
    torch.manual_seed(0)
    BlipForConditionalGeneration(cfg).save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return set(words[5:])


def test_the_captioner_config_writes_the_model_caption_after_the_template(tmp_path, standin_model_dir):
    """configs/control/pairs/photo_bedlam_pncc-512_captioner.py (and its base) on a BEDLAM-like fixture."""
    from posedreamer_mm.apis.generate import run_generate
    vocab = _tiny_captioner(tmp_path / 'captioner')
    model = SMPLXBodyModel(standin_model_dir)
    _write_bedlam_like(tmp_path / 'bedlam', model, [('a.png', _body(0, 0, 5.0)), ('b.png', _body(0, 0, 14.0))],
                       ['a.png', 'b.png'])
    summary = run_generate([
        'configs/control/pairs/photo_bedlam_pncc-512_captioner.py', '--out', str(tmp_path / 'out'), '--num-workers',
        '0', '--no-progress', '--cfg-options', f'body_model_dir={standin_model_dir}', 'crop_size=48',
        'min_crop_px=60', f'bedlam_label_root={tmp_path}/bedlam/labels', f'bedlam_img_root={tmp_path}/bedlam/images',
        f'captioner_dir={tmp_path}/captioner'])
    assert summary['written'] == 1 and summary['dropped'] == {'too_small': 1}
    reader = GeneratedDataReader(tmp_path / 'out')
    meta = reader.meta(0)
    assert sorted(meta['controls']) == ['openpose', 'pncc']
    caption = meta['prompt_attributes']['caption']
    assert caption and set(caption.split()) <= vocab     # the random model's words, from the local vocabulary
    template = meta['prompt'][:-len(caption) - 2]
    assert template in ('a photo of a person', 'a photograph of a person', 'a realistic photo of a person')
    assert meta['prompt'] == f'{template}, {caption}'
    # Greedy decoding: the caption is the model's for this very image.
    captioner = TRANSFORMS.build(dict(type='CaptionImage', model_path=str(tmp_path / 'captioner'), text='a photo of',
                                      max_new_tokens=30))
    assert captioner.caption(reader.load_image(0)) == caption


def test_the_coco_config_pairs_neuralannot_people(tmp_path, standin_model_dir, hmr_paths):
    """configs/control/pairs/photo_coco-neuralannot_pncc-512.py on the COCO-format fixture (photos are renders)."""
    from posedreamer_mm.apis.generate import run_generate
    coco = hmr_paths['coco']
    summary = run_generate([
        'configs/control/pairs/photo_coco-neuralannot_pncc-512.py', '--out', str(tmp_path / 'out'), '--num-workers',
        '0', '--no-progress', '--cfg-options', f'body_model_dir={hmr_paths["smplx_model_dir"]}', 'crop_size=64',
        'min_crop_px=20', 'coco_root=/', f'coco_ann_file={coco["ann_file"]}', f'neuralannot_file={coco["smplx_file"]}',
        f'coco_img_dir={coco["img_root"]}'])
    assert summary['written'] == 4, summary
    reader = GeneratedDataReader(tmp_path / 'out')
    for row in range(4):
        img = reader.load_image(row).astype(int)
        control = cv2.imread(reader.control_path(row, 'pncc')).sum(-1) > 0
        body = np.abs(img - img[1, 1]).sum(-1) > 6
        assert body[control].mean() > 0.98, row   # the fit's hands and body are where the photo's are


def _check_case(crop_box=(10.0, 10.0, 80.0, 80.0), n_out=0, others=(), has=None, img_path='p.png'):
    """A results dict for PhotoPairCheck: a 100x100 photo (focal 100, centre 50), 100 vertices at z = 1 m of which
    ``n_out`` project left of the photo."""
    from posedreamer_mm.body.sample import BodySample
    u = np.r_[np.full(n_out, -0.6), np.linspace(0.0, 99.0, 100 - n_out)]     # photo x of each vertex
    vertices = np.stack([(u - 50) / 100, np.zeros(100), np.ones(100)], 1)
    meta = dict(img_path=img_path, crop_box=list(crop_box), other_boxes=[list(b) for b in others],
                source_camera=dict(focal=[100.0, 100.0], princpt=[50.0, 50.0], img_size=[100, 100]))
    if has is not None:
        meta['has_smplx'] = has
    return dict(sample=BodySample(id='s', meta=meta), vertices=vertices)


@pytest.mark.parametrize('case, kept, reason', [
    (dict(), True, None),
    (dict(img_path=''), False, 'photo_missing'),
    (dict(crop_box=(10.0, 10.0, 40.0, 40.0)), True, None),              # side == min_crop_px is enough
    (dict(crop_box=(10.0, 10.0, 39.9, 39.9)), False, 'too_small'),
    (dict(n_out=5), True, None),                                         # 5 % outside: at the bound
    (dict(n_out=6), False, 'truncated'),
    (dict(crop_box=(-10.5, -0.5, 100.0, 100.0)), True, None),            # 10 % of the square outside
    (dict(crop_box=(-11.5, -0.5, 100.0, 100.0)), False, 'padded'),
    (dict(crop_box=(-0.5, 19.5, 100.0, 100.0)), False, 'padded'),       # outside at the bottom
    (dict(others=[(80.0, 20.0, 100.0, 30.0)]), False, 'crowded'),         # half of the other box in the square
    (dict(others=[(89.0, 20.0, 99.0, 30.0)]), True, None),                # 1 of its 10 columns inside: 10 %
    (dict(others=[(88.9, 20.0, 98.9, 30.0)]), False, 'crowded'),
    (dict(others=[(40.0, 90.0, 50.0, 99.0)]), True, None),                # touching the square's bottom edge
    (dict(others=[(200.0, 0.0, 210.0, 10.0), (0.0, 0.0, 0.0, 0.0)]), True, None),   # far away, degenerate
    (dict(has=dict(hands=False)), True, None),
    (dict(has=dict(body_pose=False)), False, 'unlabelled_parts'),
])
def test_pair_check_boundaries_by_hand(case, kept, reason):
    check = TRANSFORMS.build(dict(type='PhotoPairCheck', min_crop_px=40, max_truncation=0.05, max_padding=0.1,
                                  max_other_overlap=0.1))
    results = _check_case(**case)
    out = check(results)
    assert (out is not None) == kept and results.get('drop_reason') == reason


def test_a_photo_of_another_size_than_its_label_is_dropped(tmp_path):
    from posedreamer_mm.body.sample import BodySample
    cv2.imwrite(str(tmp_path / 'p.png'), np.zeros((50, 60, 3), np.uint8))
    meta = dict(img_path=str(tmp_path / 'p.png'), crop_box=[0.0, 0.0, 40.0, 40.0],
                source_camera=dict(focal=[1.0, 1.0], princpt=[0.0, 0.0], img_size=[60, 50]))
    load = TRANSFORMS.build(dict(type='LoadPhotoCrop'))
    out = load(dict(sample=BodySample(id='s', img_size=(20, 20), meta=dict(meta))))
    assert out['photo'].shape == (20, 20, 3)
    meta['source_camera']['img_size'] = [50, 60]   # the label's camera is of a (W, H) = (50, 60) image
    results = dict(sample=BodySample(id='s', img_size=(20, 20), meta=meta))
    assert load(results) is None and results['drop_reason'] == 'photo_size_mismatch'


@pytest.mark.slow   # two worker start-ups; the generator's own spawn test runs by default
def test_spawn_workers_write_the_same_pairs(tmp_path, standin_model_dir):
    """Workers import only body/render/generation: the photo source, checks and captions must be registered there."""
    model = SMPLXBodyModel(standin_model_dir)
    people = [('a.png', _body(0.3, 0.1, 5.0, 0.4)), ('b.png', _body(0.0, 0.0, 14.0))]
    dataset, _ = _write_bedlam_like(tmp_path / 'bedlam', model, people, ['a.png', 'b.png'])
    runs = {}
    for workers in (0, 1):
        gen = GENERATORS.build(dict(
            type='DatasetGenerator', body_model=dict(type='SMPLXBodyModel', model_path=str(standin_model_dir)),
            source=dict(type='HMRPhotoSource', dataset=dataset), pipeline=_pipeline(),
            backend=dict(type='PhotoCropBackend'), writer=dict(shard_size=4, image_format='png'), seed=0,
            num_workers=workers, warm_start=False, progress=False))
        summary = gen.run(str(tmp_path / f'out{workers}'))
        assert summary['written'] == 1 and summary['dropped'] == {'too_small': 1} and summary['failed'] == {}
        reader = GeneratedDataReader(tmp_path / f'out{workers}')
        with open(reader.image_path(0), 'rb') as f, open(reader.control_path(0, 'pncc'), 'rb') as g:
            runs[workers] = (f.read(), g.read(), reader.meta(0)['prompt'])
    assert runs[0] == runs[1]


def test_photo_source_starts_without_building_a_label_and_a_bad_row_fails_its_sample(hmr_paths, tmp_path,
                                                                                      monkeypatch, standin_model_dir):
    """Over BEDLAM the source reads only the photo paths at start (no row becomes a sample); a row without a
    usable box fails its own sample, naming the row, and is left out of its neighbours' ``other_boxes``; the
    generator counts it as one failure and writes the rest."""
    from posedreamer_mm.body.sources.bedlam import BEDLAMSource
    from posedreamer_mm.registry import DATASETS
    data = dict(np.load(osp.join(hmr_paths['bedlam']['label_root'], 'scene0.npz')))
    data['imgname'] = np.array([data['imgname'][0]] * 3 + [data['imgname'][3]])  # rows 0-2 share one photo
    data['gtkps'][1] = np.nan  # row 1: no keypoints, no center/scale: no person box
    (tmp_path / 'labels').mkdir()
    np.savez(tmp_path / 'labels' / 'scene0.npz', **data)
    cfg = dict(type='BEDLAMHMRDataset', label_root=str(tmp_path / 'labels'), img_root=hmr_paths['bedlam']['img_root'])
    ds = DATASETS.build(cfg)
    box2 = ds.get_data_info(2)['bbox'].astype(np.float64).tolist()
    get = BEDLAMSource._get
    monkeypatch.setattr(BEDLAMSource, '_get', lambda *a: pytest.fail('a label was built at start'))
    source = POSE_SOURCES.build(dict(type='HMRPhotoSource', dataset=cfg))
    monkeypatch.setattr(BEDLAMSource, '_get', get)
    assert len(source) == 4 and not source.skipped
    assert source[0].meta['other_boxes'] == [box2]  # row 1 has no box: not an "other person"
    assert source[3].meta['other_boxes'] == [] and source[3].meta['img_path'].endswith('seq_000003_0000.png')
    with pytest.raises(ValueError, match=r'bedlam item 1: .*scene0.npz row 1: .*no person box'):
        source[1]
    summary = _generate(standin_model_dir, cfg, tmp_path / 'out', crop=96, check=dict(
        min_crop_px=20, max_other_overlap=1.0))
    assert summary['written'] == 3 and summary['failed'] == {'source:ValueError': 1}, summary
