"""GeneratedHMRDataset on the outputs of tools/filter.py: a generated dataset written with the generator's writer
(posedreamer_mm/testing/hmr_fixtures.py) is scored by the offline filter (``run_filter``, the package function of
tools/filter.py) with the real ``ScorePose`` + ``FilterByOKS`` stages; the dataset then lists exactly the kept
samples (``filtered_manifest=``) and its pipeline thresholds the filter's scores (``scores=``)."""
import hashlib
import json
import pickle
import shutil

import numpy as np
import pytest

from posedreamer_mm.apis.filter import run_filter
from posedreamer_mm.generation.reader import GeneratedDataReader
from posedreamer_mm.registry import DATASETS
from posedreamer_mm.scoring.base import BasePoseScorer, PoseDetections

MANIFEST, SCORES = 'filter/manifest_filtered.jsonl', 'filter/scores.jsonl'
#: What the stand-in estimator sees per row: the label (OKS 1, kept), the label 40 px to the right (OKS ~0,
#: ``oks_below_thr``), nobody (``oks_no_match``).
SEEN = {0: 'label', 1: 'shifted', 2: 'nobody', 3: 'label'}
KEPT = ['gen_00000', 'gen_00003']


class LabelEchoScorer(BasePoseScorer):
    """Stand-in pose estimator (not a model): looks each image up by its pixels and reports what :data:`SEEN`
    says for its row, with the label's visible joints as confident keypoints."""
    name = 'label_echo'

    def __init__(self, reader: GeneratedDataReader):
        self.table = {}
        for row, seen in SEEN.items():
            img = reader.load_image(row)
            kpts = np.asarray(reader.sample(row).keypoints_coco17, np.float32)
            self.table[hashlib.sha1(img.tobytes()).hexdigest()] = (seen, kpts, img.shape[1::-1])

    def predict_batch(self, images):
        out = []
        for img in images:
            seen, kpts, wh = self.table[hashlib.sha1(img.tobytes()).hexdigest()]
            if seen == 'nobody':
                out.append(PoseDetections.empty(wh, self.name))
                continue
            xy = kpts[:, :2] + (40.0 if seen == 'shifted' else 0.0) * np.array([1.0, 0.0], np.float32)
            conf = (kpts[:, 2] > 0).astype(np.float32)
            vis = xy[conf > 0]
            box = np.concatenate([vis.min(0) - 5, vis.max(0) + 5])
            out.append(PoseDetections(xy[None], conf[None], box[None], np.ones(1), wh, self.name))
        return out


@pytest.fixture(scope='module')
def filtered(hmr_paths, tmp_path_factory):
    """A copy of the fixture's generated dataset, filtered by run_filter into ``<root>/filter``."""
    root = tmp_path_factory.mktemp('gen_filtered') / 'data'
    shutil.copytree(hmr_paths['generated']['data_root'], root)
    stages = [dict(type='ScorePose', scorer=LabelEchoScorer(GeneratedDataReader(root))),
              dict(type='FilterByOKS', thr=0.85)]
    summary = run_filter(str(root), str(root / 'filter'), stages=stages, batch_size=3, report_samples=2,
                         progress=False)
    assert summary['num_kept'] == 2 and summary['num_failed'] == 0
    return root


def build(root, **kwargs):
    return DATASETS.build(dict(type='GeneratedHMRDataset', data_root=str(root), **kwargs))


def ids(ds):
    return [ds.get_data_info(i)['id'] for i in range(len(ds))]


def test_filtered_manifest_lists_exactly_the_kept_samples(filtered):
    records = [json.loads(line) for line in (filtered / SCORES).read_text().splitlines()]
    assert [r['id'] for r in records if r['kept']] == KEPT                # the tool kept what the estimator saw
    assert {r['id']: r['drop_reason'] for r in records if not r['kept']} == dict(
        gen_00001='oks_below_thr', gen_00002='oks_no_match')
    assert ids(build(filtered)) == [f'gen_{i:05d}' for i in range(4)]
    manifest = [json.loads(line) for line in (filtered / MANIFEST).read_text().splitlines()]
    for path in (MANIFEST, str(filtered / MANIFEST)):                    # relative to data_root, or absolute
        ds = build(filtered, filtered_manifest=path, pipeline=[dict(type='LoadHMRImage')])
        assert ids(ds) == KEPT
        assert [ds.get_data_info(i)['row'] for i in range(2)] == [0, 3]
        assert [ds.get_data_info(i)['img_path'] for i in range(2)] == [str(filtered / m['image']) for m in manifest]
        assert ds[1]['img'].shape == (160, 200, 3) and ds[1]['id'] == 'gen_00003'
    # A hand-written manifest in another order keeps the dataset's row order; pickled for workers.
    (filtered / 'mine.jsonl').write_text(''.join(json.dumps(m) + '\n' for m in manifest[::-1]))
    assert ids(pickle.loads(pickle.dumps(build(filtered, filtered_manifest='mine.jsonl')))) == KEPT


def test_scores_reach_the_pipeline_filters(filtered):
    oks_filter = [dict(type='FilterByOKS', thr=0.85)]
    plain = build(filtered, pipeline=oks_filter)
    assert [plain.get_data_info(i)['scores'] for i in range(4)] == [dict(oks=0.9)] * 4   # the generator's scores
    assert all(plain.prepare_data(i) is not None for i in range(4))
    ds = pickle.loads(pickle.dumps(build(filtered, scores=SCORES, pipeline=oks_filter)))
    assert ds.num_unscored == 0
    oks = [ds.get_data_info(i)['scores']['oks'] for i in range(4)]
    assert oks[0] == oks[3] == 1.0 and oks[1] < 0.1 and oks[2] == 0.0   # the filter's replace the generator's
    assert ds.get_data_info(2)['scores']['num_detections'] == 0.0
    assert [ds.prepare_data(i) is not None for i in range(4)] == [True, False, False, True]
    both = build(filtered, filtered_manifest=MANIFEST, scores=SCORES)
    assert ids(both) == KEPT and [both.get_data_info(i)['scores']['oks'] for i in range(2)] == [1.0, 1.0]


def test_scores_for_some_rows_only(filtered, tmp_path):
    lines = (filtered / SCORES).read_text().splitlines()
    error = json.dumps(dict(id='gen_00002', index=2, kept=False, error='cannot read image x.jpg'))
    part = tmp_path / 'part.jsonl'
    part.write_text('\n'.join([lines[1], error, '']))                    # row 1 scored, row 2 unreadable then
    ds = build(filtered, scores=str(part))
    assert ds.num_unscored == 3
    assert [ds.get_data_info(i)['scores']['oks'] for i in range(4)][1:] == [json.loads(lines[1])['scores']['oks'],
                                                                            0.9, 0.9]


@pytest.mark.parametrize('case', ['missing', 'not_json', 'no_id', 'unknown_id', 'duplicate', 'other_image',
                                  'empty', 'bad_score'])
def test_bad_filter_files_name_the_file(filtered, tmp_path, case):
    manifest = (filtered / MANIFEST).read_text().splitlines()
    scores = (filtered / SCORES).read_text().splitlines()
    path = tmp_path / f'{case}.jsonl'
    arg, text, error, match = 'filtered_manifest', None, ValueError, None
    if case == 'missing':
        error, match = FileNotFoundError, r'is missing or not a file \(expected the manifest_filtered.jsonl'
    elif case == 'not_json':
        text, match = [manifest[0], manifest[1][:20]], 'jsonl, line 2: not valid JSON'
    elif case == 'no_id':
        text, match = [manifest[0], '{"index": 3}'], 'jsonl, line 2: expected a JSON object with a string "id"'
    elif case == 'unknown_id':
        text, match = manifest + ['{"id": "gen_99999", "index": 9}'], r"1 sample id\(s\).*'gen_99999' \(line 3\)"
    elif case == 'duplicate':
        text, match = manifest + [manifest[0]], f"line {len(manifest) + 1}: sample id 'gen_00000' appears twice"
    elif case == 'other_image':
        rec = dict(json.loads(manifest[1]), image='shards/000000/images/gen_00000.jpg')
        text, match = [manifest[0], json.dumps(rec)], "line 2: sample 'gen_00003' has image"
    elif case == 'empty':
        text, match = [], 'keeps no samples'
    elif case == 'bad_score':
        rec = json.loads(scores[0])
        rec['scores']['oks'] = 'high'
        arg, text, match = 'scores', [json.dumps(rec)], "line 1 \\(sample 'gen_00000'\\): expected \"scores\""
    if text is not None:
        path.write_text(''.join(line + '\n' for line in text))
    with pytest.raises(error, match=match) as info:
        build(filtered, **{arg: str(path)})
    assert str(path) in str(info.value)


def test_sample_ids_are_the_labels_ids_without_decoding_them(filtered, monkeypatch):
    """``sample_ids()`` (what HardSampleSampler reads a difficulty file by) equals the ids of the decoded labels,
    for the whole dataset, the filtered one and an ``indices`` subset, and decodes no label."""
    for kwargs in (dict(), dict(filtered_manifest=MANIFEST), dict(indices=[3, 1])):
        ds = build(filtered, **kwargs)
        want = ids(ds)
        monkeypatch.setattr(GeneratedDataReader, 'sample', lambda *a: pytest.fail('a label was decoded'))
        assert ds.sample_ids() == want
        monkeypatch.undo()
    assert build(filtered, filtered_manifest=MANIFEST).sample_ids() == KEPT
