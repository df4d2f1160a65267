"""Ids never leave the output directory; label and stand-in files appear atomically or not at all."""
import numpy as np
import pytest

from posedreamer_mm.body.sample import BodySample, sample_file, validate_sample_id
from posedreamer_mm.body.sources import BodyAugment, PoseDreamerLabelSource
from posedreamer_mm.body.sources.base import make_id
from posedreamer_mm.testing import body_fixtures as fx

BAD_IDS = ['../../x', 'a/b', '', '.hidden', '-x', 'a\x00b', 'a b', 'x' * 201, 'é', '..']


@pytest.mark.parametrize('bad', BAD_IDS)
def test_the_id_rule_refuses_path_like_ids_everywhere(tmp_path, bad):
    with pytest.raises(ValueError, match='not a valid'):
        validate_sample_id(bad)
    with pytest.raises(ValueError, match='not a valid'):
        BodySample(id=bad).validate()
    with pytest.raises(ValueError, match='not a valid'):
        sample_file(tmp_path, 'labels', bad, '.npz')
    with pytest.raises(ValueError, match='cannot save .*not a valid'):
        BodySample(id=bad).save_npz(tmp_path / 'x.npz')
    assert not any(tmp_path.iterdir())


def test_sample_file_stays_inside_its_root(tmp_path):
    assert sample_file(tmp_path, 'controls/pncc', 'amass_ab12_000003', '.png') == str(
        (tmp_path / 'controls' / 'pncc' / 'amass_ab12_000003.png').resolve())
    with pytest.raises(ValueError, match='leaves its root'):
        sample_file(tmp_path, '../elsewhere', 'ok', '.npz')


def test_sources_build_only_valid_ids():
    assert make_id('amass', 'sub/x.npz', 3) == validate_sample_id(make_id('amass', 'sub/x.npz', 3))
    with pytest.raises(ValueError, match='not a valid'):
        make_id('../evil', 'x.npz')
    with pytest.raises(ValueError, match='index'):
        make_id('amass', 'x.npz', -1)
    with pytest.raises(ValueError, match='not a valid'):  # nested augmentation past 200 characters
        BodyAugment(seed=1).augmented_id('x' * 195)


def test_label_ids_read_from_files_are_validated_and_bad_files_counted(tmp_path):
    bodies = fx.reference_bodies(num=3)
    paths = fx.write_posedreamer(str(tmp_path), bodies)
    # Rewrite two files with hostile ids: the orphaned label and the escape of the issue.
    for path, bad in zip(paths[1:], ('../../x', 'a/b')):
        with np.load(path) as data:
            content = dict(data)
        content['id'] = np.array(bad)
        np.savez(path, **content)
    source = PoseDreamerLabelSource(str(tmp_path))
    assert len(source) == 1 and len(source.skipped) == 2
    assert all('not a valid' in reason for _, reason in source.skipped)


def test_save_npz_refuses_unreadable_meta_naming_file_and_key(tmp_path):
    target = tmp_path / 'labels' / 'x.npz'
    for meta, key in (({'bad': np.array([{'a': 1}], dtype=object)}, 'bad'), ({'obj': object()}, 'obj'),
                      ({3: 'int key'}, '3')):
        with pytest.raises(ValueError, match=rf'{target}.*{key}'):
            BodySample(id='x', meta=meta).save_npz(target)
    assert not target.exists() and not any(p for p in tmp_path.rglob('*') if p.is_file())


def test_failed_save_leaves_no_temporary(tmp_path, monkeypatch):
    # Before: save_npz left '<path>.tmp<pid>' behind when np.savez failed.
    def boom(*args, **kwargs):
        raise OSError('disk full')
    monkeypatch.setattr(np, 'savez', boom)
    with pytest.raises(OSError, match='disk full'):
        BodySample(id='x').save_npz(tmp_path / 'x.npz')
    assert list(tmp_path.iterdir()) == []


def test_load_npz_names_the_file(tmp_path):
    path = tmp_path / 'x.npz'
    path.write_bytes(b'PK\x03\x04 truncated')
    with pytest.raises(ValueError, match=str(path)):
        BodySample.load_npz(path)


def test_interrupted_standin_write_leaves_no_truncated_model(tmp_path, monkeypatch):
    # Before: the stand-in was written in place, so an interrupted write left a truncated SMPLX_NEUTRAL.npz that
    # every later run refused. (A SIGKILL mid-write is tested on utils.fileio.atomic_write itself, which this uses.)
    from posedreamer_mm.body import standin

    def interrupted_savez(file, **arrays):
        file.write(b'PK\x03\x04' + b'x' * 4096)
        raise KeyboardInterrupt

    monkeypatch.setattr(standin, 'build_standin', lambda *a, **k: dict(v_template=np.zeros((1, 3))))
    monkeypatch.setattr(np, 'savez_compressed', interrupted_savez)
    with pytest.raises(KeyboardInterrupt):
        standin.write_standin_smplx(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['smplx'] and not any((tmp_path / 'smplx').iterdir())
