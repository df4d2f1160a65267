"""candidates -> scores -> pairs end to end: a render-backend candidates dataset (generator with
candidates_per_sample), scored by tools/filter.py with the real MediaPipe scorer, paired by tools/make_dpo_pairs.py
and read back by DPOPairDataset."""
import collections
import importlib.util
import json
import os
from pathlib import Path

import cv2
import pytest

ROOT = Path(__file__).resolve().parents[2]
N = 3


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f'{name}_tool', ROOT / 'tools' / f'{name}.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope='module')
def scored(tmp_path_factory, standin_model_dir):
    pytest.importorskip('mediapipe')
    from posedreamer_mm.registry import GENERATORS
    root = tmp_path_factory.mktemp('dpo_candidates')
    GENERATORS.build(dict(
        type='DatasetGenerator', body_model=dict(type='SMPLXBodyModel', model_path=str(standin_model_dir)),
        source=dict(type='AugmentedSource', source=dict(type='ProceduralPoseSource', num_samples=40, seed=1), seed=3,
                    distance_range=(2.5, 3.0)),
        pipeline=[dict(type='BodyForward'), dict(type='BodyCropCamera', size=256, margin=0.1),
                  dict(type='RenderControls', controls=[dict(type='PNCCRenderer')]),
                  dict(type='COCO17Visibility', min_visible=0), dict(type='SamplePrompt')],
        backend=dict(type='RenderBackend', batch_size=3), writer=dict(shard_size=6, image_format='png'),
        num_samples=4, seed=0, progress=False, candidates_per_sample=N)).run(str(root / 'cand'))
    config = root / 'score.py'
    config.write_text("filter_stages = [dict(type='ScorePose', scorer=dict(type='MediaPipeScorer'))]\n")
    load_tool('filter').main([str(root / 'cand'), str(config), '--no-progress'])
    return root / 'cand'


def test_pairs_follow_the_rule_on_the_scorer_s_own_file(scored, tmp_path):
    from posedreamer_mm.generation.reader import GeneratedDataReader
    from posedreamer_mm.registry import DATASETS
    out = tmp_path / 'pairs.jsonl'
    report = load_tool('make_dpo_pairs').main([str(scored), '--out', str(out)])
    reader = GeneratedDataReader(str(scored))
    records = [json.loads(line) for line in (scored / 'filter' / 'scores.jsonl').read_text().splitlines()]
    # the rule transcribed on the filter tool's file: matched candidates only, best vs worst, 0.05 / 0.5
    groups = collections.defaultdict(list)
    for r in records:
        meta = reader.meta(r['index'])
        if r['match']['index'] is not None:
            groups[meta['group']].append((r['scores']['oks'], meta['candidate'], r['id']))
    expected = {}
    for g, cands in groups.items():
        best, worst = max(cands), min(cands)
        if len(cands) >= 2 and best[0] >= 0.5 and best[0] - worst[0] >= 0.05 - 1e-9 and best[0] != worst[0]:
            expected[g] = (best[2], worst[2], round(best[0] - worst[0], 6))
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert {p['group']: (p['winner']['id'], p['loser']['id'], p['gap']) for p in pairs} == expected
    assert report['num_groups'] == 4 and report['num_candidates'] == 4 * N
    assert sum(report['groups_by_reason'].values()) == 4 and report['num_pairs'] == len(pairs)
    unmatched = sum(r['match']['index'] is None for r in records)
    assert report['unscored_by_cause']['no_match'] == unmatched
    for p in pairs:
        w, lo = reader.meta(p['winner']['row']), reader.meta(p['loser']['row'])
        assert (w['group'], lo['group'], p['winner']['seed']) == (p['group'], p['group'], w['seed'])
        assert p['controls'] == w['controls'] and p['prompt'] == w['prompt'] == lo['prompt']
    assert json.loads((tmp_path / 'pairs.report.json').read_text())['num_pairs'] == len(pairs)
    png = cv2.imread(str(tmp_path / 'pairs.report.png'))
    assert png is not None and png.shape[1] > 600
    if pairs:   # the training side reads the same file
        os.replace(out, scored / 'dpo_pairs.jsonl')
        sample = DATASETS.build(dict(type='DPOPairDataset', data_root=str(scored), pipeline=[
            dict(type='LoadDPOPair'), dict(type='PackDPOPair')]))[0]
        assert tuple(sample['inputs']['image_w'].shape) == (3, 256, 256)
        assert not (sample['inputs']['image_w'] == sample['inputs']['image_l']).all()
        assert sample['data_samples']['sample_id'] == pairs[0]['group']


def test_the_tool_ends_with_one_error_line_for_missing_scores(scored, tmp_path, capsys):
    from posedreamer_mm.apis.errors import run_tool
    tool = load_tool('make_dpo_pairs')
    with pytest.raises(SystemExit) as exit_info:
        run_tool(lambda: tool.main([str(scored), '--scores', str(tmp_path / 'none.jsonl'), '--out',
                                    str(tmp_path / 'p.jsonl')]))
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith('error: PairsFileError: scores file') and not (tmp_path / 'p.jsonl').exists()
