"""Atomic writes leave either the old file or the complete new one; safe_join never leaves its root."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from posedreamer_mm.utils.fileio import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    is_temporary,
    read_id_records,
    remove_stale_temporaries,
    safe_join,
)


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / 'sub' / 'a.bin'
    atomic_write_bytes(target, b'old')
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write(b'new but failing')
            raise RuntimeError('boom')
    assert target.read_bytes() == b'old'
    assert [p.name for p in target.parent.iterdir()] == ['a.bin']  # no temporary left behind
    atomic_write_text(target, 'new')
    assert target.read_text() == 'new'
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)


@pytest.mark.timeout(60)
def test_sigkill_mid_write_leaves_old_file_and_a_recognisable_temporary(tmp_path):
    target = tmp_path / 'big.bin'
    atomic_write_bytes(target, b'complete')
    script = textwrap.dedent(f'''
        import sys, time
        from posedreamer_mm.utils.fileio import atomic_write
        with atomic_write({str(target)!r}) as f:
            f.write(b'x' * 1000)
            f.flush()
            print('writing', flush=True)
            time.sleep(60)
    ''')
    proc = subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == 'writing'
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert target.read_bytes() == b'complete'
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != 'big.bin']
    assert len(leftovers) == 1 and is_temporary(leftovers[0])
    assert remove_stale_temporaries(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ['big.bin']


def test_atomic_write_refuses_other_modes(tmp_path):
    with pytest.raises(ValueError, match='mode'):
        with atomic_write(tmp_path / 'x', 'ab'):
            pass


def test_safe_join_refuses_escapes(tmp_path):
    root = tmp_path / 'root'
    root.mkdir()
    assert safe_join(root, 'labels', 'a.npz') == str((root / 'labels' / 'a.npz').resolve())
    for bad in ('../x', 'a/../../x', '/etc/passwd', ''):
        with pytest.raises(ValueError):
            safe_join(root, bad)
    os.symlink(tmp_path, root / 'link')
    with pytest.raises(ValueError, match='leaves its root'):
        safe_join(root, 'link', 'escaped.txt')


def test_concurrent_writers_of_one_file_leave_one_complete_version(tmp_path):
    # Threads (a writer pool) racing on one target: each writes its own temporary; the survivor is complete.
    from concurrent.futures import ThreadPoolExecutor
    target = tmp_path / 'shared.bin'
    payloads = [bytes([k]) * (50_000 + k) for k in range(16)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda data: atomic_write_bytes(target, data), payloads))
    assert target.read_bytes() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ['shared.bin']


class _Custom(ValueError):
    pass


@pytest.mark.parametrize('text, match', [
    ('{"id": "a"}\n{"id": \n', r'r\.jsonl, line 2: not valid JSON \(.*\); expected one JSON object per line'),
    ('{"id": "a"}\n\n[1, 2]\n', r'r\.jsonl, line 3: expected a JSON object with a string "id", got \'\[1, 2\]\''),
    ('{"id": "a"}\n{"id": 7}\n', r'r\.jsonl, line 2: expected a JSON object with a string "id"'),
    ('{"id": "a"}\n{"id": "b"}\n{"id": "a"}\n', r"r\.jsonl, line 3: sample id 'a' appears twice \(first on line 1\)"),
    (b'{"id": "a"}\n\xff\n', r'cannot read .*r\.jsonl \(UnicodeDecodeError'),
])
def test_id_records_name_file_and_line_in_the_callers_error(tmp_path, text, match):
    path = tmp_path / 'r.jsonl'
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(_Custom, match=match) as info:
        read_id_records(str(path), error=_Custom, prefix='what: ')
    assert str(info.value).startswith(f'what: {path}' if 'line' in match else 'what: cannot read')


def test_id_records_keep_order_line_numbers_and_optional_duplicates(tmp_path):
    path = tmp_path / 'r.jsonl'
    path.write_text('{"id": "a", "x": 1}\n\n  \n{"id": "b"}\n{"id": "a", "x": 2}\n')
    assert read_id_records(str(path), unique=False) == [(1, dict(id='a', x=1)), (4, dict(id='b')),
                                                        (5, dict(id='a', x=2))]
    with pytest.raises(ValueError, match=r'line 5: sample id .a. appears twice'):
        read_id_records(str(path))
    with pytest.raises(ValueError, match=r'cannot read .*none\.jsonl \(FileNotFoundError'):
        read_id_records(str(tmp_path / 'none.jsonl'))
