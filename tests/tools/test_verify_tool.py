"""tools/verify_dataset.py: one line per shard, exit 1 on any bad shard; a 1000-sample shard verifies quickly."""
import shutil
import subprocess
import sys
import time
from pathlib import Path

from posedreamer_mm.apis.verify import main, parse_shards, verify_dataset
from posedreamer_mm.generation.writer import ShardedDatasetWriter
from tests.generation.test_writer_reader import _write

ROOT = Path(__file__).resolve().parents[2]


def _verify(*args):
    return subprocess.run([sys.executable, str(ROOT / 'tools' / 'verify_dataset.py'), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_the_tool_prints_each_shard_and_exits_1_on_a_bad_one(tmp_path, capsys):
    _write(tmp_path, ShardedDatasetWriter(shard_size=3, image_format='jpg'), 8)
    assert main([str(tmp_path), '--no-progress']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line[:11] for line in lines[:3]] == ['000000  ok ', '000001  ok ', '000002  ok ']
    assert lines[0].startswith('000000  ok   3 samples, 8 files,') and lines[2].startswith('000002  ok   2 samples')
    assert lines[-1].startswith('OK: 3 of 3 shards ok (8 samples')
    image = tmp_path / 'shards' / '000001' / 'images' / 'smp_004.jpg'
    image.write_bytes(image.read_bytes()[:-1] + b'\x00')
    res = _verify(tmp_path, '--workers', '2')  # the tool itself, in its own process
    assert res.returncode == 1
    assert '000001  BAD  3 samples, 8 files' in res.stdout
    assert f"{tmp_path}/shards/000001: 1 files do not match their sha256 in shard.json: ['images/smp_004.jpg']" \
        in res.stdout
    assert "FAILED: 2 of 3 shards ok, bad: ['000001']" in res.stdout
    assert 'verify: 100%' in res.stderr and '3/3' in res.stderr  # the progress bar, on stderr
    assert main([str(tmp_path), '--shards', '0', '2', '--no-progress']) == 0  # the bad shard not chosen


def test_incomplete_folders_missing_shards_and_non_datasets_fail(tmp_path, capsys):
    writer = ShardedDatasetWriter(shard_size=2, image_format='png')
    _write(tmp_path, writer, 6)
    (tmp_path / 'shards' / '000002' / 'shard.json').unlink()  # an interrupted copy
    assert main([str(tmp_path), '--no-progress']) == 1
    out = capsys.readouterr().out
    assert '000002  BAD' in out and 'shard.json is missing: an incomplete shard folder' in out
    shutil.rmtree(tmp_path / 'shards' / '000002')
    assert main([str(tmp_path), '--no-progress']) == 1
    assert "lists shards that are not there: ['000002']" in capsys.readouterr().out
    assert main([str(tmp_path / 'shards'), '--no-progress']) == 1
    assert 'manifest.json not found' in capsys.readouterr().err
    assert main([str(tmp_path), '--shards', 'x']) == 1
    assert "--shards 'x': expected a shard number" in capsys.readouterr().err
    assert main([str(tmp_path), '--shards', '7', '--no-progress']) == 1
    assert "shards ['000007'] are not in" in capsys.readouterr().out


def test_parse_shards():
    assert parse_shards(['3', '000005', '7-9', '1,2']) == [1, 2, 3, 5, 7, 8, 9]


def test_a_1000_sample_shard_verifies_in_seconds(tmp_path):
    _write(tmp_path, ShardedDatasetWriter(shard_size=1000, image_format='jpg'), 1000)
    start = time.perf_counter()
    result = verify_dataset(str(tmp_path), workers=1, progress=False)
    seconds = time.perf_counter() - start
    assert result['ok'] and result['checks'][0].files == 2002 and result['checks'][0].samples == 1000
    assert seconds < 10, f'{seconds:.1f} s for 2002 files'
