"""DPO pairs: the pairing rule on hand-built scores, and DPOPairDataset's sample format and errors."""
import json

import cv2
import numpy as np
import pytest
import torch

from posedreamer_mm.apis.dpo_pairs import build_pairs, candidate_oks, pair_group, read_scores
from posedreamer_mm.body.sample import BodySample
from posedreamer_mm.datasets.dpo_pairs import PairsFileError, refreshed_dataset_cfg
from posedreamer_mm.generation.reader import GeneratedDataReader
from posedreamer_mm.generation.writer import ShardedDatasetWriter
from posedreamer_mm.registry import DATASETS


# --- the rule --------------------------------------------------------------------------------------------------
def test_best_and_worst_are_paired():
    assert pair_group([0.6, 0.9, None, 0.3, 0.7]) == ('paired', 1, 3)


def test_gap_threshold_boundary():
    # 0.6 - 0.55 is 0.04999999999999993 in floating point: a gap written as the threshold is kept
    assert pair_group([0.6, 0.55], min_gap=0.05) == ('paired', 0, 1)
    assert pair_group([0.6, 0.550001], min_gap=0.05) == ('gap_below_min', 0, 1)
    assert pair_group([0.9, 0.1], min_gap=0.8) == ('paired', 0, 1)


def test_winner_threshold_boundary():
    assert pair_group([0.5, 0.2], min_winner=0.5) == ('paired', 0, 1)
    assert pair_group([0.499999, 0.2], min_winner=0.5) == ('winner_below_min', 0, 1)
    # the winner threshold is checked before the gap: a group failing both is counted once, as winner_below_min
    assert pair_group([0.45, 0.44])[0] == 'winner_below_min'


def test_ties_and_too_few_scored():
    assert pair_group([0.7, 0.7, 0.7]) == ('tie', None, None)
    assert pair_group([0.7, None, None]) == ('too_few_scored', None, None)
    assert pair_group([]) == ('too_few_scored', None, None)
    # equal best (or worst) values: the lowest candidate number wins (or loses)
    assert pair_group([0.2, 0.9, 0.9, 0.2]) == ('paired', 1, 0)


def test_unscored_candidates_by_cause():
    assert candidate_oks(None) == (None, 'not_in_scores')
    assert candidate_oks(dict(id='a', error='cannot read image')) == (None, 'error')
    no_match = dict(id='a', scores=dict(oks=0.0), match=dict(index=None, oks=0.0, distance=None, reason='none'))
    assert candidate_oks(no_match) == (None, 'no_match')
    assert candidate_oks(no_match, no_match='zero') == (0.0, None)
    assert candidate_oks(dict(id='a', scores={})) == (None, 'no_oks')
    assert candidate_oks(dict(id='a', scores=dict(oks=float('nan')))) == (None, 'no_oks')
    assert candidate_oks(dict(id='a', scores=dict(oks=0.8), match=dict(index=0))) == (0.8, None)


# --- a hand-written candidates dataset --------------------------------------------------------------------------
def write_candidates(root, groups, size=16, extra=None):
    """``groups``: list of (group id, number of candidates). Image of candidate j: grey level 40 * (j + 1); the
    control: group number * 50 in the red channel."""
    rows = [(g, j) for g, n in groups for j in range(n)]
    writer = ShardedDatasetWriter(shard_size=4, image_format='png', save_controls=True)
    writer.prepare_output(str(root), dict(fingerprint='dpo-pairs-test', config={}, num_samples=len(rows)))
    for shard in range(writer.num_shards(len(rows))):
        builder = writer.open_shard(str(root), shard, len(rows))
        for i in builder.indices:
            g, j = rows[i]
            gi = [name for name, _ in groups].index(g)
            sid = f'{g}_c{j:03d}'
            control = np.zeros((size, size, 3), np.uint8)
            control[..., 0] = 50 * gi
            res = dict(sample=BodySample(id=sid, img_size=np.array([size, size])),
                       img=np.full((size, size, 3), 40 * (j + 1), np.uint8), seed=1000 + i,
                       controls=dict(pncc=control), prompt=f'a person, {g}', group=g, candidate=j)
            res.update((extra or {}).get(sid, {}))
            builder.add(i, res)
        builder.commit()
    writer.finalize(str(root), len(rows))
    return GeneratedDataReader(str(root))


def test_build_pairs_counts_every_group_and_references_the_rows(tmp_path):
    reader = write_candidates(tmp_path / 'cand', [('p0', 3), ('p1', 3), ('p2', 2), ('p3', 3), ('p4', 2)])
    oks = {'p0_c000': 0.6, 'p0_c001': 0.9, 'p0_c002': 0.3,        # paired 1 vs 2, gap 0.6
           'p1_c000': 0.7, 'p1_c001': 0.7, 'p1_c002': 0.7,        # tie
           'p2_c000': 0.9,                                        # p2_c001 not scored: too few
           'p3_c000': 0.4, 'p3_c001': 0.1, 'p3_c002': 0.3,        # winner below 0.5
           'p4_c000': 0.8, 'p4_c001': 0.78}                       # gap below 0.05
    scores = {k: dict(id=k, scores=dict(oks=v), match=dict(index=0)) for k, v in oks.items()}
    scores['p0_c000']['error'] = 'cannot read image'   # unscored: p0 is decided by c001 and c002
    pairs, report, gaps = build_pairs(reader, scores)
    assert report['groups_by_reason'] == dict(paired=1, too_few_scored=1, tie=1, winner_below_min=1,
                                              gap_below_min=1)
    assert report['unscored_by_cause'] == dict(error=1, no_match=0, no_oks=0, not_in_scores=1)
    assert sorted(np.round(gaps, 6)) == [0.0, 0.02, 0.3, 0.6]
    (pair,) = pairs
    assert pair['group'] == 'p0' and pair['gap'] == 0.6 and pair['num_scored'] == 2 and pair['num_candidates'] == 3
    assert pair['winner']['id'] == 'p0_c001' and pair['loser']['id'] == 'p0_c002'
    assert pair['winner']['seed'] == 1001 and pair['loser']['seed'] == 1002 and pair['winner']['oks'] == 0.9
    assert reader.root + '/' + pair['winner']['image'] == reader.image_path(pair['winner']['row'])
    assert pair['controls']['pncc'] == reader.meta(1)['controls']['pncc'] and pair['prompt'] == 'a person, p0'
    with pytest.raises(PairsFileError, match="not in .*first: \\['zz'\\]"):
        build_pairs(reader, dict(scores, zz=dict(id='zz', scores=dict(oks=1.0))))


def test_scores_file_errors_name_the_line(tmp_path):
    path = tmp_path / 'scores.jsonl'
    path.write_text('{"id": "a", "scores": {}}\n[1, 2]\n')
    with pytest.raises(PairsFileError, match='scores.jsonl, line 2: expected a JSON object'):
        read_scores(str(path))
    path.write_text('{"id": "a"}\n{"id": "a"}\n')
    with pytest.raises(PairsFileError, match=r"line 2: sample id 'a' appears twice \(first on line 1\)"):
        read_scores(str(path))
    with pytest.raises(PairsFileError, match='tools/filter.py'):
        read_scores(str(tmp_path / 'none.jsonl'))


def test_a_dataset_without_candidates_is_refused(tmp_path):
    write_candidates(tmp_path / 'cand', [('p0', 2)])
    meta_files = list((tmp_path / 'cand').rglob('meta.jsonl'))
    for f in meta_files:   # a plain dataset: no group/candidate in its rows
        lines = [json.loads(line) for line in f.read_text().splitlines()]
        f.write_text(''.join(json.dumps({k: v for k, v in r.items() if k not in ('group', 'candidate')}) + '\n'
                             for r in lines))
    reader = GeneratedDataReader(str(tmp_path / 'cand'))
    with pytest.raises(PairsFileError, match='candidates_per_sample'):
        build_pairs(reader, {})


# --- DPOPairDataset --------------------------------------------------------------------------------------------
PIPELINE = [dict(type='LoadDPOPair'), dict(type='PackDPOPair')]


def _pairs_file(tmp_path, reader):
    scores = {sid: dict(id=sid, scores=dict(oks=o)) for sid, o in zip(reader.ids, [0.9, 0.2, 0.1, 0.8, 0.6])}
    pairs, _, _ = build_pairs(reader, scores)
    path = tmp_path / 'cand' / 'dpo_pairs.jsonl'
    path.write_text(''.join(json.dumps(p) + '\n' for p in pairs))
    return path


def test_dataset_sample_format(tmp_path):
    reader = write_candidates(tmp_path / 'cand', [('p0', 3), ('p1', 2)])
    _pairs_file(tmp_path, reader)
    ds = DATASETS.build(dict(type='DPOPairDataset', data_root=str(tmp_path / 'cand'), control_types=['pncc'],
                             pipeline=PIPELINE))
    assert len(ds) == 2
    out = ds[0]
    assert set(out) == {'inputs', 'data_samples'}
    inputs = out['inputs']
    assert set(inputs) == {'image_w', 'image_l', 'control'}
    for key, shape in (('image_w', (3, 16, 16)), ('image_l', (3, 16, 16)), ('control', (3, 16, 16))):
        assert inputs[key].dtype == torch.uint8 and tuple(inputs[key].shape) == shape
    # p0: winner c000 (grey 40), loser c002 (grey 120); the control's red channel is 0 for group 0
    assert (inputs['image_w'] == 40).all() and (inputs['image_l'] == 120).all()
    assert (inputs['control'][0] == 0).all()
    assert out['data_samples'] == dict(prompt='a person, p0', sample_id='p0')
    second = ds[1]['inputs']
    assert (second['image_w'] == 40).all() and (second['image_l'] == 80).all() and (second['control'][0] == 50).all()
    resized = DATASETS.build(dict(type='DPOPairDataset', data_root=str(tmp_path / 'cand'), pipeline=[
        dict(type='LoadDPOPair'), dict(type='ResizeDPOPair', size=8), dict(type='PackDPOPair')]))[0]['inputs']
    assert all(tuple(v.shape) == (3, 8, 8) for v in resized.values()) and (resized['image_l'] == 120).all()


def test_dataset_errors_name_file_and_line(tmp_path):
    reader = write_candidates(tmp_path / 'cand', [('p0', 3), ('p1', 2)])
    path = _pairs_file(tmp_path, reader)
    good = path.read_text().splitlines()

    def build(**kw):
        return DATASETS.build(dict(type='DPOPairDataset', data_root=str(tmp_path / 'cand'), pipeline=PIPELINE, **kw))

    path.write_text(good[0] + '\n{"winner": {}}\n')
    with pytest.raises(PairsFileError, match=r'dpo_pairs.jsonl, line 2: no .*key'):
        build()
    path.write_text(good[0] + '\nnot json\n')
    with pytest.raises(PairsFileError, match=r'dpo_pairs.jsonl, line 2: not JSON'):
        build()
    path.write_text('\n'.join(good) + '\n')
    with pytest.raises(PairsFileError, match=r"line 1: no \['depth'\] control"):
        build(control_types=['depth'])
    cv2.imwrite(reader.image_path(4), np.zeros((4, 4, 3), np.uint8))   # p1's loser: another size
    with pytest.raises(ValueError, match='loser image .* candidates of one control share'):
        build()[1]
    loser = json.loads(good[1])['loser']['image']
    (tmp_path / 'cand' / loser).unlink()
    with pytest.raises(PairsFileError, match=r'dpo_pairs.jsonl, line 2: "loser.image" .* does not exist'):
        build()
    path.write_text('')
    with pytest.raises(ValueError, match='holds no pair'):
        build()


# --- the training dataset switched to refreshed pairs (DPOControlHook's on-line refresh) ---------------------------
def test_refreshed_dataset_cfg_replaces_or_mixes_the_pairs(tmp_path):
    first = write_candidates(tmp_path / 'cand', [('p0', 3), ('p1', 2)])
    _pairs_file(tmp_path, first)
    second = write_candidates(tmp_path / 'round' / 'iter_2', [('q0', 2), ('q1', 2), ('q2', 2)])
    scores = {sid: dict(id=sid, scores=dict(oks=o)) for sid, o in zip(second.ids, [0.9, 0.2, 0.8, 0.1, 0.7, 0.6])}
    pairs, _, _ = build_pairs(second, scores)
    (tmp_path / 'round' / 'iter_2' / 'dpo_pairs.jsonl').write_text(''.join(json.dumps(p) + '\n' for p in pairs))
    cfg = dict(type='DPOPairDataset', data_root=str(tmp_path / 'cand'), ann_file='dpo_pairs.jsonl',
               control_types=['pncc'], pipeline=PIPELINE)

    replaced = refreshed_dataset_cfg(cfg, str(tmp_path / 'round' / 'iter_2'))
    assert cfg['data_root'] == str(tmp_path / 'cand')   # the original config is not changed
    ds = DATASETS.build(replaced)
    assert len(ds) == 3 and [ds[i]['data_samples']['sample_id'] for i in range(3)] == ['q0', 'q1', 'q2']
    # q1: winner c000 (grey 40) over c001 (grey 80); the control's red channel is the group number * 50
    assert (ds[1]['inputs']['image_w'] == 40).all() and (ds[1]['inputs']['image_l'] == 80).all()
    assert (ds[1]['inputs']['control'][0] == 50).all()

    mixed = DATASETS.build(refreshed_dataset_cfg(cfg, str(tmp_path / 'round' / 'iter_2'), mode='mix'))
    assert [mixed[i]['data_samples']['sample_id'] for i in range(len(mixed))] == ['p0', 'p1', 'q0', 'q1', 'q2']

    with pytest.raises(TypeError, match="must be a DPOPairDataset config dict .* got 'ControlPairDataset'"):
        refreshed_dataset_cfg(dict(cfg, type='ControlPairDataset'), str(tmp_path))
    with pytest.raises(TypeError, match="got 'DPOPairDataset'"):   # a built dataset cannot be re-pointed
        refreshed_dataset_cfg(ds, str(tmp_path))
    with pytest.raises(ValueError, match='mode must be "replace" or "mix"'):
        refreshed_dataset_cfg(cfg, str(tmp_path), mode='append')


# --- what training reads: complete images, RGB in every tensor ----------------------------------------------------
def test_a_truncated_jpeg_candidate_is_an_error_naming_the_file(tmp_path):
    # cv2 decodes a truncated JPEG without an error (grey below the cut, a libjpeg warning on stderr); the shipped
    # SD / FLUX candidates configs write JPEG, so an interrupted copy trained on half-grey images without a word
    reader = write_candidates(tmp_path / 'cand', [('p0', 3), ('p1', 2)])
    path = _pairs_file(tmp_path, reader)
    loser = tmp_path / 'cand' / json.loads(path.read_text().splitlines()[0])['loser']['image']
    ok, buf = cv2.imencode('.jpg', np.random.default_rng(0).integers(0, 255, (16, 16, 3), np.uint8))
    loser.write_bytes(buf.tobytes()[:-200])   # JPEG bytes under the .png name: the content decides, not the name
    assert cv2.imread(str(loser)) is not None   # the fact the check exists for
    ds = DATASETS.build(dict(type='DPOPairDataset', data_root=str(tmp_path / 'cand'), pipeline=PIPELINE))
    with pytest.raises(FileNotFoundError, match=f"loser image {loser} of sample 'p0' is truncated"):
        ds[0]
    loser.write_bytes(buf.tobytes())   # the complete file is read
    assert tuple(ds[0]['inputs']['image_l'].shape) == (3, 16, 16)
    winner = tmp_path / 'cand' / json.loads(path.read_text().splitlines()[1])['winner']['image']
    winner.write_bytes(buf.tobytes()[:-200])
    with pytest.raises(FileNotFoundError, match=f"image {winner} of sample 'p1' is truncated"):
        ds[1]
    winner.write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(40))   # a corrupt PNG: the decoder's own error, named
    with pytest.raises(FileNotFoundError, match=f"image {winner} of sample 'p1' is missing or unreadable"):
        ds[1]


def test_winner_loser_and_control_are_rgb(tmp_path):
    # one known pixel per image, given to the writer as RGB (it stores BGR files through cv2): the packed tensors
    # must hold R, G, B in channels 0, 1, 2 for all three, with and without the resize
    def img(r, g, b):
        return np.broadcast_to(np.array([r, g, b], np.uint8), (8, 8, 3)).copy()

    extra = {'p0_c000': dict(img=img(200, 100, 10), controls=dict(pncc=img(7, 77, 177))),
             'p0_c001': dict(img=img(30, 60, 250), controls=dict(pncc=img(7, 77, 177)))}
    reader = write_candidates(tmp_path / 'cand', [('p0', 2)], size=8, extra=extra)
    assert cv2.imread(reader.image_path(0))[0, 0].tolist() == [10, 100, 200]   # the file: a BGR-stored image
    scores = {'p0_c000': dict(id='p0_c000', scores=dict(oks=0.9)), 'p0_c001': dict(id='p0_c001', scores=dict(oks=0.1))}
    pairs, _, _ = build_pairs(reader, scores)
    (tmp_path / 'cand' / 'dpo_pairs.jsonl').write_text(json.dumps(pairs[0]) + '\n')
    resize = [dict(type='LoadDPOPair'), dict(type='ResizeDPOPair', size=4), dict(type='PackDPOPair')]
    for pipeline in (PIPELINE, resize):
        inputs = DATASETS.build(dict(type='DPOPairDataset', data_root=str(tmp_path / 'cand'),
                                     pipeline=pipeline))[0]['inputs']
        assert inputs['image_w'][:, 0, 0].tolist() == [200, 100, 10]
        assert inputs['image_l'][:, 0, 0].tolist() == [30, 60, 250]
        assert inputs['control'][:, 0, 0].tolist() == [7, 77, 177]
        assert {v.dtype for v in inputs.values()} == {torch.uint8}


# --- a pairs file and the dataset it refers to ----------------------------------------------------------------------
def test_pairs_of_another_candidates_dataset_with_the_same_paths_are_refused(tmp_path):
    # two candidates runs of one pose config (say SD1.5 and FLUX) share ids and relative paths: a pairs file pointed
    # at the other run found every file and trained on images its OKS never ranked
    first = write_candidates(tmp_path / 'sd15', [('p0', 3), ('p1', 2)])
    (tmp_path / 'cand').mkdir()
    path = _pairs_file(tmp_path, first)   # written into tmp_path/cand, outside both datasets
    assert json.loads(path.read_text().splitlines()[0])['candidates_fingerprint'] == 'dpo-pairs-test'
    other = tmp_path / 'flux'
    write_candidates(other, [('p0', 3), ('p1', 2)])
    manifest = json.loads((other / 'manifest.json').read_text())
    (other / 'manifest.json').write_text(json.dumps(dict(manifest, fingerprint='another-config')))
    with pytest.raises(PairsFileError, match=r"dpo_pairs.jsonl, line 1: the pair was made from candidates "
                                             r"'dpo-pairs-test' but .*flux is 'another-config'"):
        DATASETS.build(dict(type='DPOPairDataset', data_root=str(other), ann_file=str(path), pipeline=PIPELINE))
    # the same dataset copied elsewhere: relative paths and fingerprint travel with it
    import shutil
    shutil.copytree(tmp_path / 'sd15', tmp_path / 'moved')
    shutil.rmtree(tmp_path / 'sd15')
    ds = DATASETS.build(dict(type='DPOPairDataset', data_root=str(tmp_path / 'moved'), ann_file=str(path),
                             pipeline=PIPELINE))
    assert (ds[0]['inputs']['image_w'] == 40).all() and (ds[0]['inputs']['image_l'] == 120).all()


@pytest.mark.parametrize('edit, message', [
    (lambda p: p['loser'].update(image=p['winner']['image']), r'line 1: winner.image and loser.image are the same'),
    (lambda p: p.update(gap='big'), r'line 1: "gap" .*expected a number'),
    (lambda p: p.update(controls=['pncc']), r'line 1: "controls" .*expected an object'),
])
def test_a_malformed_pair_line_is_one_error_naming_the_line(tmp_path, edit, message):
    reader = write_candidates(tmp_path / 'cand', [('p0', 3), ('p1', 2)])
    path = _pairs_file(tmp_path, reader)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    edit(lines[0])
    path.write_text(''.join(json.dumps(p) + '\n' for p in lines))
    with pytest.raises(PairsFileError, match=message):
        DATASETS.build(dict(type='DPOPairDataset', data_root=str(tmp_path / 'cand'), pipeline=PIPELINE))
