"""tools/filter.py end to end on a small generated dataset written with the generator's writer."""
import hashlib
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from posedreamer_mm.body.sample import BodySample

ROOT = Path(__file__).resolve().parents[2]


def load_tool():
    spec = importlib.util.spec_from_file_location('filter_tool', ROOT / 'tools' / 'filter.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    """astronaut() with a label it follows, the same with a shifted label, a blank image, a corrupt image, a NaN
    label."""
    pytest.importorskip('mediapipe')
    from skimage.data import astronaut

    from posedreamer_mm.generation.writer import ShardedDatasetWriter
    from posedreamer_mm.scoring.mediapipe_scorer import MediaPipeScorer
    img = astronaut()
    seen = MediaPipeScorer()(img).keypoints[0]
    good = np.concatenate([seen, np.full((17, 1), 2.0)], 1)
    shifted = good.copy()
    shifted[:, 0] += 45
    nan_label = good.copy()
    nan_label[3, 1] = np.nan
    rows = [('astro_good', img, good), ('astro_shifted', img, shifted),
            ('blank', np.full((512, 512, 3), 128, np.uint8), good), ('astro_corrupt', img, good),
            ('astro_nan', img, nan_label)]
    root = tmp_path_factory.mktemp('generated')
    writer = ShardedDatasetWriter(shard_size=2, image_format='png', save_controls=False)
    writer.prepare_output(str(root), dict(fingerprint='filter-tool-test', config={}, num_samples=len(rows)))
    for shard in range(writer.num_shards(len(rows))):
        builder = writer.open_shard(str(root), shard, len(rows))
        for i in builder.indices:
            sid, im, kpts = rows[i]
            sample = BodySample(id=sid, img_size=np.array([512, 512]), keypoints_coco17=kpts.astype(np.float32))
            builder.add(i, dict(sample=sample, img=im, seed=i, scores=dict(oks=0.5)))
        builder.commit()
    writer.finalize(str(root), len(rows))
    from posedreamer_mm.generation.reader import GeneratedDataReader
    corrupt = Path(GeneratedDataReader(str(root)).image_path(3))
    corrupt.write_bytes(corrupt.read_bytes()[:100])             # a truncated PNG
    return root


def digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob('*')) if p.is_file() and 'filter' not in p.relative_to(root).parts}


def test_filter_tool_end_to_end(dataset, tmp_path):
    before = digest(dataset)
    summary = load_tool().main([str(dataset), '--batch-size', '3', '--no-progress'])
    out = dataset / 'filter'
    assert digest(dataset) == before                          # originals untouched
    records = {r['id']: r for r in map(json.loads, (out / 'scores.jsonl').read_text().splitlines())}
    assert set(records) == {'astro_good', 'astro_shifted', 'blank', 'astro_corrupt', 'astro_nan'}
    assert records['astro_good']['kept'] and records['astro_good']['scores']['oks'] > 0.99
    assert records['astro_good']['match']['index'] == 0 and len(records['astro_good']['detections']['keypoints']) == 1
    assert not records['astro_shifted']['kept'] and records['astro_shifted']['drop_reason'] == 'oks_below_thr'
    assert records['astro_shifted']['stage'] == 'FilterByOKS'
    assert records['blank']['drop_reason'] == 'oks_no_match' and records['blank']['match']['distance'] is None
    assert 'cannot read image' in records['astro_corrupt']['error']
    assert 'NaN' in records['astro_nan']['error'] and not records['astro_nan']['kept']
    kept = [json.loads(line) for line in (out / 'manifest_filtered.jsonl').read_text().splitlines()]
    assert [k['id'] for k in kept] == ['astro_good'] and (dataset / kept[0]['image']).is_file()
    assert summary['num_failed'] == 2 and summary['num_kept'] == 1 and summary['num_scored'] == 3
    assert summary['failures'] == {'ValueError': 2}
    by_stage = {s['stage']: s for s in summary['stage_counts']}
    assert by_stage['ScorePose']['entered'] == 3
    assert by_stage['FilterByOKS']['dropped'] == {'oks_below_thr': 1, 'oks_no_match': 1}
    assert by_stage['FilterByImageQuality']['entered'] == 1
    assert summary['control_accuracy']['frac_kept'] == pytest.approx(1 / 3)
    assert json.loads((out / 'summary.json').read_text())['num_kept'] == 1
    report = cv2.imread(str(out / 'report.png'))
    assert report is not None and report.shape[0] > 300 and report.shape[1] > 600


@pytest.mark.timeout(180)
def test_filter_tool_worker_processes_match_in_process(dataset, tmp_path):
    load_tool().main([str(dataset), '--out', str(tmp_path / 'serial'), '--no-progress', '--batch-size', '2'])
    summary = load_tool().main([str(dataset), '--out', str(tmp_path / 'pool'), '--no-progress', '--batch-size', '2',
                                '--num-workers', '2'])
    assert summary['num_workers'] == 2
    for name in ('scores.jsonl', 'manifest_filtered.jsonl'):
        assert (tmp_path / 'pool' / name).read_text() == (tmp_path / 'serial' / name).read_text()
    serial = json.loads((tmp_path / 'serial' / 'summary.json').read_text())
    assert summary['stage_counts'] == serial['stage_counts'] and summary['failures'] == serial['failures']


@pytest.mark.timeout(120)
def test_filter_tool_killed_mid_run_leaves_no_partial_output(dataset, tmp_path):
    """SIGKILL while scores.jsonl is being streamed: no scores.jsonl appears; the next run cleans up and completes."""
    import os
    import signal
    import subprocess
    import sys
    import time
    out = tmp_path / 'killed'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.Popen([sys.executable, str(ROOT / 'tools' / 'filter.py'), str(dataset), '--out', str(out),
                             '--no-progress', '--batch-size', '1'], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 90
    while time.time() < deadline and not any(p.name.startswith('.scores.jsonl') for p in out.glob('.*')):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / 'scores.jsonl').exists() and not (out / 'summary.json').exists()
    load_tool().main([str(dataset), '--out', str(out), '--no-progress'])
    assert (out / 'scores.jsonl').exists() and not [p for p in out.iterdir() if '.tmp-' in p.name]


def test_filter_tool_config_and_errors(dataset, tmp_path):
    cfg = tmp_path / 'stages.py'
    cfg.write_text("filter_stages = [dict(type='ScorePose', scorer=dict(type='MediaPipeScorer')),\n"
                   "                 dict(type='FilterByOKS', thr=0.2)]\n")
    summary = load_tool().main([str(dataset), str(cfg), '--out', str(tmp_path / 'o'), '--max-samples', '2',
                                '--no-progress'])
    assert summary['num_samples'] == 2 and summary['num_kept'] >= 1
    assert [s['stage'] for s in summary['stage_counts']] == ['ScorePose', 'FilterByOKS']
    bad = tmp_path / 'bad.py'
    bad.write_text('stages = []\n')
    with pytest.raises(SystemExit, match='filter_stages'):
        load_tool().main([str(dataset), str(bad), '--out', str(tmp_path / 'o2')])


@pytest.mark.timeout(300)
def test_a_worker_killed_by_sigkill_stops_the_filter_naming_its_rows(dataset, tmp_path):
    """issue 16 §3: a filter worker killed by the OOM killer left the tool waiting forever. Now it exits within
    seconds with one error naming the worker's rows and the signal, and writes no output."""
    import os
    import subprocess
    import sys
    cfg = tmp_path / 'stages.py'
    cfg.write_text("custom_imports = dict(imports=['tests.generation.stub_steps_registered'])\n"
                   "filter_stages = [dict(type='SigkillWorkerAt'), dict(type='FilterByImageQuality')]\n")
    out = tmp_path / 'dead'
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT), PDM_TEST_SIGKILL_INDEX='2')
    res = subprocess.run([sys.executable, str(ROOT / 'tools' / 'filter.py'), str(dataset), str(cfg), '--out', str(out),
                          '--no-progress', '--batch-size', '2', '--num-workers', '1'], env=env, capture_output=True,
                         text=True, timeout=240)
    log = res.stdout + res.stderr
    assert res.returncode not in (0, -9), log[-3000:]
    assert 'WorkerDiedError' in log and 'killed by SIGKILL while working on dataset rows 2-3' in log, log[-3000:]
    assert not (out / 'scores.jsonl').exists() and not (out / 'summary.json').exists()
