"""HardSampleSampler edge cases that mutation testing (mutmut, docs/testing.md) found unpinned: a curriculum that
jumps at ``begin == end``, the documented probabilities at ``m = 0`` and ``m = 1``, the uniform fall-back of a
zero or overflowing difficulty, an epoch's draw kept through mid-epoch updates, the iteration a chunk starts at,
the chunks kept for a resume, and the EMA of a known slot with the update counter the difficulty hook logs."""
import numpy as np
import pytest
from mmengine.dataset import DefaultSampler

from posedreamer_mm.datasets.samplers.hard_sample_sampler import HardSampleSampler


def test_a_curriculum_with_begin_equal_to_end_jumps_right_after_begin():
    s = HardSampleSampler(list(range(4)), seed=0, curriculum=dict(begin=2, end=2, max_mix=0.7))
    # m(t) = 0 up to begin (included), max_mix from end: a step at t = 2, no division by end - begin = 0
    assert [s.mix_at(t) for t in (0, 2, 2.5, 3, 10)] == pytest.approx([0.0, 0.0, 0.7, 0.7, 0.7])


def test_probabilities_are_uniform_at_m_0_or_without_difficulty_and_equal_q_at_m_1():
    s = HardSampleSampler(list(range(5)), seed=0, curriculum=dict(begin=1, end=2, max_mix=1.0))
    np.testing.assert_allclose(s.probabilities(3), [0.2] * 5)      # no difficulty known: q undefined, uniform
    s.difficulty[:] = [1.0, 1.0, 2.0, 0.0, 0.0]
    np.testing.assert_allclose(s.probabilities(0), [0.2] * 5)      # m(0) = 0: p_i = 1 / N
    np.testing.assert_allclose(s.probabilities(3), [0.25, 0.25, 0.5, 0.0, 0.0])   # m = 1: p = q = w / sum(w)


@pytest.mark.filterwarnings('ignore:overflow encountered in power:RuntimeWarning')
def test_zero_or_overflowing_difficulty_falls_back_to_the_uniform_draw():
    n = 6
    reference = DefaultSampler(list(range(n)), seed=3)
    reference.set_epoch(2)
    for difficulty, power in (([0.0] * n, 1.0), ([1e300] + [1.0] * (n - 1), 2.0)):   # sum(w) = 0, sum(w) = inf
        s = HardSampleSampler(list(range(n)), seed=3, curriculum=dict(end=1, max_mix=0.9, power=power))
        s.difficulty[:] = difficulty
        assert s.focus() is None
        np.testing.assert_allclose(s.probabilities(2), [1 / n] * n)
        s.set_epoch(2)
        assert list(s) == list(reference)


def test_an_epoch_s_draw_is_kept_through_a_mid_epoch_difficulty_update():
    n = 20
    s = HardSampleSampler(list(range(n)), seed=1, curriculum=dict(end=1, max_mix=1.0))
    s.difficulty[:] = 1.0
    s.set_epoch(3)
    first = list(s)
    s.update_difficulty(np.arange(n), [0.0] * (n - 1) + [1.0], momentum=1.0)   # all weight on index 19 now
    assert list(s) == first          # the rest of epoch 3 (and a resumed epoch 3) iterates the same draw
    s.set_epoch(4)
    assert list(s) == [n - 1] * n    # the next epoch draws from the new table


def test_a_chunk_s_progress_is_the_iteration_it_starts_at():
    s = HardSampleSampler(list(range(5)), seed=0, infinite=True, batch_size=2, curriculum=dict(by='iter'))
    # chunk k starts at per-rank position 5 k: iteration floor(5 k / 2)
    assert [s._chunk_progress(k) for k in range(4)] == [0.0, 2.0, 5.0, 7.0]
    one = HardSampleSampler(list(range(4)), seed=0, infinite=True, chunk_size=1, batch_size=1,
                            curriculum=dict(by='iter'))
    assert [one._chunk_progress(k) for k in range(3)] == [0.0, 1.0, 2.0]
    # The first chunk needs no batch_size (the hook sets it before the second one is drawn).
    t = HardSampleSampler(list(range(3)), seed=0, infinite=True, curriculum=dict(begin=1, end=3))
    t.difficulty[:] = 1.0
    it = iter(t)
    assert sorted(next(it) for _ in range(3)) == [0, 1, 2]
    with pytest.raises(ValueError, match='needs batch_size'):
        next(it)


def test_the_first_chunk_is_the_default_sampler_s_permutation_when_the_curriculum_starts_at_0():
    s = HardSampleSampler(list(range(8)), seed=4, infinite=True, batch_size=2,
                          curriculum=dict(by='iter', begin=0, end=1, max_mix=1.0))
    s.difficulty[:] = [0, 0, 0, 0, 0, 0, 0, 1.0]
    assert s.chunk(0).tolist() == list(DefaultSampler(list(range(8)), seed=4))   # m(0) = 0


def test_chunks_not_fully_trained_are_kept_and_earlier_positions_yield_valid_indices():
    def sampler():
        return HardSampleSampler(list(range(6)), seed=0, infinite=True, batch_size=1,
                                 curriculum=dict(by='iter', end=1))
    s = sampler()
    s.difficulty[:] = np.arange(6)
    it = iter(s)
    [next(it) for _ in range(13)]                 # chunks 0, 1, 2 drawn (6 positions each)
    assert sorted(s._chunks) == [1, 2]            # without a consumed count: the current chunk and the one before
    s = sampler()
    s.difficulty[:] = np.arange(6)
    it = iter(s)
    stream = [next(it) for _ in range(12)]
    s.consumed = 5                                # the loop has trained 5 positions (a prefetching loader)
    stream.append(next(it))                       # chunk 2 drawn
    assert sorted(s._chunks) == [0, 1, 2]         # chunk 0's sixth position is not trained yet
    state = s.state_dict()
    resumed = sampler()
    resumed.load_state_dict(state)
    it = iter(resumed)
    assert [next(it) for _ in range(13)] == stream
    # A state holding chunk 2 only: positions before it (never trained again) yield in-range ints.
    s.consumed = 12
    s.chunk(3)                                    # keeps chunks 2 and 3
    late = sampler()
    late.load_state_dict(s.state_dict())
    assert min(late._chunks) == 2
    it = iter(late)
    head = [next(it) for _ in range(12)]
    assert head == [p % 6 for p in range(12)] and all(type(i) is int for i in head)


def test_ema_of_a_known_slot_and_the_update_counter():
    s = HardSampleSampler(list(range(3)), seed=0)
    assert s.version == 0
    s.update_difficulty([0], [4.0], momentum=0.25)     # unknown slot: takes the value
    s.update_difficulty([0], [8.0], momentum=0.25)     # 0.75 * 4 + 0.25 * 8 = 5 (an old value other than 1)
    assert s.difficulty[0] == 5.0
    assert s.version == 2                              # what the difficulty hook logs as the update number
