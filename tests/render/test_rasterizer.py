"""The GL rasteriser against the numpy reference and known answers, on meshes built here (no body model)."""
import os

import cv2
import numpy as np
import pytest

from posedreamer_mm.render.rasterizer import MeshRasterizer, projection_coefficients, vertex_normals
from posedreamer_mm.testing.reference_rasterizer import box, quad, reference_rasterize, uv_sphere

FOCAL = np.array([300.0, 310.0])
PRINCPT = np.array([97.3, 71.6])
SIZE = (192, 144)  # (W, H), deliberately not square


@pytest.fixture(scope='module')
def rast():
    return MeshRasterizer()


def _project(v, focal=FOCAL, princpt=PRINCPT):
    v = np.asarray(v, np.float64)
    return np.stack([focal[0] * v[:, 0] / v[:, 2] + princpt[0], focal[1] * v[:, 1] / v[:, 2] + princpt[1]], 1)


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def _scene_two_boxes():
    v1, f1 = box(center=(-0.1, 0.05, 3.0), size=(0.5, 0.7, 0.4))
    v2, f2 = box(center=(0.2, -0.1, 2.6), size=(0.4, 0.3, 0.3))
    return np.concatenate([v1, v2]), np.concatenate([f1, f2 + len(v1)])


def _rotated_sphere(angle):
    v, f = uv_sphere(center=(0, 0, 0), radius=0.45, rings=24, segments=40)
    v = v * np.array([1.0, 1.4, 0.8], np.float32)  # an ellipsoid, so rotation changes the silhouette
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]) @ np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    return (v @ rot.T + np.array([0.05, -0.02, 3.2])).astype(np.float32), f


@pytest.mark.parametrize('scene', ['sphere', 'two_boxes', 'ellipsoid_a', 'ellipsoid_b'])
def test_mask_and_depth_match_reference(rast, scene):
    v, f = dict(sphere=lambda: uv_sphere(center=(0.1, 0.0, 3.0)), two_boxes=_scene_two_boxes,
                ellipsoid_a=lambda: _rotated_sphere(0.7), ellipsoid_b=lambda: _rotated_sphere(2.1))[scene]()
    out = rast.render(v, f, FOCAL, PRINCPT, SIZE, outputs=('mask', 'depth'))
    ref = reference_rasterize(v, f, FOCAL, PRINCPT, SIZE)
    assert out['mask'].shape == (SIZE[1], SIZE[0])
    assert _iou(out['mask'], ref['mask']) >= 0.99
    both = out['mask'] & ref['mask']
    assert np.abs(out['depth'][both] - ref['depth'][both]).max() < 1e-3
    assert (out['depth'][~out['mask']] == 0).all()
    # Independent check: every projected triangle filled by OpenCV (8 sub-pixel bits). OpenCV also fills
    # pixels its edges touch: a superset, about half a pixel wider all round than centre sampling.
    poly = np.round(_project(v)[f] * 256).astype(np.int32)
    fill = np.zeros((SIZE[1], SIZE[0]), np.uint8)
    for tri in poly:
        cv2.fillConvexPoly(fill, tri, 1, lineType=cv2.LINE_8, shift=8)
    fill = fill.astype(bool)
    assert (out['mask'] & ~fill).sum() == 0
    assert _iou(out['mask'], fill) >= 0.95


def test_projected_point_lands_in_rounded_pixel(rast):
    # Tiny squares (0.2 px wide) around points whose projections sit at fractional pixel positions.
    for u, v in [(10.3, 20.3), (10.7, 20.7), (150.45, 5.55), (0.2, 143.4)]:
        z = 2.0
        centre = ((u - PRINCPT[0]) * z / FOCAL[0], (v - PRINCPT[1]) * z / FOCAL[1], z)
        verts, faces = quad(center=centre, size=(0.2 * z / FOCAL[0], 0.2 * z / FOCAL[1]))
        mask = rast.render(verts, faces, FOCAL, PRINCPT, SIZE, outputs=('mask',))['mask']
        if mask.sum() == 0:
            # A 0.2 px square need not contain a pixel centre; a 1 px one always covers exactly round().
            verts, faces = quad(center=centre, size=(0.98 * z / FOCAL[0], 0.98 * z / FOCAL[1]))
            mask = rast.render(verts, faces, FOCAL, PRINCPT, SIZE, outputs=('mask',))['mask']
        rows, cols = np.nonzero(mask)
        assert list(zip(rows, cols)) == [(round(v), round(u))], (u, v, list(zip(rows, cols)))


def test_image_is_upright_and_not_mirrored(rast):
    # +x is image right, -y (up in the OpenCV frame) is image top.
    verts, faces = quad(center=(0.5, -0.4, 3.0), size=(0.1, 0.1))
    rows, cols = np.nonzero(rast.render(verts, faces, FOCAL, PRINCPT, SIZE, outputs=('mask',))['mask'])
    assert cols.min() > PRINCPT[0] and rows.max() < PRINCPT[1]


@pytest.mark.parametrize('near_first', [True, False])
def test_nearer_quad_wins(rast, near_first):
    near_v, near_f = quad(center=(0.0, 0.0, 2.0), size=(0.4, 0.4))
    far_v, far_f = quad(center=(0.1, 0.1, 2.5), size=(0.6, 0.6))
    parts = [(near_v, near_f, (1.0, 0.0, 0.0)), (far_v, far_f, (0.0, 1.0, 0.0))]
    if not near_first:
        parts = parts[::-1]
    v = np.concatenate([p[0] for p in parts])
    f = np.concatenate([parts[0][1], parts[1][1] + 4])
    col = np.concatenate([np.tile(p[2], (4, 1)) for p in parts])
    out = rast.render(v, f, FOCAL, PRINCPT, SIZE, colors=col, outputs=('color', 'depth'))
    centre = (round(PRINCPT[1]), round(PRINCPT[0]))  # inside both quads
    assert tuple(out['color'][centre]) == (255, 0, 0)
    assert out['depth'][centre] == pytest.approx(2.0, abs=1e-3)
    far_only = _project(np.array([[0.35, 0.35, 2.5]]))[0]
    assert tuple(out['color'][round(far_only[1]), round(far_only[0])]) == (0, 255, 0)


def test_depth_of_planes(rast):
    verts, faces = quad(center=(0.0, 0.0, 2.5), size=(3.0, 3.0))
    out = rast.render(verts, faces, FOCAL, PRINCPT, SIZE, outputs=('mask', 'depth'))
    assert out['mask'].all()
    assert np.abs(out['depth'] - 2.5).max() < 1e-3
    # A tilted plane z = 2 + 0.5 y: the ray of pixel (u, v) meets it at z = 2 / (1 - 0.5 (v - cy) / fy).
    tilted = np.array([[-3, -1, 1.5], [3, -1, 1.5], [3, 1, 2.5], [-3, 1, 2.5]], np.float32)
    out = rast.render(tilted, faces, FOCAL, PRINCPT, SIZE, outputs=('mask', 'depth'))
    rows = np.arange(SIZE[1])[:, None].repeat(SIZE[0], 1)
    expect = 2.0 / (1 - 0.5 * (rows - PRINCPT[1]) / FOCAL[1])
    assert out['mask'].all()
    assert np.abs(out['depth'] - expect).max() < 1e-3


def test_flat_colour_has_no_blended_pixels(rast):
    v, f = uv_sphere(center=(0.0, 0.1, 2.0), radius=0.3)
    colour = np.array([0.2, 0.6, 0.8], np.float32)
    img = rast.render(v, f, FOCAL, PRINCPT, SIZE, colors=np.tile(colour, (len(v), 1)), outputs=('color',))['color']
    values = {tuple(c) for c in img.reshape(-1, 3)}
    assert values == {(0, 0, 0), tuple(np.round(colour * 255).astype(int))}


def test_vertex_colour_at_projected_pixel(rast):
    v, f = uv_sphere(center=(0.0, 0.0, 3.0), radius=0.6)
    colors = (v - v.min(0)) / (v.max(0) - v.min(0))  # smooth, PNCC-like
    out = rast.render(v, f, FOCAL, PRINCPT, SIZE, colors=colors, outputs=('color', 'mask', 'depth'))
    uv = _project(v)
    px = np.round(uv).astype(int)
    inner = cv2.erode(out['mask'].astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    ok = (px[:, 0] >= 0) & (px[:, 0] < SIZE[0]) & (px[:, 1] >= 0) & (px[:, 1] < SIZE[1])
    ok[ok] &= inner[px[ok, 1], px[ok, 0]]
    ok[ok] &= np.abs(out['depth'][px[ok, 1], px[ok, 0]] - v[ok, 2]) < 0.01  # visible, not the far side
    assert ok.sum() > 300
    got = out['color'][px[ok, 1], px[ok, 0]] / 255.0
    # Half a pixel of colour gradient: the sphere spans ~1 colour unit over ~120 px.
    assert np.abs(got - colors[ok]).max() < 0.03


def test_colours_match_reference_including_silhouette(rast):
    v, f = _rotated_sphere(0.4)
    colors = (v - v.min(0)) / (v.max(0) - v.min(0))
    out = rast.render(v, f, FOCAL, PRINCPT, SIZE, colors=colors, outputs=('color', 'mask'))
    ref = reference_rasterize(v, f, FOCAL, PRINCPT, SIZE, colors=colors)
    both = out['mask'] & ref['mask']
    err = np.abs(out['color'] / 255.0 - ref['color']).max(-1)
    assert np.quantile(err[both], 0.99) < 0.01
    edge = both & ~cv2.erode(out['mask'].astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert edge.sum() > 50 and np.median(err[edge]) < 0.01  # silhouette pixels are not blended with black


def test_normals_face_camera(rast):
    c = np.array([0.0, 0.0, 3.0])
    v, f = uv_sphere(center=c, radius=0.6)
    out = rast.render(v, f, FOCAL, PRINCPT, SIZE, outputs=('mask', 'depth', 'normal'))
    m = cv2.erode(out['mask'].astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    rows, cols = np.nonzero(m)
    z = out['depth'][m]
    p = np.stack([(cols - PRINCPT[0]) * z / FOCAL[0], (rows - PRINCPT[1]) * z / FOCAL[1], z], 1)
    expect = (p - c) / np.linalg.norm(p - c, axis=1, keepdims=True)
    assert np.abs(out['normal'][m] - expect).max() < 0.05
    assert np.allclose(np.linalg.norm(out['normal'][m], axis=1), 1, atol=1e-3)
    # Inward winding gives the same normals: they are turned to the visible side.
    flipped = rast.render(v, f[:, ::-1], FOCAL, PRINCPT, SIZE, outputs=('normal',))['normal']
    assert np.abs(flipped[m] - out['normal'][m]).max() < 1e-4


def test_single_triangle_drawn_with_either_winding(rast):
    tri = np.array([[-0.3, -0.3, 2.0], [0.3, -0.3, 2.0], [0.0, 0.3, 2.0]], np.float32)
    for faces in ([[0, 1, 2]], [[0, 2, 1]]):
        mask = rast.render(tri, np.array(faces), FOCAL, PRINCPT, SIZE, outputs=('mask',))['mask']
        assert mask.sum() > 1000


def test_batch_equals_single_and_per_sample_cameras(rast):
    v, f = _rotated_sphere(1.0)
    batch = np.stack([v, v + np.array([0.2, 0, 0.5], np.float32)])
    focals = np.array([FOCAL, FOCAL * 1.3])
    out = rast.render(batch, f, focals, PRINCPT, SIZE, outputs=('color', 'mask', 'depth'))
    assert out['color'].shape == (2, SIZE[1], SIZE[0], 3)
    for i in range(2):
        single = rast.render(batch[i], f, focals[i], PRINCPT, SIZE, outputs=('color', 'mask', 'depth'))
        for k in single:
            np.testing.assert_array_equal(out[k][i], single[k])


def test_projection_coefficients_reproduce_pinhole():
    (ax, bx, ay, by), (cz, dz) = projection_coefficients(FOCAL, PRINCPT, SIZE, 0.1, 10.0)
    p = np.array([0.3, -0.2, 2.0])
    u, v = _project(p[None])[0]
    x_win = ((ax * p[0] + bx * p[2]) / p[2] + 1) * SIZE[0] / 2
    y_win = ((ay * p[1] + by * p[2]) / p[2] + 1) * SIZE[1] / 2
    assert (x_win, y_win) == pytest.approx((u + 0.5, v + 0.5))
    assert (cz * 0.1 + dz) / 0.1 == pytest.approx(-1) and (cz * 10 + dz) / 10 == pytest.approx(1)


def test_vertex_normals_of_sphere_point_outwards():
    v, f = uv_sphere(center=(0, 0, 0), radius=1.0)
    n = vertex_normals(v, f)
    assert np.abs(n - v / np.linalg.norm(v, axis=1, keepdims=True)).max() < 0.02


def test_framebuffer_cache_is_bounded_and_releases_what_it_drops():
    # size=None renders at each input image's size: many sizes must not keep a framebuffer each forever.
    rast = MeshRasterizer(max_framebuffers=4)
    v, f = uv_sphere(center=(0.1, 0.0, 3.0))
    first = rast.render(v, f, FOCAL, PRINCPT, SIZE, outputs=('mask', 'depth'))
    fbo, attachments = rast._fbos[(SIZE, False)]
    for k in range(1, 7):
        rast.render(v, f, FOCAL, PRINCPT, (SIZE[0] + 8 * k, SIZE[1] + 4 * k), outputs=('mask', 'depth'))
        assert len(rast._fbos) <= 4
    assert (SIZE, False) not in rast._fbos
    assert all(type(o.mglo).__name__ == 'InvalidObject' for o in (fbo, *attachments))  # released, not leaked
    again = rast.render(v, f, FOCAL, PRINCPT, SIZE, outputs=('mask', 'depth'))
    np.testing.assert_array_equal(again['depth'], first['depth'])
    rast.release()
    assert not rast._fbos


def test_egl_devices_probe_without_keeping_contexts_or_breaking_rendering(rast):
    from posedreamer_mm.render import egl
    v, f = _scene_two_boxes()
    before = rast.render(v, f, FOCAL, PRINCPT, SIZE, outputs=('mask', 'depth'))
    contexts = dict(egl._CONTEXTS)
    devices = egl.egl_devices()
    assert devices and [d['index'] for d in devices] == list(range(len(devices)))
    assert egl._CONTEXTS == contexts  # probing opened and released a context per device, kept none
    for d in devices:
        assert {'renderer', 'is_gpu', 'software', 'cuda_device'} <= set(d)
        if d['software']:
            assert not d['is_gpu'] and d['cuda_device'] is None
    # The probe made its own context current; rendering must still go to the rasteriser's context.
    after = rast.render(v, f, FOCAL, PRINCPT, SIZE, outputs=('mask', 'depth'))
    np.testing.assert_array_equal(after['depth'], before['depth'])


def test_device_index_forms():
    from posedreamer_mm.render import egl
    if not os.environ.get('POSEDREAMER_EGL_DEVICE'):
        assert egl.resolve_device_index(None) == 0  # glcontext's default display is device 0
    assert egl.resolve_device_index('1') == 1
    assert egl.get_context(None) is egl.get_context(egl.resolve_device_index(None))  # one context, not two
    if not any(d['cuda_device'] is not None for d in egl.egl_devices()):
        with pytest.raises(RuntimeError, match='EGL_NV_device_cuda'):
            egl.resolve_device_index('cuda:0')
