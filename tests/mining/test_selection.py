"""Selection of the hardest poses: exact order without a guard, near duplicates rejected, the pose distance."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from posedreamer_mm.mining import MiningError, joint_rotations, pose_distance_deg, select_hardest


def _poses(n, seed):
    return np.random.default_rng(seed).uniform(-0.8, 0.8, (n, 63))


def test_pose_distance_is_the_mean_geodesic_angle_over_the_21_joints():
    a = np.zeros((1, 63))
    b = a.copy()
    b[0, 3 * 4:3 * 5] = Rotation.from_euler('y', 30, degrees=True).as_rotvec()   # one joint turned by 30 degrees
    assert pose_distance_deg(joint_rotations(a)[0], joint_rotations(b)[0]) == pytest.approx(30 / 21)
    # The same 30-degree turn composed onto a random pose (on the parent side) is still 30 degrees for that joint.
    base = _poses(1, 0)
    turned = base.copy()
    joint = Rotation.from_rotvec(base[0, 12:15])
    turned[0, 12:15] = (Rotation.from_euler('x', 30, degrees=True) * joint).as_rotvec()
    assert pose_distance_deg(joint_rotations(base)[0], joint_rotations(turned)[0]) == pytest.approx(30 / 21)
    with_root = joint_rotations(base, global_orient=np.array([[0, np.pi / 2, 0]]))
    assert with_root.shape == (1, 22, 3, 3)
    assert pose_distance_deg(with_root[0], joint_rotations(base, np.zeros((1, 3)))[0]) == pytest.approx(90 / 22)


def test_without_a_guard_the_selection_is_exactly_the_k_hardest_in_order():
    difficulty = np.array([0.1, 0.9, 0.5, 0.9, 0.3, 0.7])
    chosen = select_hardest(difficulty, _poses(6, 1), 4, min_distance_deg=0)
    assert chosen.indices.tolist() == [1, 3, 5, 2]             # ties by pool index
    assert chosen.rejected == {} and not chosen.exhausted and chosen.scanned == 4


def test_the_guard_rejects_hand_built_near_duplicates_of_a_harder_pose():
    poses = _poses(30, 2)
    difficulty = np.linspace(0, 1, 30)                         # row 29 is the hardest
    rng = np.random.default_rng(3)
    for row in (28, 27, 26):                                   # near copies of the hardest pose (< 2 degrees)
        noise = rng.normal(0, np.radians(1.0), 63)
        poses[row] = (Rotation.from_rotvec(noise.reshape(21, 3)) * Rotation.from_rotvec(poses[29].reshape(21, 3))
                      ).as_rotvec().reshape(63)
    chosen = select_hardest(difficulty, poses, 5, min_distance_deg=10)
    assert chosen.indices.tolist() == [29, 25, 24, 23, 22]
    assert set(chosen.rejected) == {28, 27, 26}
    assert all(near == 29 and dist < 3 for near, dist in chosen.rejected.values())
    unguarded = select_hardest(difficulty, poses, 5, min_distance_deg=0)
    assert unguarded.indices.tolist() == [29, 28, 27, 26, 25]  # one pose four times without the guard
    rots = joint_rotations(poses[chosen.indices])
    pairwise = pose_distance_deg(rots[:, None], rots[None])
    assert (pairwise[~np.eye(5, dtype=bool)] >= 10).all()


def test_a_pool_too_small_for_the_guard_says_it_ran_out():
    poses = np.zeros((4, 63))                                  # four copies of one pose
    chosen = select_hardest(np.arange(4.0), poses, 3, min_distance_deg=1)
    assert chosen.indices.tolist() == [3] and chosen.exhausted and len(chosen.rejected) == 3


def test_bad_inputs_are_named():
    with pytest.raises(MiningError, match='NaN'):
        select_hardest(np.array([0.0, np.nan]), np.zeros((2, 63)), 1)
    with pytest.raises(MiningError, match='difficulty has 2 rows but body_pose 3'):
        select_hardest(np.zeros(2), np.zeros((3, 63)), 1)
    with pytest.raises(MiningError, match='num must be >= 1'):
        select_hardest(np.zeros(2), np.zeros((2, 63)), 0)


def test_a_pose_exactly_at_the_guard_distance_is_kept_and_just_inside_it_is_rejected():
    poses = np.zeros((2, 63))
    poses[0, 12:15] = Rotation.from_euler('z', 30, degrees=True).as_rotvec()
    d = float(pose_distance_deg(joint_rotations(poses[:1])[0], joint_rotations(poses[1:])[0]))
    assert select_hardest(np.array([1.0, 0.0]), poses, 2, min_distance_deg=d).indices.tolist() == [0, 1]
    kept = select_hardest(np.array([1.0, 0.0]), poses, 2, min_distance_deg=np.nextafter(d, np.inf))
    assert kept.indices.tolist() == [0] and kept.exhausted


def test_the_root_counts_only_when_asked():
    poses = np.zeros((2, 63))                                  # one articulation ...
    roots = np.array([[np.pi, 0, 0], [0, np.pi, 0]])           # ... seen from the front and from behind
    assert select_hardest(np.array([1.0, 0.5]), poses, 2, 5).indices.tolist() == [0]
    assert select_hardest(np.array([1.0, 0.5]), poses, 2, 5, global_orient=roots).indices.tolist() == [0, 1]


def test_ties_keep_pool_order_in_a_large_pool_and_one_pose_can_be_asked_for():
    difficulty = np.random.default_rng(0).integers(0, 3, 300).astype(float)   # many ties
    chosen = select_hardest(difficulty, _poses(300, 4), 40, min_distance_deg=0)
    assert chosen.indices.tolist() == np.flatnonzero(difficulty == 2)[:40].tolist()
    assert select_hardest(difficulty, _poses(300, 4), 1, min_distance_deg=0).indices.tolist() == [
        int(np.flatnonzero(difficulty == 2)[0])]


def test_the_scan_continues_past_the_first_block_of_candidates():
    poses = np.zeros((1500, 63))                               # rows 0-1029: one pose; from row 1030 on, others
    poses[1030:] = _poses(470, 5)
    chosen = select_hardest(-np.arange(1500.0), poses, 3, min_distance_deg=5)
    assert chosen.indices.tolist() == [0, 1030, 1031] and chosen.scanned == 1032 and len(chosen.rejected) == 1029


def test_the_count_of_bad_values_is_named():
    with pytest.raises(MiningError, match='2 difficulty values are NaN or inf'):
        select_hardest(np.array([np.nan, np.inf, 0.0]), np.zeros((3, 63)), 1)
