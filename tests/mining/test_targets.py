"""Target files: the filter's scores.jsonl and an HMR model's id -> error file."""
import collections
import json

import pytest

from posedreamer_mm.apis.mine import read_error_file, read_oks_scores
from posedreamer_mm.mining import MiningError, MiningFileNotFoundError


def test_scores_jsonl_keeps_every_scored_row_and_counts_the_rest(tmp_path):
    rows = [dict(id='a', kept=True, scores=dict(oks=0.91)),
            dict(id='b', kept=False, stage='FilterByOKS', drop_reason='oks_no_match', scores=dict(oks=0.0)),
            dict(id='c', kept=False, error='cannot read image', error_type='ValueError'),
            dict(id='d', kept=True, scores=dict(sharpness=40.0))]
    path = tmp_path / 'scores.jsonl'
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    skipped = collections.Counter()
    assert read_oks_scores(str(path), skipped) == {'a': 0.91, 'b': 0.0}   # a dropped row keeps its (hard) OKS
    assert skipped == {'unreadable when scored': 1, 'no oks score': 1}


def test_error_files(tmp_path):
    (tmp_path / 'e.json').write_text(json.dumps({'a': 12.5, 'b': 80}))
    assert read_error_file(str(tmp_path / 'e.json')) == {'a': 12.5, 'b': 80.0}
    (tmp_path / 'e.jsonl').write_text('{"id": "a", "pve_mm": 3}\n\n{"id": "b", "pve_mm": 4.5}\n')
    assert read_error_file(str(tmp_path / 'e.jsonl'), key='pve_mm') == {'a': 3.0, 'b': 4.5}
    (tmp_path / 'list.json').write_text('[1, 2]')
    with pytest.raises(MiningError, match=r'list.json: expected one JSON object \{id: error\}, got a list'):
        read_error_file(str(tmp_path / 'list.json'))
    (tmp_path / 'text.json').write_text(json.dumps({'a': 'high'}))
    with pytest.raises(MiningError, match='text.json: every error must be a number'):
        read_error_file(str(tmp_path / 'text.json'))
    with pytest.raises(MiningFileNotFoundError, match='none.json not found'):
        read_error_file(str(tmp_path / 'none.json'))


def test_a_target_id_twice_is_refused_naming_both_lines(tmp_path):
    """Two targets for one sample (two runs' files concatenated) were silently reduced to the last one."""
    (tmp_path / 'e.jsonl').write_text('{"id": "a", "error": 3}\n{"id": "b", "error": 4}\n{"id": "a", "error": 9}\n')
    with pytest.raises(MiningError, match=r"e\.jsonl, line 3: sample id 'a' appears twice \(first on line 1\)"):
        read_error_file(str(tmp_path / 'e.jsonl'))
    (tmp_path / 'scores.jsonl').write_text('{"id": "a", "scores": {"oks": 0.5}}\n{"id": "a", "scores": {"oks": 0.9}}\n')
    with pytest.raises(MiningError, match=r"scores\.jsonl, line 2: sample id 'a' appears twice"):
        read_oks_scores(str(tmp_path / 'scores.jsonl'), collections.Counter())
    (tmp_path / 'latin.jsonl').write_bytes(b'{"id": "\xe9"}\n')
    with pytest.raises(MiningError, match=r'cannot read .*latin\.jsonl \(UnicodeDecodeError'):
        read_error_file(str(tmp_path / 'latin.jsonl'))
