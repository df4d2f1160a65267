"""Scoring and filter transforms: a kept and a dropped case each, threshold ties, missing inputs."""
import numpy as np
import pytest

from posedreamer_mm.registry import TRANSFORMS
from posedreamer_mm.scoring.base import PoseDetections

# A front-facing person in a 200x300 image: the person's left on the image's right (x grows with "left").
FRONT = np.array([
    [100, 40], [110, 32], [90, 32], [120, 38], [80, 38],                  # nose, eyes, ears
    [135, 80], [65, 80], [150, 130], [50, 130], [155, 175], [45, 175],     # shoulders, elbows, wrists
    [120, 170], [80, 170], [122, 230], [78, 230], [124, 285], [76, 285],   # hips, knees, ankles
], np.float64)


def mirrored(xy):
    """The same body seen from behind: left and right swap sides of the image."""
    out = xy.copy()
    out[:, 0] = 200 - out[:, 0]
    return out


def label(xy, vis):
    return np.concatenate([xy, np.asarray(vis, np.float64).reshape(-1, 1) * np.ones((17, 1))], 1)


def dets(people, scores, bbox_scores=None):
    people = np.asarray(people, np.float64).reshape(-1, 17, 2)
    scores = np.broadcast_to(np.asarray(scores, np.float64), (len(people), 17))
    boxes = np.concatenate([people.min(1) - 10, people.max(1) + 10], -1)
    return PoseDetections(people, scores, boxes, np.ones(len(people)) if bbox_scores is None else bbox_scores,
                          (200, 300), 'mediapipe')


def scored(detections, label_kpts, img=None):
    """Runs ScorePose on precomputed detections (the batched-caller path: same scorer name, so not re-run)."""
    score = TRANSFORMS.build(dict(type='ScorePose', scorer=dict(type='MediaPipeScorer')))
    results = dict(img=np.zeros((300, 200, 3), np.uint8) if img is None else img, keypoints_coco17=label_kpts,
                   pose_detections=detections)
    return score(results)


def test_score_pose_with_mediapipe_on_a_photograph():
    pytest.importorskip('mediapipe')
    from skimage.data import astronaut
    img = astronaut()
    score = TRANSFORMS.build(dict(type='ScorePose', scorer=dict(type='MediaPipeScorer')))
    seen = score.scorer(img)
    good = label(seen.keypoints[0], 2)                      # a label the image follows exactly
    out = score(dict(img=img, keypoints_coco17=good))
    assert out['pose_match'].index == 0 and out['scores']['oks'] == pytest.approx(1.0, abs=1e-6)
    keep = TRANSFORMS.build(dict(type='FilterByOKS', thr=0.85))
    assert keep(out) is out
    bad = good.copy()
    bad[:, 0] += 40                                         # the image no longer follows the label
    out = score(dict(img=img, keypoints_coco17=bad))
    assert out['scores']['oks'] < 0.85
    assert keep(out) is None and out['drop_reason'] == 'oks_below_thr'


def test_score_pose_reruns_on_another_scorers_detections():
    pytest.importorskip('mediapipe')
    other = dets(FRONT, 0.9)
    other.scorer = 'mmpose'
    res = scored(other, label(FRONT, 2))                    # a blank image: mediapipe itself finds nobody
    assert len(res['pose_detections']) == 0 and res['pose_detections'].scorer == 'mediapipe'


def test_filter_by_oks_tie_and_no_match():
    res = scored(dets(FRONT, 0.9), label(FRONT + 4, 2))
    oks = res['scores']['oks']
    assert 0.5 < oks < 1
    assert TRANSFORMS.build(dict(type='FilterByOKS', thr=oks))(dict(res)) is not None       # tie kept
    dropped = dict(res)
    assert TRANSFORMS.build(dict(type='FilterByOKS', thr=min(1.0, oks + 1e-9)))(dropped) is None
    assert dropped['drop_reason'] == 'oks_below_thr'
    res = scored(dets(FRONT, 0.1), label(FRONT, 2))          # nobody with >= 4 confident keypoints
    assert res['scores']['oks'] == 0.0 and res['pose_match'].index is None
    assert TRANSFORMS.build(dict(type='FilterByOKS'))(res) is None and res['drop_reason'] == 'oks_no_match'
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        TRANSFORMS.build(dict(type='FilterByOKS', thr=1.5))


def test_filter_by_person_count():
    people = [FRONT + 10 * i for i in range(5)]
    f = TRANSFORMS.build(dict(type='FilterByPersonCount', max_people=4))
    res = scored(dets(people[:4], 0.9), label(FRONT, 2))
    assert f(res) is res and res['scores']['num_people'] == 4                               # tie kept
    res = scored(dets(people, 0.9), label(FRONT, 2))
    assert f(res) is None and res['drop_reason'] == 'too_many_people' and res['scores']['num_people'] == 5
    # Weak boxes and people with too few confident keypoints are not counted.
    scores = np.full((5, 17), 0.9)
    scores[4, 4:] = 0.0                                      # exactly 4 confident keypoints: counted
    res = scored(dets(people, scores, bbox_scores=np.array([.9, .9, .9, .4, .9])), label(FRONT, 2))
    assert f(res) is res and res['scores']['num_people'] == 4
    g = TRANSFORMS.build(dict(type='FilterByPersonCount', min_people=1))
    res = scored(PoseDetections.empty((200, 300), 'mediapipe'), label(FRONT, 2))
    assert g(res) is None and res['drop_reason'] == 'too_few_people'


def test_filter_by_head_pose_back_label_front_face():
    back_label = label(mirrored(FRONT), [1, 1, 1, 2, 2] + [2] * 12)   # face occluded by the head, from behind
    front_label = label(FRONT, 2)
    front_face = dets(FRONT, 0.9)                                      # the image shows a face
    back_scores = np.full(17, 0.9)
    back_scores[:3] = 0.05                                             # no face seen
    back_view = dets(mirrored(FRONT), back_scores)
    f = TRANSFORMS.build(dict(type='FilterByHeadPose'))
    # The ControlNet failure: a back-view label, a front-facing person in the image -> dropped.
    res = f(scored(front_face, back_label))
    assert res is None
    res = scored(front_face, back_label)
    f(res)
    assert res['drop_reason'] == 'head_pose_mismatch'
    assert res['scores']['head_facing_label'] < -0.8 and res['scores']['head_facing_image'] > 0.75
    # The realistic failure: the body follows the back-view label, a face is painted on the back of the head
    # (eyes and ears in front order, confidently seen). The body keypoints agree, the head does not.
    painted = mirrored(FRONT)
    painted[:5] = FRONT[:5]
    res = scored(dets(painted, 0.9), back_label)
    assert res['scores']['oks'] > 0.5
    assert f(res) is None and res['drop_reason'] == 'head_pose_mismatch'
    # Consistent cases are kept.
    for detections, lab in ((front_face, front_label), (back_view, back_label)):
        res = f(scored(detections, lab))
        assert res is not None and res['scores']['head_facing_diff'] < 0.3
    # A front label and a back-view image: dropped too.
    assert f(scored(back_view, front_label)) is None
    # Tie: a difference equal to max_diff is kept.
    res = scored(front_face, back_label)
    diff = TRANSFORMS.build(dict(type='FilterByHeadPose', max_diff=10))(res)['scores']['head_facing_diff']
    assert TRANSFORMS.build(dict(type='FilterByHeadPose', max_diff=diff))(scored(front_face, back_label))
    # No matched person: kept, the OKS filter decides.
    res = f(scored(dets(FRONT, 0.1), back_label))
    assert res is not None and 'head_facing_image' not in res['scores']


def _textured(seed=0, blur=0, level=None):
    import cv2
    img = np.random.default_rng(seed).integers(0, 256, (256, 192, 3), np.uint8)
    img = cv2.resize(cv2.resize(img, (48, 64)), (192, 256), interpolation=cv2.INTER_NEAREST)  # blocky edges
    if blur:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    if level is not None:
        img = np.clip(img.astype(np.float64) * 0.1 + level, 0, 255).astype(np.uint8)
    return img


def test_filter_by_image_quality():
    f = TRANSFORMS.build(dict(type='FilterByImageQuality'))
    sharp = dict(img=_textured())
    assert f(sharp) is sharp and sharp['scores']['sharpness'] > 30
    blurry = dict(img=_textured(blur=8))
    assert f(blurry) is None and blurry['drop_reason'] == 'blurry' and blurry['scores']['sharpness'] < 30
    dark = dict(img=_textured(level=3))
    f2 = TRANSFORMS.build(dict(type='FilterByImageQuality', min_sharpness=None))
    assert f2(dark) is None and dark['drop_reason'] == 'under_exposed'
    bright = dict(img=_textured(level=240))
    assert f2(bright) is None and bright['drop_reason'] == 'over_exposed'
    # Tie: sharpness equal to the threshold is kept.
    s = sharp['scores']['sharpness']
    assert TRANSFORMS.build(dict(type='FilterByImageQuality', min_sharpness=s))(dict(img=_textured())) is not None
    # An aesthetic model (any callable or SCORERS config) when configured.
    g = TRANSFORMS.build(dict(type='FilterByImageQuality', aesthetic=lambda img: 4.5, min_aesthetic=5.0))
    res = dict(img=_textured())
    assert g(res) is None and res['drop_reason'] == 'low_aesthetic' and res['scores']['aesthetic'] == 4.5
    with pytest.raises(ValueError, match='aesthetic model'):
        TRANSFORMS.build(dict(type='FilterByImageQuality', min_aesthetic=5.0))


def test_stored_scores_in_dataset_pipelines():
    """Without ScorePose (an HMR dataset pipeline), the pose filters threshold the scores stored with the data."""
    oks = TRANSFORMS.build(dict(type='FilterByOKS', thr=0.85))
    assert oks(dict(scores=dict(oks=0.85))) is not None                                        # tie kept
    res = dict(scores=dict(oks=0.84))
    assert oks(res) is None and res['drop_reason'] == 'oks_below_thr'
    count = TRANSFORMS.build(dict(type='FilterByPersonCount', max_people=4))
    assert count(dict(scores=dict(num_people=4.0))) is not None
    assert count(dict(scores=dict(num_people=5.0))) is None
    head = TRANSFORMS.build(dict(type='FilterByHeadPose', max_diff=1.0))
    assert head(dict(scores=dict(head_facing_diff=1.0, head_facing_label=-1.0))) is not None
    res = dict(scores=dict(head_facing_diff=1.8, head_facing_label=-1.0))
    assert head(res) is None and res['drop_reason'] == 'head_pose_mismatch'
    assert head(dict(scores=dict(head_facing_label=-1.0))) is not None       # stored unmatched: kept
    with pytest.raises(ValueError, match='nan'):
        oks(dict(scores=dict(oks=float('nan'))))


def test_missing_inputs_name_the_key():
    for t in ('FilterByOKS', 'FilterByPersonCount', 'FilterByHeadPose'):
        with pytest.raises(KeyError, match='ScorePose first.*stored'):
            TRANSFORMS.build(dict(type=t))(dict(img=np.zeros((4, 4, 3), np.uint8), keypoints_coco17=label(FRONT, 2)))
    with pytest.raises(KeyError, match='keypoints_coco17'):
        TRANSFORMS.build(dict(type='ScorePose', scorer=dict(type='MediaPipeScorer')))(dict(img=np.zeros((4, 4, 3))))


def test_score_pose_min_keypoints_zero_matches_the_person_on_the_label():
    """A detection without any confident keypoint first, the person exactly on the label second: OKS 1."""
    nobody = dets(mirrored(FRONT), 0.05)
    people = PoseDetections(np.concatenate([nobody.keypoints, FRONT[None]]),
                            np.concatenate([nobody.keypoint_scores, np.full((1, 17), 0.9)]),
                            np.concatenate([nobody.bboxes, dets(FRONT, 0.9).bboxes]), np.ones(2), (200, 300),
                            'mediapipe')
    score = TRANSFORMS.build(dict(type='ScorePose', scorer=dict(type='MediaPipeScorer'), min_keypoints=0))
    out = score(dict(img=np.zeros((300, 200, 3), np.uint8), keypoints_coco17=label(FRONT, 2),
                     pose_detections=people))
    assert out['pose_match'].index == 1 and out['scores']['oks'] == pytest.approx(1.0, abs=1e-9)
    assert TRANSFORMS.build(dict(type='FilterByOKS', thr=1.0 - 1e-9))(out) is not None


def test_every_filter_threshold_keeps_a_tie():
    """Each threshold of filters.py at exactly the measured value lands on the documented (keeping / counting)
    side, and a hair beyond it on the other (module docstring: thresholds are inclusive on the keeping side)."""
    # FilterByPersonCount: a box scoring exactly bbox_thr is counted; min_people equal to the count is kept.
    people = [FRONT + 10 * i for i in range(2)]
    res = scored(dets(people, 0.9, bbox_scores=np.array([0.5, 0.9])), label(FRONT, 2))
    count = TRANSFORMS.build(dict(type='FilterByPersonCount', min_people=2, bbox_thr=0.5))
    assert count(dict(res)) is not None and res['scores']['num_people'] == 2
    strict = dict(res)
    assert TRANSFORMS.build(dict(type='FilterByPersonCount', min_people=2, bbox_thr=0.5001))(strict) is None
    assert strict['drop_reason'] == 'too_few_people'
    # ... and a keypoint scoring exactly keypoint_thr is confident.
    scores = np.full((2, 17), 0.3)
    res = scored(dets(people, scores), label(FRONT, 2))
    assert TRANSFORMS.build(dict(type='FilterByPersonCount', min_people=2, keypoint_thr=0.3))(dict(res))
    assert TRANSFORMS.build(dict(type='FilterByPersonCount', min_people=2, keypoint_thr=0.3001))(dict(res)) is None

    # FilterByImageQuality: brightness equal to min/max, clipped fraction equal to the max, aesthetic equal to min.
    img = np.zeros((4, 8, 3), np.uint8)
    img[:, :2], img[:, 2:4], img[:, 4:6], img[:, 6:] = 0, 100, 150, 255     # a quarter dark, a quarter bright
    expo = dict(min_sharpness=None, min_brightness=None, max_brightness=None, max_clipped_fraction=None)

    def quality(**kw):
        return TRANSFORMS.build(dict(type='FilterByImageQuality', **{**expo, **kw}))(dict(img=img))
    bright = (0 + 100 + 150 + 255) / 4 / 255
    assert quality(min_brightness=bright)['scores']['brightness'] == pytest.approx(bright)
    assert quality(min_brightness=bright + 1e-9) is None
    assert quality(max_brightness=bright) is not None and quality(max_brightness=bright - 1e-9) is None
    assert quality(max_clipped_fraction=0.5)['scores']['clipped_fraction'] == 0.5     # dark + bright
    assert quality(max_clipped_fraction=0.4999) is None
    assert quality(aesthetic=lambda im: 5.0, min_aesthetic=5.0) is not None
    assert quality(aesthetic=lambda im: 5.0, min_aesthetic=5.0001) is None
