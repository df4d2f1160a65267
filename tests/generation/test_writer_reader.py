"""The dataset format: shards written atomically, read back with random access; conflicts refused."""
import json
import os

import numpy as np
import pytest

from posedreamer_mm.body.sample import BodySample
from posedreamer_mm.generation.reader import GeneratedDataReader, memmap_npz
from posedreamer_mm.generation.writer import OutputConflictError, ShardedDatasetWriter, stack_labels


def _sample(i: int) -> BodySample:
    rng = np.random.default_rng(i)
    return BodySample(id=f'smp_{i:03d}', betas=rng.normal(size=10), body_pose=rng.normal(size=63),
                      transl=[0, 0, 3 + i], joints_3d=rng.normal(size=(127, 3)), joints_2d=rng.normal(size=(127, 2)),
                      keypoints_coco17=rng.normal(size=(17, 3)), bbox=[1, 2, 3, 4],
                      gender='male' if i % 2 else 'female',
                      meta={'crop_box': [0.5, 1.0, 2.0, 2.0], 'arr': np.arange(i + 1)})


def _write(root, writer, n, drop=(), fail=()):
    header = dict(fingerprint='f1', config=dict(seed=0), num_samples=n)
    writer.prepare_output(str(root), header)
    for s in range(writer.num_shards(n)):
        shard = writer.open_shard(str(root), s, n)
        for i in shard.indices:
            smp = _sample(i)
            if i in drop:
                shard.drop(i, smp.id, 'too_small')
            elif i in fail:
                shard.fail(i, smp.id, 'ValueError: broken')
            else:
                img = np.random.default_rng(i).integers(0, 255, (16, 12, 3), dtype=np.uint8)
                shard.add(i, dict(sample=smp, img=img, seed=100 + i, prompt=f'p{i}', backend='test',
                                  controls={'pncc': img[::-1].copy()}, scores={'oks': 0.5}))
        shard.commit()
    return writer.finalize(str(root), n)


def test_round_trip_random_access_and_counts(tmp_path):
    writer = ShardedDatasetWriter(shard_size=3, image_format='png')
    manifest = _write(tmp_path, writer, 7, drop={1}, fail={5})
    assert manifest['status'] == 'complete' and manifest['counts'] == dict(written=5, dropped=1, failed=1)
    reader = GeneratedDataReader(tmp_path)
    assert reader.ids == [f'smp_{i:03d}' for i in (0, 2, 3, 4, 6)]
    for row, i in enumerate((0, 2, 3, 4, 6)):
        assert reader.index_of(f'smp_{i:03d}') == row
        got, want = reader.sample(row), _sample(i)
        for key in ('betas', 'body_pose', 'transl', 'joints_3d', 'keypoints_coco17', 'bbox', 'img_size'):
            np.testing.assert_array_equal(getattr(got, key), getattr(want, key), err_msg=key)
        assert got.gender == want.gender and got.meta['arr'] == list(range(i + 1))
        # PNG is lossless: the image comes back bit for bit, RGB.
        np.testing.assert_array_equal(reader.load_image(row),
                                      np.random.default_rng(i).integers(0, 255, (16, 12, 3), dtype=np.uint8))
        assert reader.meta(row)['seed'] == 100 + i and reader.meta(row)['scores'] == {'oks': 0.5}
        assert os.path.isfile(reader.control_path(row, 'pncc'))
    with pytest.raises(KeyError, match='depth'):
        reader.control_path(0, 'depth')
    with pytest.raises(KeyError, match='nope'):
        reader.index_of('nope')
    info = json.loads((tmp_path / 'shards' / '000001' / 'shard.json').read_text())
    assert info['failed'] == [dict(index=5, id='smp_005', reason='ValueError: broken')]


def test_labels_are_memory_mapped_and_the_reader_pickles(tmp_path):
    import pickle
    _write(tmp_path, ShardedDatasetWriter(shard_size=4), 4)
    maps = memmap_npz(str(tmp_path / 'shards' / '000000' / 'labels.npz'))
    assert isinstance(maps['joints_3d'], np.memmap) and maps['joints_3d'].shape == (4, 127, 3)
    with np.load(tmp_path / 'shards' / '000000' / 'labels.npz') as ref:
        for key in ref.files:
            np.testing.assert_array_equal(maps[key], ref[key])
    reader = GeneratedDataReader(tmp_path)
    reader.sample(0)
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone.sample(3).betas, reader.sample(3).betas)


def test_temporary_and_uncommitted_shards_are_invisible(tmp_path):
    writer = ShardedDatasetWriter(shard_size=2)
    _write(tmp_path, writer, 4)
    partial = writer.open_shard(str(tmp_path), 2, 6)  # a killed run's shard, still in its temporary directory
    partial.add(4, dict(sample=_sample(4), img=np.zeros((4, 4, 3), np.uint8), seed=0))
    assert len(GeneratedDataReader(tmp_path)) == 4
    assert writer.complete_shards(str(tmp_path)) == {0, 1}
    assert writer.remove_partial(str(tmp_path), {2}) == 1
    assert not [n for n in os.listdir(tmp_path / 'shards') if n.startswith('.')]


def test_other_config_and_foreign_directories_are_refused(tmp_path):
    writer = ShardedDatasetWriter(shard_size=2)
    _write(tmp_path / 'a', writer, 2)
    with pytest.raises(OutputConflictError, match=r"different config or seed.*differing keys: \['seed'\]"):
        writer.prepare_output(str(tmp_path / 'a'), dict(fingerprint='f2', config=dict(seed=1)))
    (tmp_path / 'b').mkdir()
    (tmp_path / 'b' / 'notes.txt').write_text('mine')
    with pytest.raises(OutputConflictError, match='not a generated dataset'):
        writer.prepare_output(str(tmp_path / 'b'), dict(fingerprint='f1', config={}))
    with pytest.raises(OutputConflictError, match='manifest.json not found'):
        GeneratedDataReader(tmp_path / 'b')


def test_bad_ids_and_mixed_shapes_are_rejected(tmp_path):
    writer = ShardedDatasetWriter(shard_size=2)
    writer.prepare_output(str(tmp_path), dict(fingerprint='f', config={}))
    shard = writer.open_shard(str(tmp_path), 0, 2)
    evil = _sample(0)
    evil.id = '../../escape'
    with pytest.raises(ValueError, match='not a valid id'):
        shard.add(0, dict(sample=evil, img=np.zeros((4, 4, 3), np.uint8), seed=0))
    assert not (tmp_path.parent / 'escape.jpg').exists()
    a, b = _sample(0), _sample(1)
    b.betas = np.zeros(11, np.float32)
    with pytest.raises(ValueError, match="'betas' has different shapes"):
        stack_labels([a, b])
