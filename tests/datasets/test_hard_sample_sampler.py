"""HardSampleSampler (posedreamer_mm/datasets/samplers/hard_sample_sampler.py): draws match the documented
probabilities, the uniform start is mmengine's DefaultSampler, ranks split each draw, wrappers map difficulty per
sub-dataset sample, and a restored state continues the identical stream."""
import json
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.dataset import BaseDataset, ConcatDataset, DefaultSampler, RepeatDataset
from mmengine.registry import DefaultScope
from scipy import stats

from posedreamer_mm.datasets.samplers import hard_sample_sampler as hss
from posedreamer_mm.datasets.samplers.hard_sample_sampler import HardSampleSampler
from posedreamer_mm.registry import DATA_SAMPLERS, DATASETS

RECIPE = Path(__file__).resolve().parents[2] / 'configs' / 'hmr' / 'hmr_vitl_posedreamer_bedlam.py'


class IdDataset(BaseDataset):
    """``n`` items with ids ``<name>-<i>`` and a ``dataset_name``, as the HMR datasets expose them."""

    def __init__(self, name: str, n: int):
        self.n, self.dataset_name = n, name
        super().__init__(serialize_data=False)

    def load_data_list(self):
        return [dict(id=f'{self.dataset_name}-{i}') for i in range(self.n)]


def _ranks(monkeypatch, rank: int, world: int):
    monkeypatch.setattr(hss, 'get_dist_info', lambda: (rank, world))
    monkeypatch.setattr('mmengine.dataset.sampler.get_dist_info', lambda: (rank, world))


def test_registered_in_the_data_sampler_registry():
    with DefaultScope.overwrite_default_scope('posedreamer_mm'):
        sampler = DATA_SAMPLERS.build(dict(type='HardSampleSampler', seed=1), default_args=dict(dataset=list(range(5))))
    assert isinstance(sampler, HardSampleSampler)


def test_draw_frequencies_match_the_documented_probabilities():
    n, m, power = 12, 0.6, 2.0
    diff = np.arange(1, n + 1, dtype=float)
    sampler = HardSampleSampler(list(range(n)), seed=5, curriculum=dict(begin=0, end=1, max_mix=m, power=power))
    sampler.difficulty[:] = diff
    expected = (1 - m) / n + m * diff ** power / (diff ** power).sum()  # the module docstring's formula by hand
    np.testing.assert_allclose(sampler.probabilities(1), expected)
    counts = np.zeros(n)
    for epoch in range(1, 801):
        sampler.set_epoch(epoch)
        counts += np.bincount(list(sampler), minlength=n)
    assert counts.sum() == 800 * n
    assert stats.chisquare(counts, counts.sum() * expected).pvalue > 1e-3
    # ... and they are not uniform (the test has the power to tell)
    assert stats.chisquare(counts, np.full(n, counts.sum() / n)).pvalue < 1e-12


def test_uniform_until_the_curriculum_begins_then_ramps():
    n = 10
    sampler = HardSampleSampler(list(range(n)), seed=7, curriculum=dict(begin=2, end=6, max_mix=0.8))
    sampler.difficulty[:] = np.linspace(0, 9, n)
    reference = DefaultSampler(list(range(n)), seed=7)
    for epoch in range(3):  # progress <= begin: exactly DefaultSampler's shuffled epoch (each sample once)
        sampler.set_epoch(epoch)
        reference.set_epoch(epoch)
        assert list(sampler) == list(reference)
    assert [sampler.mix_at(t) for t in (2, 3, 4, 6, 9)] == pytest.approx([0.0, 0.2, 0.4, 0.8, 0.8])
    sampler.set_epoch(4)
    assert sorted(sampler) != list(range(n))  # with replacement now
    # No difficulty known (nothing measured, no file): the draw stays DefaultSampler's at every epoch.
    blind = HardSampleSampler(list(range(n)), seed=7, curriculum=dict(begin=0, end=1))
    blind.set_epoch(5)
    reference.set_epoch(5)
    assert list(blind) == list(reference)


@pytest.mark.parametrize('round_up', [True, False])
def test_two_ranks_get_disjoint_slices_covering_the_epoch(monkeypatch, round_up):
    n = 11
    draws = []
    for rank in (0, 1):
        _ranks(monkeypatch, rank, 2)
        sampler = HardSampleSampler(list(range(n)), seed=3, round_up=round_up, curriculum=dict(end=1, max_mix=1.0))
        sampler.difficulty[:] = np.arange(n) % 4
        sampler.set_epoch(2)
        draws.append((list(sampler), sampler.epoch_draw(), len(sampler)))
        if rank == 0:
            sampler.set_epoch(0)
            assert list(sampler) == list(DefaultSampler(list(range(n)), seed=3, round_up=round_up))
    (a, full_a, len_a), (b, full_b, len_b) = draws
    np.testing.assert_array_equal(full_a, full_b)  # same global draw on both ranks
    total = 12 if round_up else 11
    assert len(full_a) == total and (len_a, len_b) == ((6, 6) if round_up else (6, 5))
    assert len(a) == len_a and len(b) == len_b
    merged = [None] * total
    merged[0::2], merged[1::2] = a, b  # rank r holds positions r::2: together every position exactly once
    assert merged == full_a.tolist()
    assert not set(np.unique(full_a[np.arange(total) % 4 == 0])) - set(range(n))


def test_same_seed_and_epoch_same_order():
    def order(seed, epoch):
        s = HardSampleSampler(list(range(50)), seed=seed, curriculum=dict(end=1))
        s.difficulty[:] = np.arange(50)
        s.set_epoch(epoch)
        return list(s)
    assert order(1, 3) == order(1, 3)
    assert order(1, 3) != order(1, 4) and order(1, 3) != order(2, 3)


def test_infinite_mode_draws_lazy_seeded_chunks(monkeypatch):
    n = 8
    streams = {}
    for rank in (0, 1):
        _ranks(monkeypatch, rank, 2)
        s = HardSampleSampler(list(range(n)), seed=4, infinite=True, batch_size=2,
                              curriculum=dict(by='iter', begin=1, end=3, max_mix=1.0))
        it = iter(s)
        first = [next(it) for _ in range(4)]  # chunk 0 (4 per rank): iteration 0, uniform
        assert list(s._chunks) == [0]  # chunk 1 not drawn until reached
        s.difficulty[:] = [0, 0, 0, 0, 0, 0, 0, 1.0]  # measured before chunk 1 (iteration 2, m = 0.5) is drawn
        second = [next(it) for _ in range(4)]
        streams[rank] = first + second
        if rank == 0:
            assert list(s._chunks) == [0, 1] and s.mix_at(2) == 0.5
            # chunk 0 is uniform: mmengine's DefaultSampler epoch 0, sliced the same way
            assert s.chunk(0)[0::2].tolist() == list(DefaultSampler(list(range(n)), seed=4))
            chunk1 = s.chunk(1)
    assert sorted(streams[0][:4] + streams[1][:4]) == list(range(n))  # chunk 0: a permutation split by rank
    np.testing.assert_array_equal(np.array(streams[0][4:]), chunk1[0::2])
    np.testing.assert_array_equal(np.array(streams[1][4:]), chunk1[1::2])
    # chunk 1 starts at iteration 4 per rank / batch 2 = 2: m = 0.5 and all difficulty on index 7, so
    # p_7 = 0.5/8 + 0.5 (the other 0.5/8 each), drawn by numpy's generator seeded with seed + chunk
    s.difficulty[:] = [0, 0, 0, 0, 0, 0, 0, 1.0]
    np.testing.assert_allclose(s.probabilities(2), [0.0625] * 7 + [0.5625])
    expected = np.random.default_rng(4 + 1).choice(n, size=n, p=[0.0625] * 7 + [0.5625])
    np.testing.assert_array_equal(chunk1, expected)
    with pytest.raises(ValueError, match='batch_size'):
        t = HardSampleSampler(list(range(n)), seed=4, infinite=True, curriculum=dict(begin=1, end=3))
        t.difficulty[:] = 1.0
        it = iter(t)
        [next(it) for _ in range(n + 1)]


def test_concat_dataset_maps_difficulty_per_sub_dataset_sample():
    a, b = IdDataset('a', 3), IdDataset('b', 4)
    concat = ConcatDataset([a, b])  # 3 + 4 indices and samples
    s = HardSampleSampler(concat, seed=0, curriculum=dict(end=1, max_mix=1.0))
    assert s.leaf_names == ['a', 'b'] and s.num_slots == 7
    slots = s.slots_of(['b', 'a', 'b'], [1, 2, 3])
    assert slots.tolist() == [4, 2, 6]
    s.update_difficulty(slots, [5.0, 2.0, 1.0], momentum=0.5)
    # unknown slots (a-0, a-1, b-0, b-2) take the mean of the known ones: (5 + 2 + 1) / 3
    w = s.index_difficulty()
    d = 8 / 3
    np.testing.assert_allclose(w, [d, d, 2.0, d, 5.0, d, 1.0])
    # each index loads what concat[i] loads: the ids agree with the mapping
    for i in range(len(concat)):
        slot = s.index_map[i].indices[0]
        leaf = np.searchsorted(s.leaf_offsets, slot, side='right') - 1
        assert concat.get_data_info(i)['id'] == f"{s.leaf_names[leaf]}-{slot - s.leaf_offsets[leaf]}"
    repeated = HardSampleSampler(RepeatDataset(b, 2), seed=0)
    assert repeated.num_slots == 4 and repeated.index_map.nonzero()[1].tolist() == [0, 1, 2, 3] * 2
    with pytest.raises(ValueError, match=r"\['c'\].*unique dataset_name"):
        s.slots_of(['c'], [0])
    with pytest.raises(ValueError, match='out of range'):
        s.slots_of(['a'], [3])


def test_combined_dataset_resampling_probabilities_match_mmpose(hmr_paths):
    """mmpose's CombinedDataset draws a random sub-dataset sample per index under sample_ratio_factor; the
    sampler's index->sample probabilities equal the frequencies of its own _get_subset_index."""
    from posedreamer_mm.testing.hmr_fixtures import hmr_dataset_cfgs
    cfgs = hmr_dataset_cfgs(hmr_paths)
    with DefaultScope.overwrite_default_scope('posedreamer_mm'):
        combined = DATASETS.build(dict(
            type='CombinedDataset', metainfo=Config.fromfile(str(RECIPE)).dataset_info,
            datasets=[dict(cfgs['posedreamer'], indices=3), cfgs['bedlam']], sample_ratio_factor=[2.3, 0.5]))
    assert combined.lens == [7, 2]
    s = HardSampleSampler(combined, seed=0)
    assert s.leaf_names == ['posedreamer', 'bedlam'] and s.num_slots == 7
    rng_state = np.random.get_state()
    np.random.seed(0)
    freq = np.zeros((len(combined), s.num_slots))
    for g in range(len(combined)):
        for _ in range(4000):
            sub, local = combined._get_subset_index(g)
            freq[g, s.leaf_offsets[sub] + local] += 1
    np.random.set_state(rng_state)
    np.testing.assert_allclose(freq / 4000, s.index_map.toarray(), atol=0.03)
    np.testing.assert_allclose(s.index_map.toarray().sum(1), 1.0)


def test_difficulty_file_sets_the_samples_by_id(tmp_path):
    concat = ConcatDataset([IdDataset('a', 3), IdDataset('b', 2)])
    npz = tmp_path / 'pred.npz'
    np.savez(npz, ids=np.array(['b-1', 'a-0', 'zz-9']), difficulty=np.array([4.0, 1.0, 7.0]))
    s = HardSampleSampler(concat, seed=0, difficulty_file=str(npz))
    np.testing.assert_array_equal(s.difficulty, [1.0, np.nan, np.nan, np.nan, 4.0])
    js = tmp_path / 'pred.json'
    js.write_text(json.dumps({'a-2': 0.5, 'b-0': 2.0}))
    s = HardSampleSampler(concat, seed=0, difficulty_file=str(js), default_difficulty=0.0)
    np.testing.assert_array_equal(s.index_difficulty(), [0, 0, 0.5, 2.0, 0])
    for content, match in [({'x': 1.0}, 'no sample id'), ({'a-0': -1.0}, 'finite number >= 0'),
                           ([1, 2], 'holds a list')]:
        js.write_text(json.dumps(content))
        with pytest.raises(ValueError, match=match) as err:
            HardSampleSampler(concat, seed=0, difficulty_file=str(js))
        assert 'pred.json' in str(err.value)
    np.savez(npz, ids=np.array(['a-0']), oks=np.array([0.3]))
    with pytest.raises(ValueError, match='arrays .*oks.*expected an .npz with arrays "ids" and "difficulty"'):
        HardSampleSampler(concat, seed=0, difficulty_file=str(npz))
    with pytest.raises(FileNotFoundError, match='missing.npz'):
        HardSampleSampler(concat, seed=0, difficulty_file=str(tmp_path / 'missing.npz'))


class ListedIdDataset(IdDataset):
    """Lists its ids without building items (``sample_ids``); building an item is an error here."""

    def sample_ids(self):
        return [f'{self.dataset_name}-{i}' for i in range(self.n)]

    def get_data_info(self, idx):
        raise AssertionError('the sampler decoded an item although the dataset lists its ids')


def test_difficulty_file_reads_ids_a_dataset_lists_without_building_its_items(tmp_path):
    concat = ConcatDataset([ListedIdDataset('a', 3), IdDataset('b', 2)])  # one listing, one per-item leaf
    npz = tmp_path / 'pred.npz'
    np.savez(npz, ids=np.array(['b-1', 'a-2', 'a-0']), difficulty=np.array([4.0, 1.0, 3.0]))
    s = HardSampleSampler(concat, seed=0, difficulty_file=str(npz))
    np.testing.assert_array_equal(s.difficulty, [3.0, np.nan, 1.0, np.nan, 4.0])
    short = ListedIdDataset('c', 3)
    short.sample_ids = lambda: ['c-0']
    with pytest.raises(ValueError, match=r'sample_ids\(\) of c lists 1 ids for 3 items'):
        HardSampleSampler(short, seed=0, difficulty_file=str(npz))


def test_ema_update_by_hand_and_independent_of_order():
    s = HardSampleSampler(list(range(4)), seed=0)
    s.difficulty[:] = [1.0, np.nan, 3.0, np.nan]
    s.update_difficulty([0, 0, 1, 2, 3], [2.0, 4.0, 5.0, np.nan, np.inf], momentum=0.25)
    # slot 0: 0.75 * 1 + 0.25 * mean(2, 4); slot 1 unknown -> 5; slots 2, 3 only non-finite -> unchanged
    np.testing.assert_array_equal(s.difficulty, [1.5, 5.0, 3.0, np.nan])
    rng = np.random.default_rng(0)
    slots, values = rng.integers(0, 4, 200), rng.random(200) * 1e3
    tables = []
    for perm in (np.arange(200), rng.permutation(200)):
        t = HardSampleSampler(list(range(4)), seed=0)
        t.update_difficulty(slots[perm], values[perm], momentum=0.5)
        tables.append(t.difficulty.tobytes())
    assert tables[0] == tables[1]


def test_restored_state_continues_the_identical_stream():
    """An uninterrupted infinite stream with difficulty updates between chunks, against a sampler rebuilt (other
    seed, no table) that loads the state saved at position 13: mmengine's IterBasedTrainLoop then skips the
    trained positions and the rest is the same index for index."""
    n, bs = 6, 1

    def fresh(seed):
        return HardSampleSampler(list(range(n)), seed=seed, infinite=True, batch_size=bs,
                                 curriculum=dict(by='iter', begin=0, end=10, max_mix=0.9))

    def run(sampler, it, start, stop, saved=None):
        out = []
        for pos in range(start, stop):
            out.append(next(it))
            sampler.consumed = pos + 1
            if (pos + 1) % 4 == 0:  # the hook's update every 4 iterations
                sampler.update_difficulty([pos % n], [float(pos)], momentum=0.5)
            if saved is not None and pos + 1 == 13:
                saved.append(sampler.state_dict())
        return out

    full = fresh(11)
    saved = []
    stream = run(full, iter(full), 0, 30, saved)
    resumed = fresh(99)
    it = iter(resumed)
    next(it)  # a DataLoader may prefetch before the checkpoint is loaded
    resumed.load_state_dict(saved[0])
    assert resumed.seed == 11
    for _ in range(13 - 1):
        next(it)  # the loop's advance over the trained iterations
    assert run(resumed, it, 13, 30) == stream[13:]
    bad = HardSampleSampler(list(range(n + 1)), seed=0)
    with pytest.raises(ValueError, match='7 .*resume with the same datasets'):
        bad.load_state_dict(saved[0])


def test_epoch_state_repeats_a_resumed_epoch():
    s = HardSampleSampler(list(range(9)), seed=2, curriculum=dict(end=1))
    s.difficulty[:] = np.arange(9)
    s.set_epoch(3)
    first = list(s)
    state = s.state_dict()
    s.update_difficulty([0], [100.0], momentum=1.0)  # a mid-epoch update
    t = HardSampleSampler(list(range(9)), seed=5, curriculum=dict(end=1))
    t.load_state_dict(state)
    t.set_epoch(3)
    assert list(t) == first


def test_resuming_on_another_world_size_keeps_the_table_and_draws_afresh(monkeypatch):
    _ranks(monkeypatch, 1, 2)
    two = HardSampleSampler(list(range(6)), seed=2, infinite=True, batch_size=1, curriculum=dict(by='iter', end=1))
    two.difficulty[:] = np.arange(6)
    it = iter(two)
    [next(it) for _ in range(5)]
    state = two.state_dict()
    _ranks(monkeypatch, 0, 1)
    one = HardSampleSampler(list(range(6)), seed=7, infinite=True, batch_size=1, curriculum=dict(by='iter', end=1))
    one.load_state_dict(state)
    np.testing.assert_array_equal(one.difficulty, np.arange(6))
    assert one.seed == 2 and one._chunks == {} and one._restored_from == 0


def test_difficulty_file_maps_hmr_datasets_without_building_an_item(hmr_paths, tmp_path, monkeypatch):
    """BEDLAM, NeuralAnnot and PoseDreamer label sets list their ids (``sample_ids()``): the sampler maps a
    difficulty file over their concatenation with every ``get_data_info`` an error, to the slots the item-by-item
    ids name."""
    from posedreamer_mm.testing.hmr_fixtures import hmr_dataset_cfgs
    cfgs = hmr_dataset_cfgs(hmr_paths)
    leaves = [DATASETS.build(cfgs[k]) for k in ('bedlam', 'coco', 'posedreamer', 'generated')]
    ids = [leaf.get_data_info(i)['id'] for leaf in leaves for i in range(len(leaf))]
    picked = [ids[1], ids[6], ids[9], ids[15]]  # one sample of each leaf
    npz = tmp_path / 'pred.npz'
    np.savez(npz, ids=np.array(picked), difficulty=np.array([1.0, 2.0, 3.0, 4.0]))
    monkeypatch.setattr(BaseDataset, 'get_data_info', lambda *a: pytest.fail('the sampler built an item'))
    s = HardSampleSampler(ConcatDataset(leaves, ignore_keys='dataset_name'), seed=0, difficulty_file=str(npz))
    want = np.full(16, np.nan)
    want[[1, 6, 9, 15]] = [1.0, 2.0, 3.0, 4.0]
    np.testing.assert_array_equal(s.difficulty, want)
