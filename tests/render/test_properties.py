"""Property-based tests (hypothesis) of the render layer over random cameras, bodies and planes.

Every random camera is either refused with a ``GeometryError`` naming the field, or rendered to an image that
agrees with the numpy reference rasteriser on the same numbers; no input gives a silent blank or garbage image.
"""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from posedreamer_mm.render import DepthRenderer, PNCCRenderer
from posedreamer_mm.render.geometry import GeometryError, check_render_geometry, validate_camera
from posedreamer_mm.render.rasterizer import MeshRasterizer
from posedreamer_mm.render.visibility import coco17_keypoints
from posedreamer_mm.testing.reference_rasterizer import reference_rasterize, uv_sphere

SETTINGS = settings(max_examples=30, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
VERTS, FACES = uv_sphere(center=(0.0, 0.0, 0.0), radius=0.4, rings=10, segments=16)
any_float = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, -1.0, 1e-300, 1e300])


@pytest.fixture(scope='module')
def rast():
    return MeshRasterizer()


@SETTINGS
@given(focal=st.tuples(any_float, any_float), princpt=st.tuples(any_float, any_float),
       size=st.tuples(st.integers(-5, 20000), st.integers(-5, 20000)))
def test_a_camera_is_valid_exactly_when_its_definition_says(focal, princpt, size):
    valid = (all(math.isfinite(f) and f > 0 for f in focal) and all(math.isfinite(c) for c in princpt)
             and all(1 <= s <= 16384 for s in size))
    if valid:
        cam = validate_camera(focal, princpt, size)
        assert cam.focal.tolist() == list(focal) and cam.img_size.tolist() == list(size)
    else:
        with pytest.raises(GeometryError) as info:
            validate_camera(focal, princpt, size)
        assert info.value.reason == 'camera'


@SETTINGS
@given(depth=st.floats(0.6, 60.0), offset=st.tuples(st.floats(-0.5, 0.5), st.floats(-0.5, 0.5)),
       focal=st.tuples(st.floats(40.0, 400.0), st.floats(40.0, 400.0)),
       princpt=st.tuples(st.floats(0.0, 48.0), st.floats(0.0, 40.0)), near=st.floats(0.01, 0.15))
def test_any_valid_camera_renders_what_the_reference_rasteriser_draws(rast, depth, offset, focal, princpt, near):
    verts = VERTS + np.array([offset[0] * depth, offset[1] * depth, depth], np.float32)
    size = (48, 40)
    geo = check_render_geometry(verts, focal, princpt, size, near=near, far=100.0)
    assert geo.near < verts[:, 2].min() and geo.far > verts[:, 2].max()  # planes follow the body
    out = rast.render(verts, FACES, focal, princpt, size, outputs=('mask', 'depth'), planes=(geo.near, geo.far))
    ref = reference_rasterize(verts, FACES, focal, princpt, size, near=geo.near)
    differ = out['mask'] != ref['mask']
    # Only pixels whose centre lies on a triangle edge may differ (GL's tie rule vs the reference's inclusive one).
    assert differ.sum() <= max(2, 0.03 * ref['mask'].sum()), (differ.sum(), ref['mask'].sum())
    both = out['mask'] & ref['mask']
    # Depth where both agree the surface is, away from the silhouette (where the two may pick another triangle).
    pad = np.pad(both, 1)
    both = both & pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    np.testing.assert_allclose(out['depth'][both], ref['depth'][both], rtol=1e-4)


@SETTINGS
@given(shift=st.floats(-5.0, 200.0), far=st.floats(5.0, 150.0))
def test_a_body_is_rendered_only_when_it_lies_strictly_between_the_limits(shift, far):
    verts = VERTS + np.array([0.0, 0.0, shift], np.float32)
    zmin, zmax = float(verts[:, 2].min()), float(verts[:, 2].max())
    renderer = DepthRenderer(size=24, near=0.01, far=far)
    if zmin > 0.01 and zmax < far:
        out = renderer.render(verts, FACES, 300.0, (24.0, 24.0), (48, 48))
        assert out['mask'].any() and (out['depth'][out['mask']] >= zmin - 1e-3).all()
    else:
        with pytest.raises(GeometryError) as info:
            renderer.render(verts, FACES, 300.0, (24.0, 24.0), (48, 48))
        assert info.value.reason == ('near_plane' if not zmin > 0.01 else 'far_plane')


@SETTINGS
@given(depth=st.floats(1.0, 10.0), px=st.tuples(st.floats(-30, 80), st.floats(-30, 80)))
def test_coco_flags_are_consistent_with_the_rendered_depth(depth, px):
    # A joint exactly on the sphere's centre line: visible iff inside the image and the surface in front of it
    # is no more than the margin nearer; with a depth map of the sphere, centre joints are occluded.
    size = (48, 48)
    verts = VERTS + np.array([0.0, 0.0, depth], np.float32)
    out = PNCCRenderer(colors=np.ones_like(VERTS), size=None).render(verts, FACES, 100.0, (24.0, 24.0), size)
    joints_3d = np.zeros((127, 3))
    joints_2d = np.zeros((127, 2))
    joints_3d[:] = [0.0, 0.0, depth]
    joints_2d[:] = 24.0
    kp = coco17_keypoints(joints_2d, joints_3d, size, out['depth'])
    assert (kp[:, 2] == 1.0).all()  # 0.4 m of sphere in front: beyond both margins
    joints_2d[:] = px
    kp = coco17_keypoints(joints_2d, joints_3d, size, None)
    inside = all(-0.5 <= c < s - 0.5 for c, s in zip(px, size))
    assert (kp[:, 2] == (2.0 if inside else 0.0)).all()
