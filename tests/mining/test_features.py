"""Feature layout: the documented order and slices, values taken from the right record fields, JSON round trip."""
import numpy as np
import pytest

from posedreamer_mm.body.rotations import axis_angle_to_matrix, matrix_to_rotation_6d
from posedreamer_mm.body.sample import BodySample
from posedreamer_mm.mining import FeatureSpec, MiningError, stack_params
from tests.mining.conftest import random_params


def test_default_layout_is_the_record_in_the_documented_order():
    spec = FeatureSpec(num_betas=11)
    assert spec.slices == {'global_orient': (0, 3), 'body_pose': (3, 66), 'betas': (66, 77),
                           'left_hand_pose': (77, 122), 'right_hand_pose': (122, 167), 'jaw_pose': (167, 170),
                           'expression': (170, 180)}
    names = spec.names
    assert names[:4] == ['global_orient_x', 'global_orient_y', 'global_orient_z', 'body_pose_left_hip_x']
    assert names[3 + 3 * 20 + 2] == 'body_pose_right_wrist_z' and names[66] == 'betas_0'
    assert names[77] == 'left_hand_pose_left_index1_x' and names[122] == 'right_hand_pose_right_index1_x'
    assert names[-1] == 'expression_9' and len(set(names)) == 180


def test_values_come_from_their_fields():
    params = random_params(5, seed=1, num_betas=11)
    spec = FeatureSpec(11, parts=tuple(FeatureSpec(11).parts) + ('transl', 'camera'))
    feats = spec.features(params)
    sl = spec.slices
    for part in ('global_orient', 'body_pose', 'betas', 'left_hand_pose', 'right_hand_pose', 'jaw_pose', 'expression',
                 'transl'):
        np.testing.assert_array_equal(feats[:, slice(*sl[part])], params[part])
    # camera: fx / W, fy / H, cx / W - 0.5, cy / H - 0.5 by hand for a 640x480 image with fx 500, cx 300
    params['focal'][:] = [500, 400]
    params['princpt'][:] = [300, 260]
    params['img_size'][:] = [640, 480]
    np.testing.assert_allclose(spec.features(params)[0, slice(*sl['camera'])],
                               [500 / 640, 400 / 480, 300 / 640 - 0.5, 260 / 480 - 0.5], rtol=1e-6)


def test_rot6d_is_the_first_two_matrix_columns():
    params = random_params(3, seed=2)
    spec = FeatureSpec(10, parts=('body_pose',), representation='rot6d')
    want = matrix_to_rotation_6d(axis_angle_to_matrix(params['body_pose'].reshape(3, 21, 3).astype(np.float64)))
    np.testing.assert_allclose(spec.features(params), want.numpy().reshape(3, 126), atol=1e-6)
    assert spec.names[:6] == [f'body_pose_left_hip_{c}' for c in ('r00', 'r10', 'r20', 'r01', 'r11', 'r21')]


def test_samples_and_stacked_fields_give_the_same_vectors():
    params = random_params(3, seed=3)
    samples = [BodySample(id=f's{i}', **{k: v[i] for k, v in params.items()}) for i in range(3)]
    spec = FeatureSpec(10)
    np.testing.assert_array_equal(spec.features(samples), spec.features(params))
    mixed = samples[:2] + [BodySample(id='s16', betas=np.zeros(16))]
    with pytest.raises(MiningError, match=r"different betas counts 10 \(e.g. 's0'\), 16 \(e.g. 's16'\)"):
        stack_params(mixed)


def test_json_round_trip_and_bad_settings():
    spec = FeatureSpec(16, parts=('body_pose', 'betas', 'camera'), representation='rot6d')
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict()['source_lengths'] == dict(betas=16, expression=10, body_pose=63, hand_pose=45)
    assert spec.to_dict()['slices'] == {'body_pose': [0, 126], 'betas': [126, 142], 'camera': [142, 146]}
    with pytest.raises(MiningError, match=r"parts \['hands'\] are unknown"):
        FeatureSpec(10, parts=('hands',))
    with pytest.raises(MiningError, match='representation'):
        FeatureSpec(10, representation='euler')
    with pytest.raises(MiningError, match='spec.json is not a difficulty feature spec'):
        FeatureSpec.from_dict({'parts': []}, where='spec.json')


def test_differences_name_each_kind_of_mismatch():
    model = FeatureSpec(10)
    assert model.differences(FeatureSpec(10)) == []
    swapped = FeatureSpec(10, parts=('body_pose', 'global_orient', 'betas', 'left_hand_pose', 'right_hand_pose',
                                     'jaw_pose', 'expression'))
    assert model.differences(swapped) == [f'part order differs: model {list(model.parts)}, data {list(swapped.parts)}']
    extra = FeatureSpec(16, parts=model.parts + ('camera',), representation='rot6d')
    assert model.differences(extra) == ['rotations are axis_angle in the model, rot6d in the data',
                                        "the data has part(s) ['camera'] the model was not trained on",
                                        'betas: the model has 10, the data 16']
    no_face = FeatureSpec(10, parts=model.parts[:-2])
    assert model.differences(no_face) == ["part(s) ['jaw_pose', 'expression'] of the model are missing from the data"]


def test_an_edited_or_foreign_spec_file_is_refused_with_the_reason():
    good = FeatureSpec(10).to_dict()
    with pytest.raises(MiningError, match=r's.json: feature spec version 2, this code reads 1'):
        FeatureSpec.from_dict({**good, 'version': 2}, where='s.json')
    with pytest.raises(MiningError, match=r"s.json: feature spec has no 'parts'"):
        FeatureSpec.from_dict({k: v for k, v in good.items() if k != 'parts'}, where='s.json')
    names = list(good['names'])
    names[5], names[6] = names[6], names[5]                         # two columns swapped, slices unchanged
    slices = dict(good['slices'], betas=[66, 77])                   # one slice edited, names unchanged
    for edited in ({**good, 'names': names}, {**good, 'slices': slices},
                   {k: v for k, v in good.items() if k != 'names'}, {k: v for k, v in good.items() if k != 'slices'}):
        with pytest.raises(MiningError, match=r"s.json: the stored names/slices do not follow from parts=\["):
            FeatureSpec.from_dict(edited, where='s.json')
    with pytest.raises(MiningError, match='no samples to build features from'):
        stack_params([])
