"""The pre-backend transforms on their own: one body model per gender (the body layer's gendered set), the
render's near clip plane reaching the COCO-17 visibility."""
import numpy as np
import pytest
import torch

from posedreamer_mm.body.body_model import BodyModelFileError, SMPLXBodyModel
from posedreamer_mm.body.gendered import GenderedSMPLXBodyModel
from posedreamer_mm.body.sample import BodySample
from posedreamer_mm.generation.transforms import (
    BodyCropCamera,
    BodyForward,
    COCO17Visibility,
    RenderControls,
    build_renderer,
)
from posedreamer_mm.registry import POSE_SOURCES
from posedreamer_mm.render.base import project
from posedreamer_mm.render.visibility import SMPLX_TO_COCO17, coco17_keypoints

SOURCE = dict(type='AugmentedSource', source=dict(type='ProceduralPoseSource', num_samples=4, seed=1), seed=3,
              distance_range=(3.0, 4.0))


@pytest.fixture(scope='module')
def neutral_female_dir(tmp_path_factory, standin_model_dir):
    """Stand-in neutral (linked) and female files; no male file."""
    from posedreamer_mm.body.standin import write_standin_smplx
    out = tmp_path_factory.mktemp('neutral_female')
    (out / 'SMPLX_NEUTRAL.npz').symlink_to(standin_model_dir / 'SMPLX_NEUTRAL.npz')
    write_standin_smplx(out, gender='female')
    return out


def test_a_single_gender_config_gives_every_gender_lazily(neutral_female_dir):
    cfg = dict(type='SMPLXBodyModel', model_path=str(neutral_female_dir), gender='female', num_betas=10)
    models = GenderedSMPLXBodyModel.from_config(cfg)
    assert len(models.models) == 0 and models.default_gender == 'female'  # nothing is read before it is needed
    assert models.default.model_file.name == 'SMPLX_FEMALE.npz'
    # A GenderedSMPLXBodyModel config is built as it is.
    built = GenderedSMPLXBodyModel.from_config(dict(type='GenderedSMPLXBodyModel', model_path=str(neutral_female_dir),
                                                    genders=('neutral', 'female')))
    assert set(built.models) == {'neutral', 'female'} and built.default_gender == 'neutral'
    with pytest.raises(TypeError, match='SMPLXBodyModel'):
        GenderedSMPLXBodyModel.from_config(dict(type='PNCCRenderer', model_path=str(neutral_female_dir)))


def test_body_forward_poses_each_gender_with_its_model(neutral_female_dir):
    forward = BodyForward(GenderedSMPLXBodyModel.from_config(dict(type='SMPLXBodyModel',
                                                                  model_path=str(neutral_female_dir))))
    source = POSE_SOURCES.build(SOURCE)
    for gender in ('female', 'neutral'):
        sample = source[0]
        sample.gender = gender
        out = forward(dict(sample=sample))
        with torch.no_grad():
            ref = SMPLXBodyModel(neutral_female_dir, gender=gender)(**BodySample.stack([sample]))
        np.testing.assert_allclose(out['vertices'], ref.vertices[0].numpy(), atol=1e-6)
        np.testing.assert_array_equal(out['faces'], SMPLXBodyModel(neutral_female_dir, gender=gender).faces)
        assert out['faces'].dtype == np.int64
    assert set(forward.body_models.models) == {'female', 'neutral'}  # one model per gender present
    sample = source[1]
    sample.gender = 'male'
    with pytest.raises(BodyModelFileError, match='SMPLX_MALE.npz'):  # the preparer turns this into a stop
        forward(dict(sample=sample))


def test_the_near_clip_plane_reaches_the_visibility(standin_model_dir):
    models = GenderedSMPLXBodyModel.from_config(dict(type='SMPLXBodyModel', model_path=str(standin_model_dir)))
    renderer = build_renderer(dict(type='DepthRenderer'), models.default)
    results = BodyCropCamera(64)(BodyForward(models)(dict(sample=POSE_SOURCES.build(SOURCE)[0])))
    results = RenderControls([renderer])(results)
    sample = results['sample']
    ref = renderer.render(results['vertices'], results['faces'], sample.focal, sample.princpt, sample.img_size,
                          joints=results['joints'])
    assert results['clip_planes'] == ref['clip_planes']
    near = results['clip_planes'][0]
    assert 0 < near < float(results['vertices'][:, 2].min())
    # Move the nose in front of the near plane, on its own pixel ray: it stays in the image but is not rendered.
    nose = SMPLX_TO_COCO17[0]
    sample.joints_3d[nose] *= 0.5 * near / sample.joints_3d[nose, 2]
    sample.joints_2d = project(sample.joints_3d, sample.focal, sample.princpt).astype(np.float32)
    kp = COCO17Visibility()(dict(results))['keypoints_coco17']
    want = coco17_keypoints(sample.joints_2d, sample.joints_3d, sample.img_size, results['depth'], min_depth=near)
    np.testing.assert_array_equal(kp, want)
    assert kp[0, 2] == 0
    without = coco17_keypoints(sample.joints_2d, sample.joints_3d, sample.img_size, results['depth'])
    assert without[0, 2] > 0  # what the visibility said before it got the near plane
