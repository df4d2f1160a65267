"""The COCO export's box, silhouette and area against independent facts: the sample's own projected box clipped by
hand, and a point-in-triangle rasterisation of the label mesh written here (pixel centres, docs/rendering.md)."""
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from posedreamer_mm.body.body_model import SMPLXBodyModel
from posedreamer_mm.body.camera import upright_global_orient
from posedreamer_mm.body.sample import BodySample
from posedreamer_mm.generation.coco_export import coco_keypoints_dict

W, H = 96, 128


def _covered(uv: np.ndarray, faces: np.ndarray, w: int, h: int) -> np.ndarray:
    """``(H, W)`` pixels whose centre lies inside a projected triangle (brute force, no GL)."""
    out = np.zeros((h, w), bool)
    tri = uv[faces]                                                       # (F, 3, 2)
    lo = np.floor(tri.min(1)).astype(int)
    hi = np.ceil(tri.max(1)).astype(int)
    keep = (hi[:, 0] >= 0) & (lo[:, 0] < w) & (hi[:, 1] >= 0) & (lo[:, 1] < h)
    for (a, b, c), (x0, y0), (x1, y1) in zip(tri[keep], lo[keep], hi[keep]):
        xs, ys = np.meshgrid(np.arange(max(x0, 0), min(x1, w - 1) + 1), np.arange(max(y0, 0), min(y1, h - 1) + 1))
        p = np.stack([xs, ys], -1).astype(np.float64)

        def edge(p0, p1):
            return (p1[0] - p0[0]) * (p[..., 1] - p0[1]) - (p1[1] - p0[1]) * (p[..., 0] - p0[0])
        e0, e1, e2 = edge(a, b), edge(b, c), edge(c, a)
        inside = ((e0 >= 0) & (e1 >= 0) & (e2 >= 0)) | ((e0 <= 0) & (e1 <= 0) & (e2 <= 0))
        out[ys[inside], xs[inside]] = True
    return out


class _Reader:
    """What the export reads of a GeneratedDataReader, for hand-built samples."""
    root, manifest = '/nowhere', {}

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def sample(self, i):
        return self.samples[i]

    def meta(self, i):
        return dict(image=f'images/{i}.jpg')


@pytest.fixture(scope='module')
def body(standin_model_dir):
    return SMPLXBodyModel(standin_model_dir)


def _sample(body, sample_id: str, transl, princpt) -> tuple[BodySample, np.ndarray]:
    """A standing body and its projected vertices; ``bbox`` is the projected mesh's box, as the generator stores."""
    s = BodySample(id=sample_id, global_orient=upright_global_orient(0.35).numpy(), transl=np.asarray(transl),
                   focal=np.array([120.0, 120.0]), princpt=np.asarray(princpt), img_size=np.array([W, H]))
    with torch.no_grad():
        v = body(global_orient=torch.as_tensor(s.global_orient)[None],
                 transl=torch.as_tensor(s.transl)[None]).vertices[0].numpy().astype(np.float64)
    uv = v[:, :2] / v[:, 2:] * s.focal + s.princpt
    lo, hi = uv.min(0), uv.max(0)
    s.bbox = np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]], np.float32)
    kp = np.zeros((17, 3), np.float32)
    kp[:, :2] = uv[:17]
    kp[:, 2] = 2
    kp[3, 2] = 0   # outside the image: COCO stores x = y = 0
    kp[4, 2] = 1   # occluded by the body
    s.keypoints_coco17 = kp
    return s, uv


def test_bbox_and_area_are_the_samples_clipped_box_and_its_silhouette(body, standin_model_dir):
    inside, uv_in = _sample(body, 'inside', (0.05, 0.1, 3.5), (50.0, 60.0))       # box well off the origin
    out, uv_out = _sample(body, 'out', (0.0, 0.45, 2.2), (10.0, 70.0))         # sticks out left and bottom
    x, y, w, h = (float(v) for v in inside.bbox)
    assert x > 5 and y > 5 and x + w < W - 5 and y + h < H - 5
    ox, oy, ow, oh = (float(v) for v in out.bbox)
    assert ox < 0 and oy > 0 and oy + oh > H and ox + ow < W
    top, uv_top = _sample(body, 'top', (0.1, -0.3, 2.2), (80.0, 40.0))           # sticks out top and right
    tx, ty, tw, th = (float(v) for v in top.bbox)
    assert ty < 0 and tx > 0 and tx + tw > W and ty + th < H
    coco = coco_keypoints_dict(_Reader([inside, out, top]),
                               dict(type='SMPLXBodyModel', model_path=str(standin_model_dir)))
    a_in, a_out, a_top = coco['annotations']
    np.testing.assert_allclose(a_in['bbox'], [x, y, w, h], atol=1e-3)
    np.testing.assert_allclose(a_out['bbox'], [0.0, oy, ox + ow, H - oy], atol=1e-3)   # clipped by hand
    np.testing.assert_allclose(a_top['bbox'], [tx, 0.0, W - tx, ty + th], atol=1e-3)
    for ann, uv, sample in ((a_in, uv_in, inside), (a_out, uv_out, out), (a_top, uv_top, top)):
        reference = _covered(uv, body.faces, W, H)
        mask = mask_utils.decode(ann['segmentation']).astype(bool)
        assert mask.shape == (H, W) and ann['segmentation']['size'] == [H, W]
        assert ann['area'] == mask.sum() == mask_utils.area(ann['segmentation'])
        # GL and this brute-force test may differ on pixel centres lying exactly on an edge only.
        assert np.logical_xor(mask, reference).sum() <= 0.01 * reference.sum(), (ann['area'], reference.sum())
        assert ann['area'] < 0.6 * ann['bbox'][2] * ann['bbox'][3]   # a person is not its box
        kp = np.reshape(ann['keypoints'], (17, 3))
        assert (kp[3] == 0).all() and ann['num_keypoints'] == 16 and kp[4, 2] == 1   # occluded (1) is labelled
        np.testing.assert_allclose(kp[0, :2], sample.keypoints_coco17[0, :2], atol=1e-3)
    assert [im['sample_id'] for im in coco['images']] == ['inside', 'out', 'top']
    assert [im['file_name'] for im in coco['images']] == ['images/0.jpg', 'images/1.jpg', 'images/2.jpg']
    assert coco['images'][0]['width'] == W and coco['images'][0]['height'] == H


def test_a_manifest_without_a_body_model_is_named():
    from posedreamer_mm.generation.coco_export import manifest_body_model
    with pytest.raises(KeyError, match='manifest.json records no config.body_model'):
        manifest_body_model(_Reader([]))


def test_a_label_that_cannot_be_rendered_is_named(body, standin_model_dir):
    from posedreamer_mm.render.geometry import GeometryError
    behind, _ = _sample(body, 'behind_the_camera', (0.0, 0.0, 3.0), (50.0, 60.0))
    behind.transl = np.array([0.0, 0.0, -3.0], np.float32)
    with pytest.raises(GeometryError, match="sample 'behind_the_camera': its label cannot be rendered"):
        coco_keypoints_dict(_Reader([behind]), dict(type='SMPLXBodyModel', model_path=str(standin_model_dir)))


#: COCO's person category as published in person_keypoints_*.json (names in order, 1-based skeleton).
COCO_NAMES = ['nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder', 'right_shoulder',
              'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist', 'left_hip', 'right_hip', 'left_knee',
              'right_knee', 'left_ankle', 'right_ankle']
COCO_SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9], [8, 10],
                 [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]]


def test_the_export_is_a_coco_keypoints_file_pycocotools_evaluates(body, standin_model_dir):
    """COCO's structure, checked by COCO's own tools: the body model comes from the manifest, images and
    annotations pair by id, the person category is COCO's, and perfect predictions score AP 1 (a crowd flag, a
    wrong category or image id would make COCOeval ignore or miss them)."""
    import contextlib
    import copy
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    samples = [_sample(body, f's{i}', (0.1 * i - 0.1, 0.1, 3.0 + 0.3 * i), (48.0, 64.0))[0] for i in range(3)]
    reader = _Reader(samples)
    reader.manifest = dict(config=dict(body_model=dict(type='SMPLXBodyModel', model_path=str(standin_model_dir))))
    coco = coco_keypoints_dict(reader)                                     # body model from the manifest
    (cat,) = coco['categories']
    assert cat['id'] == 1 and cat['name'] == 'person' and cat['keypoints'] == COCO_NAMES
    assert sorted(map(sorted, cat['skeleton'])) == sorted(map(sorted, COCO_SKELETON))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(coco)
        gt.createIndex()
        for sample in samples:
            (img_id,) = [im['id'] for im in coco['images'] if im['sample_id'] == sample.id]
            (ann,) = gt.loadAnns(gt.getAnnIds(imgIds=[img_id]))
            assert ann['iscrowd'] == 0 and ann['category_id'] == 1
            np.testing.assert_allclose(np.reshape(ann['keypoints'], (17, 3))[0, :2], sample.keypoints_coco17[0, :2],
                                       atol=1e-3)
        dts = [dict(image_id=a['image_id'], category_id=1, keypoints=a['keypoints'], score=1.0)
               for a in coco['annotations']]
        ev = COCOeval(gt, gt.loadRes(dts), 'keypoints')
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)
    assert len({a['id'] for a in coco['annotations']}) == len({im['id'] for im in coco['images']}) == 3
