"""The dataset format: shards written atomically, read back with random access; conflicts refused."""
import json
import os

import numpy as np
import pytest

from posedreamer_mm.body.sample import BodySample
from posedreamer_mm.generation.reader import DatasetIntegrityError, GeneratedDataReader, memmap_npz
from posedreamer_mm.generation.writer import OutputConflictError, ShardedDatasetWriter, stack_labels


def _sample(i: int) -> BodySample:
    rng = np.random.default_rng(i)
    return BodySample(id=f'smp_{i:03d}', betas=rng.normal(size=10), body_pose=rng.normal(size=63),
                      transl=[0, 0, 3 + i], joints_3d=rng.normal(size=(127, 3)), joints_2d=rng.normal(size=(127, 2)),
                      keypoints_coco17=rng.normal(size=(17, 3)), bbox=[1, 2, 3, 4],
                      gender='male' if i % 2 else 'female',
                      meta={'crop_box': [0.5, 1.0, 2.0, 2.0], 'arr': np.arange(i + 1)})


def _write(root, writer, n, drop=(), fail=(), resume=False):
    """Writes every shard, or (``resume``) only the incomplete ones after removing their leftovers, as
    ``DatasetGenerator.run`` does."""
    header = dict(fingerprint='f1', config=dict(seed=0), num_samples=n)
    writer.prepare_output(str(root), header)
    todo = range(writer.num_shards(n))
    if resume:
        todo = [s for s in todo if s not in writer.complete_shards(str(root))]
        writer.remove_partial(str(root), set(todo))
    for s in todo:
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


def _lines(path):
    return path.read_text().splitlines(keepends=True)


def test_a_deleted_meta_line_is_an_error_naming_the_file_and_the_first_mismatching_id(tmp_path):
    _write(tmp_path, ShardedDatasetWriter(shard_size=4, image_format='png'), 8)
    meta = tmp_path / 'shards' / '000001' / 'meta.jsonl'
    lines = _lines(meta)
    meta.write_text(''.join(lines[:1] + lines[2:]))  # row 1 (smp_005) gone: smp_006 would get smp_005's labels
    with pytest.raises(DatasetIntegrityError, match=rf"{meta}, line 2: id 'smp_006' says row 2, expected row 1"):
        GeneratedDataReader(tmp_path)


def test_labels_and_meta_rows_must_carry_the_same_ids(tmp_path):
    _write(tmp_path, ShardedDatasetWriter(shard_size=4, image_format='png'), 8)
    folder = tmp_path / 'shards' / '000001'
    lines = _lines(folder / 'meta.jsonl')
    # Two lines swapped with their row numbers rewritten: each row is consistent, the pairing is not.
    swapped = [json.loads(lines[1]) | dict(row=0), json.loads(lines[0]) | dict(row=1)]
    (folder / 'meta.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in swapped) + ''.join(lines[2:]))
    reader = GeneratedDataReader(tmp_path)
    assert reader.sample(0).id == 'smp_000'  # shard 0 is intact
    with pytest.raises(DatasetIntegrityError, match=r"row 0: .*000001/meta.jsonl has id 'smp_005' but "
                                                    r".*000001/labels.npz has id 'smp_004'"):
        reader.sample(4)
    # The last line deleted: every remaining row is in place, but labels.npz has one row more.
    (folder / 'meta.jsonl').write_text(''.join(lines[:3]))
    with pytest.raises(DatasetIntegrityError, match=r"has 3 rows but .*labels.npz has 4; the first unmatched id is "
                                                    r"'smp_007'"):
        GeneratedDataReader(tmp_path).sample(4)


def test_a_truncated_meta_file_is_an_error_naming_it(tmp_path):
    _write(tmp_path, ShardedDatasetWriter(shard_size=4, image_format='png'), 8)
    meta = tmp_path / 'shards' / '000000' / 'meta.jsonl'
    meta.write_bytes(meta.read_bytes()[:-40])
    with pytest.raises(DatasetIntegrityError, match=rf'{meta}, line 4: not valid JSON'):
        GeneratedDataReader(tmp_path)


def test_verify_checks_every_checksum_and_names_the_file(tmp_path):
    _write(tmp_path, ShardedDatasetWriter(shard_size=4, image_format='png'), 12)
    assert [c.ok for c in GeneratedDataReader(tmp_path).verify()] == [True, True, True]
    image = tmp_path / 'shards' / '000001' / 'images' / 'smp_005.png'
    data = bytearray(image.read_bytes())
    data[-20] ^= 1  # one bit in the image data
    image.write_bytes(bytes(data))
    (tmp_path / 'shards' / '000002' / 'controls' / 'pncc' / 'smp_009.png').unlink()
    (tmp_path / 'shards' / '000002' / 'stray.txt').write_text('x')
    checks = GeneratedDataReader(tmp_path).verify()
    assert checks[0].ok and checks[0].samples == 4 and checks[0].files == 4 + 4 + 2
    assert checks[1].problems == [f'{tmp_path}/shards/000001: 1 files do not match their sha256 in shard.json: '
                                  "['images/smp_005.png']"]
    assert checks[2].problems[0] == (f"{tmp_path}/shards/000002: 1 listed files are missing: "
                                     "['controls/pncc/smp_009.png']")
    assert "not listed in shard.json: ['stray.txt']" in checks[2].problems[1]
    with pytest.raises(DatasetIntegrityError, match='2 of 3 shards failed verification'):
        GeneratedDataReader(tmp_path, verify=True)


def test_verify_checks_index_coverage_and_the_manifests_record(tmp_path):
    _write(tmp_path, ShardedDatasetWriter(shard_size=2, image_format='png'), 6, drop={2, 3}, fail={5})
    checks = GeneratedDataReader(tmp_path).verify()
    assert [c.ok for c in checks] == [True, True, True] and [c.samples for c in checks] == [2, 0, 1]
    info_path = tmp_path / 'shards' / '000001' / 'shard.json'
    info = json.loads(info_path.read_text())
    info['dropped'] = info['dropped'][:1]  # index 3 no longer accounted for
    info_path.write_text(json.dumps(info))
    problems = GeneratedDataReader(tmp_path).verify()[1].problems
    assert problems == [f'{tmp_path}/shards/000001: written, dropped and failed indices do not cover [2, 4) once each',
                        f'{info_path} does not match its sha256 in {tmp_path}/manifest.json']
