"""tools/make_dpo_pairs.py under hostile input: broken scores files, malformed groups, reruns into one output, a
failure and a SIGKILL while writing. Every expected value is written by hand."""
import json
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from posedreamer_mm.apis import dpo_pairs as dp
from posedreamer_mm.apis.dpo_pairs import build_pairs, make_pairs, read_scores
from posedreamer_mm.body.sample import BodySample
from posedreamer_mm.datasets.dpo_pairs import PairsFileError
from posedreamer_mm.generation.reader import GeneratedDataReader
from tests.datasets.test_dpo_pairs import write_candidates

ROOT = Path(__file__).resolve().parents[2]


def write_scores(path, oks: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(json.dumps(dict(id=k, scores=dict(oks=v), match=dict(index=0))) + '\n'
                            for k, v in oks.items()))
    return path


# --- the scores file ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('text', ['', '\n \n'])
def test_an_empty_scores_file_is_refused_not_paired_to_nothing(tmp_path, text):
    # before: every candidate became 'not_in_scores', 0 pairs were written and the tool exited 0
    path = tmp_path / 'scores.jsonl'
    path.write_text(text)
    with pytest.raises(PairsFileError, match=r'scores.jsonl holds no record'):
        read_scores(str(path))


def test_a_truncated_last_line_names_the_line(tmp_path):
    # a filter job killed mid-line (the filter writes atomically, but a copied or hand-made file may not be)
    path = tmp_path / 'scores.jsonl'
    path.write_text('{"id": "a", "scores": {"oks": 0.5}}\n{"id": "b", "scores": {"oks": 0.')
    with pytest.raises(PairsFileError, match=r'scores.jsonl, line 2: not valid JSON'):
        read_scores(str(path))


@pytest.mark.parametrize('value', ['-0.1', '1.5', '"0.8"', 'true', 'Infinity', '-Infinity', '[0.5]'])
def test_an_oks_that_is_no_oks_is_refused_naming_file_line_and_value(tmp_path, value):
    # OKS is in [0, 1] by definition (COCO); before, -0.1 and 1.5 were paired as they were and a string or a list
    # was silently counted as 'no_oks'
    path = tmp_path / 'scores.jsonl'
    path.write_text('{"id": "a", "scores": {"oks": 0.5}}\n{"id": "b", "scores": {"oks": %s}}\n' % value)
    with pytest.raises(PairsFileError, match=r"scores.jsonl, line 2: sample 'b' has scores.oks .* expected a "
                                             r'number in \[0, 1\]'):
        read_scores(str(path))


def test_the_ends_of_the_oks_range_and_of_the_thresholds_are_accepted(tmp_path):
    path = tmp_path / 'scores.jsonl'
    path.write_text('{"id": "p0_c000", "scores": {"oks": 0}}\n{"id": "p0_c001", "scores": {"oks": 1}}\n'
                    '{"id": "p0_c002", "error": "cannot read image"}\n')
    scores = read_scores(str(path))
    assert [dp.candidate_oks(scores[k]) for k in ('p0_c000', 'p0_c001', 'p0_c002')] == [
        (0.0, None), (1.0, None), (None, 'error')]
    reader = write_candidates(tmp_path / 'cand', [('p0', 3)])
    assert build_pairs(reader, scores, min_gap=1.0, min_winner=1.0)[1]['num_pairs'] == 1   # 1 - 0 >= 1
    assert build_pairs(reader, scores, min_gap=0, min_winner=0)[1]['num_pairs'] == 1


def test_nan_oks_and_a_missing_oks_stay_unscored_and_counted(tmp_path):
    # NaN is what the OKS formula gives a label with NaN keypoints: that candidate is skipped and counted
    reader = write_candidates(tmp_path / 'cand', [('p0', 3)])
    path = tmp_path / 'scores.jsonl'
    path.write_text('{"id": "p0_c000", "scores": {"oks": NaN}}\n{"id": "p0_c001", "scores": {"oks": 0.9}}\n'
                    '{"id": "p0_c002", "scores": {"oks": 1.0}}\n')
    pairs, report, _ = build_pairs(reader, read_scores(str(path)))
    assert report['unscored_by_cause']['no_oks'] == 1 and report['groups_by_reason']['paired'] == 1
    assert (pairs[0]['winner']['id'], pairs[0]['loser']['id']) == ('p0_c002', 'p0_c001')


def test_reading_scores_keeps_only_what_pairing_needs(tmp_path):
    # filter records carry every detection's keypoints (~1.3 kB a line): the whole file held as text, lines and
    # dicts took ~9x its size (measured 1.2 GB for 100k candidates: ~12 GB for a million); streamed, the kept
    # part (id, error, scores.oks, match.index) is a fraction of the file
    import tracemalloc
    rng = np.random.default_rng(0)
    path = tmp_path / 'scores.jsonl'
    with open(path, 'w') as f:
        for i in range(2000):
            det = dict(scorer='mmpose', image_size=[512, 512],
                       keypoints=np.round(rng.random((2, 17, 2)) * 512, 2).tolist(),
                       keypoint_scores=np.round(rng.random((2, 17)), 4).tolist(),
                       bboxes=[[1.5, 2.5, 300.25, 400.75]] * 2, bbox_scores=[0.9, 0.8])
            match = dict(index=None if i == 5 else 0, oks=0.5, distance=3.0, reason='best')
            f.write(json.dumps(dict(id=f'p{i // 4}_c{i % 4:03d}', index=i, kept=True, stage=None, drop_reason=None,
                                    scores=dict(oks=0.5, num_detections=2.0), detections=det, match=match)) + '\n')
    with open(path, 'a') as f:   # a blank line between records is skipped, not the end of the file
        f.write('\n' + json.dumps(dict(id='late', scores=dict(oks=0.25), match=None)) + '\n')
    tracemalloc.start()
    try:
        scores = read_scores(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < path.stat().st_size, (peak, path.stat().st_size)
    assert scores['p0_c001'] == dict(id='p0_c001', scores=dict(oks=0.5), match=dict(index=0))
    assert dp.candidate_oks(scores['p1_c001']) == (None, 'no_match')
    assert len(scores) == 2001 and dp.candidate_oks(scores['late']) == (0.25, None)


def test_scores_of_another_candidates_run_with_the_same_ids_are_refused(scored, tmp_path):
    # SD1.5 and FLUX candidates of one pose config share every id: --scores pointing at the other run's file paired
    # these images by the other images' OKS. tools/filter.py writes summary.json (data_root) beside scores.jsonl
    root, scores = scored
    other = tmp_path / 'flux'
    write_candidates(other, [('p0', 3), ('p1', 2)])
    manifest = json.loads((other / 'manifest.json').read_text())
    (other / 'manifest.json').write_text(json.dumps(dict(manifest, fingerprint='flux-config')))
    flux_scores = write_scores(other / 'filter' / 'scores.jsonl', OKS)
    (other / 'filter' / 'summary.json').write_text(json.dumps(dict(data_root=str(other), num_samples=5)))
    with pytest.raises(PairsFileError, match=r"flux/filter/scores.jsonl scores .*flux \(fingerprint 'flux-config'\), "
                                             r"not .*cand \(fingerprint 'dpo-pairs-test'\)"):
        make_pairs(str(root), str(flux_scores), str(tmp_path / 'pairs.jsonl'))
    assert not (tmp_path / 'pairs.jsonl').exists()
    # the scores of this dataset, or of a copy of it (same fingerprint), or of a folder gone since: paired
    (root / 'filter' / 'summary.json').write_text(json.dumps(dict(data_root=str(root), num_samples=5)))
    assert make_pairs(str(root), str(scores), str(tmp_path / 'a.jsonl'))['num_pairs'] == 2
    (other / 'manifest.json').write_text(json.dumps(manifest))
    assert make_pairs(str(root), str(flux_scores), str(tmp_path / 'b.jsonl'))['num_pairs'] == 2
    (other / 'filter' / 'summary.json').write_text(json.dumps(dict(data_root=str(tmp_path / 'gone'))))
    assert make_pairs(str(root), str(flux_scores), str(tmp_path / 'c.jsonl'))['num_pairs'] == 2


def test_scored_ids_missing_from_the_dataset_name_the_scores_file_and_both_causes(scored):
    # before: 'the scores name 1 ids that are not in <root>: they score another dataset', without the file, and
    # wrong when the dataset lost a shard since scoring (a folder without shard.json is skipped by the reader)
    root, scores = scored
    write_scores(scores, dict(OKS, p9_c000=0.5))
    with pytest.raises(PairsFileError, match=r"scores.jsonl names 1 ids that are not in .*cand \(first: \['p9_c000'\]; "
                                             r'5 are\): the scores of another dataset, or .* lost rows'):
        make_pairs(str(root), str(scores), str(root / 'dpo_pairs.jsonl'))


@pytest.mark.parametrize('kw, key', [(dict(min_gap=float('nan')), 'min_gap'), (dict(min_gap=-0.1), 'min_gap'),
                                     (dict(min_gap=1.5), 'min_gap'), (dict(min_winner=float('nan')), 'min_winner'),
                                     (dict(min_winner=2.0), 'min_winner'), (dict(min_gap='0.1'), 'min_gap'),
                                     (dict(min_winner=True), 'min_winner')])
def test_thresholds_outside_0_1_are_refused(tmp_path, kw, key):
    # before: --min-gap nan compared False everywhere, so every group that was no tie was paired
    reader = write_candidates(tmp_path / 'cand', [('p0', 2)])
    scores = {'p0_c000': dict(id='p0_c000', scores=dict(oks=0.9)), 'p0_c001': dict(id='p0_c001', scores=dict(oks=0.89))}
    with pytest.raises(ValueError, match=f'{key} must be a number in \\[0, 1\\]'):
        build_pairs(reader, scores, **kw)


# --- the candidates -------------------------------------------------------------------------------------------------
def test_a_group_whose_candidates_have_other_labels_or_prompts_is_refused(tmp_path):
    # candidates of one group must share one control: the pair's control is the winner's, so a loser made from
    # another pose would teach the model that the winner's control produced it
    other = BodySample(id='p0_c002', img_size=np.array([16, 16]), body_pose=np.full(63, 0.3, np.float32))
    reader = write_candidates(tmp_path / 'a', [('p0', 3), ('p1', 2)], extra={'p0_c002': dict(sample=other)})
    with pytest.raises(PairsFileError, match=r"group 'p0': candidate 'p0_c002' \(row 2\) has another label "
                                             r"\['body_pose'\] than candidate 'p0_c000' \(row 0\)"):
        build_pairs(reader, {})
    female = BodySample(id='p1_c001', img_size=np.array([16, 16]), gender='female')
    reader = write_candidates(tmp_path / 'g', [('p0', 2), ('p1', 2)], extra={'p1_c001': dict(sample=female)})
    with pytest.raises(PairsFileError, match=r"group 'p1': .*'p1_c001' \(row 3\) has another label \['gender'\]"):
        build_pairs(reader, {})
    reader = write_candidates(tmp_path / 'b', [('p0', 2), ('p1', 2)], extra={'p1_c001': dict(prompt='a dog')})
    with pytest.raises(PairsFileError, match=r"group 'p1'.*p1_c001.*prompt"):
        build_pairs(reader, {})


def test_labels_equal_to_float_rounding_are_one_control(tmp_path):
    # a pose split between two shards is prepared once per shard, possibly on another machine: the last bits of
    # the crop camera may differ, and that is still one control
    near = BodySample(id='p0_c001', img_size=np.array([16, 16]), body_pose=np.full(63, 1e-7, np.float32),
                      focal=np.array([890.001, 890.0], np.float32))   # the writer's default focal is 890
    reader = write_candidates(tmp_path / 'a', [('p0', 2)], extra={'p0_c001': dict(sample=near)})
    assert build_pairs(reader, {})[1]['groups_by_reason']['too_few_scored'] == 1


def test_a_candidate_number_twice_or_not_an_integer_is_refused(tmp_path):
    # two rows claiming to be candidate 0 of p0: a merged or hand-edited dataset, not the generator's
    reader = write_candidates(tmp_path / 'a', [('p0', 3)], extra={'p0_c001': dict(candidate=0)})
    with pytest.raises(PairsFileError, match=r"group 'p0'.*candidate 0 .*twice"):
        build_pairs(reader, {})
    reader = write_candidates(tmp_path / 'b', [('p0', 2)], extra={'p0_c001': dict(candidate='1')})
    with pytest.raises(PairsFileError, match=r"row 1 \(sample 'p0_c001'\) has \"candidate\" '1' .*expected an integer"):
        build_pairs(reader, {})
    reader = write_candidates(tmp_path / 'c', [('p0', 2)])
    for f in (tmp_path / 'c').rglob('meta.jsonl'):   # a row with its group but without its candidate number
        f.write_text(f.read_text().replace('"candidate": 1', '"cand": 1'))
    with pytest.raises(PairsFileError, match=r'row 1 .* has no "group"/"candidate"'):
        build_pairs(GeneratedDataReader(str(tmp_path / 'c')), {})


def test_a_group_of_one_and_equal_oks_are_counted_not_paired(tmp_path):
    reader = write_candidates(tmp_path / 'cand', [('p0', 1), ('p1', 3)])
    scores = {k: dict(id=k, scores=dict(oks=v)) for k, v in
              dict(p0_c000=0.9, p1_c000=0.7, p1_c001=0.7, p1_c002=0.7).items()}
    pairs, report, gaps = build_pairs(reader, scores)
    assert pairs == [] and report['groups_by_reason'] == dict(paired=0, too_few_scored=1, tie=1,
                                                              winner_below_min=0, gap_below_min=0)
    assert gaps == [0.0]


# --- the output ------------------------------------------------------------------------------------------------------
OKS = dict(p0_c000=0.9, p0_c001=0.5, p0_c002=0.3,      # gap 0.6
           p1_c000=0.9, p1_c001=0.8)                   # gap 0.1


@pytest.fixture
def scored(tmp_path):
    write_candidates(tmp_path / 'cand', [('p0', 3), ('p1', 2)])
    return tmp_path / 'cand', write_scores(tmp_path / 'cand' / 'filter' / 'scores.jsonl', OKS)


def read_lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_a_second_run_with_other_settings_does_not_clobber_the_pairs(scored):
    root, scores = scored
    out = root / 'dpo_pairs.jsonl'
    first = make_pairs(str(root), str(scores), str(out))
    assert first['num_pairs'] == 2 and [p['group'] for p in read_lines(out)] == ['p0', 'p1']
    before = {p: (root / p).read_bytes() for p in ('dpo_pairs.jsonl', 'dpo_pairs.report.json')}
    # the same settings again: the same files (a rerun is harmless)
    assert make_pairs(str(root), str(scores), str(out))['num_pairs'] == 2
    assert (root / 'dpo_pairs.jsonl').read_bytes() == before['dpo_pairs.jsonl']
    # other thresholds into the same file: refused, naming the file and the setting; nothing changed
    with pytest.raises(PairsFileError, match=r'dpo_pairs.jsonl was made with other settings \(min_gap 0.05 there, '
                                             r'0.3 now\).*--out.*--overwrite'):
        make_pairs(str(root), str(scores), str(out), min_gap=0.3)
    assert {p: (root / p).read_bytes() for p in before} == before
    # asked for: replaced, and the report says what the file holds
    report = make_pairs(str(root), str(scores), str(out), min_gap=0.3, overwrite=True)
    assert [p['group'] for p in read_lines(out)] == ['p0'] and report['num_pairs'] == 1
    assert json.loads((root / 'dpo_pairs.report.json').read_text())['min_gap'] == 0.3
    # the same settings on new scores (a rescoring): replaced, and the report says what it replaced
    write_scores(scores, dict(OKS, p1_c001=0.1))
    report = make_pairs(str(root), str(scores), str(out), min_gap=0.3)
    assert report['num_pairs'] == 2 and report['replaced']['num_pairs'] == 1


def test_a_pairs_file_without_its_report_or_edited_since_is_not_replaced(scored):
    root, scores = scored
    out = root / 'my_pairs.jsonl'
    out.write_text('{"hand": "made"}\n')
    with pytest.raises(PairsFileError, match=r'my_pairs.jsonl exists and has no my_pairs.report.json'):
        make_pairs(str(root), str(scores), str(out))
    assert out.read_text() == '{"hand": "made"}\n'
    # made by the tool, then one pair removed by hand: the same command again would silently undo the edit
    make_pairs(str(root), str(scores), str(out), overwrite=True)
    edited = out.read_text().splitlines()[0] + '\n'
    out.write_text(edited)
    with pytest.raises(PairsFileError, match=r'my_pairs.jsonl is not the file its report .* describes'):
        make_pairs(str(root), str(scores), str(out))
    assert out.read_text() == edited


@pytest.mark.parametrize('target, what', [
    ('filter/scores.jsonl', 'the scores file'), ('manifest.json', "the candidates dataset's manifest.json"),
    ('summary.json', "the candidates dataset's summary.json"), ('writer.lock', "the candidates dataset's writer.lock"),
    ('shards/000000/meta.jsonl', "a file of the candidates dataset's shards")])
def test_the_output_cannot_be_an_input(scored, target, what):
    # a mistyped --out used to overwrite the scores or the dataset's own files (even with --overwrite it must not)
    root, scores = scored
    path = root / target
    before = path.read_bytes() if path.exists() else None
    with pytest.raises(PairsFileError, match=f'would overwrite {what}; choose another --out'):
        make_pairs(str(root), str(scores), str(path), overwrite=True)
    assert (path.read_bytes() if path.exists() else None) == before


def test_the_output_cannot_be_a_directory(scored):
    root, scores = scored
    with pytest.raises(PairsFileError, match=r'--out .*filter: writing .* would overwrite a directory'):
        make_pairs(str(root), str(scores), str(root / 'filter'), overwrite=True)


def test_a_failure_while_writing_keeps_the_previous_pairs_and_report_together(scored, monkeypatch):
    root, scores = scored
    out = root / 'dpo_pairs.jsonl'
    make_pairs(str(root), str(scores), str(out))
    before = {p.name: p.read_bytes() for p in root.glob('dpo_pairs*')}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt('killed while drawing the report')

    monkeypatch.setattr(dp, 'save_pairs_report_png', killed)
    with pytest.raises(KeyboardInterrupt):
        make_pairs(str(root), str(scores), str(out), min_gap=0.3, overwrite=True)
    # before: the new pairs were already renamed in, next to the old report (min_gap 0.05 for a 0.3 file)
    assert {p.name: p.read_bytes() for p in root.glob('dpo_pairs*')} == before
    assert not [p for p in root.iterdir() if '.tmp-' in p.name]


def test_the_report_names_the_pairs_it_describes(scored):
    import hashlib
    root, scores = scored
    report = make_pairs(str(root), str(scores), str(root / 'dpo_pairs.jsonl'))
    assert report['pairs_sha256'] == hashlib.sha256((root / 'dpo_pairs.jsonl').read_bytes()).hexdigest()
    assert report['scores_sha256'] == hashlib.sha256(scores.read_bytes()).hexdigest()
    assert report['report_png'] == str(root / 'dpo_pairs.report.png') and (root / 'dpo_pairs.report.png').is_file()
    assert json.loads((root / 'dpo_pairs.report.json').read_text()) == report


def test_the_tool_says_how_many_candidates_it_skipped(scored, capsys):
    root, scores = scored
    write_scores(scores, {k: v for k, v in OKS.items() if k != 'p1_c001'})   # one candidate unscored
    sys.path.insert(0, str(ROOT / 'tools'))
    try:
        import make_dpo_pairs
    finally:
        sys.path.remove(str(ROOT / 'tools'))
    make_dpo_pairs.main([str(root)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert '1 pairs of 2 controls' in last and '1 candidates unscored (not_in_scores 1)' in last
    # a candidates run still in progress (or killed): the pairs cover what it wrote, and the tool says so
    manifest = json.loads((root / 'manifest.json').read_text())
    (root / 'manifest.json').write_text(json.dumps(dict(manifest, status='in_progress')))
    report = make_dpo_pairs.main([str(root)])
    assert report['candidates_status'] == 'in_progress'
    assert "WARNING: the candidates dataset is 'in_progress'" in capsys.readouterr().out.strip().splitlines()[-1]


def _run_and_hang_after_the_figure(root, scores, flag):
    """Child process: the second run, stopped (sleeping) once its report figure is drawn."""
    real = dp.save_pairs_report_png

    def slow(*args, **kwargs):
        path = real(*args, **kwargs)
        Path(flag).touch()
        time.sleep(60)
        return path

    dp.save_pairs_report_png = slow
    make_pairs(str(root), str(scores), str(root / 'dpo_pairs.jsonl'), min_gap=0.3, overwrite=True)


def test_sigkill_while_writing_leaves_the_previous_files(scored, tmp_path):
    """A real process killed by SIGKILL between writing its files: the pairs and the report stay the first run's.
    (A forked child: it has the modules already, so the test takes a second, not an interpreter start.)"""
    root, scores = scored
    make_pairs(str(root), str(scores), str(root / 'dpo_pairs.jsonl'))
    before = {p.name: p.read_bytes() for p in root.glob('dpo_pairs*')}
    flag = tmp_path / 'drawing'
    proc = multiprocessing.get_context('fork').Process(target=_run_and_hang_after_the_figure,
                                                       args=(root, scores, flag))
    proc.start()
    try:
        deadline = time.time() + 30
        while not flag.exists() and proc.is_alive() and time.time() < deadline:
            time.sleep(0.02)
        assert flag.exists(), f'the child ended ({proc.exitcode}) or hung before drawing the figure'
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(10)
    assert proc.exitcode == -signal.SIGKILL
    assert {p.name: p.read_bytes() for p in root.glob('dpo_pairs*')} == before
    assert [p.name for p in root.iterdir() if '.tmp-' in p.name]   # the killed run's temporaries
    # the next run clears them and writes its files
    report = make_pairs(str(root), str(scores), str(root / 'dpo_pairs.jsonl'), min_gap=0.3, overwrite=True)
    assert report['num_pairs'] == 1 and not [p for p in root.iterdir() if '.tmp-' in p.name]
