"""The README's first command (bash tools/demo.sh) end to end at small size: generate (training and held-out sets)
-> filter with the offline MediaPipe scorer -> train HMR on the kept samples -> test it on the kept held-out samples
-> the report; every step is a real tool run as its own process, as a user runs it at scale."""
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.timeout(600)
def test_demo_chain_runs_every_tool_and_reports(tmp_path):
    out = tmp_path / 'demo'
    # 8 training and 3 held-out samples: MediaPipe keeps 5 and 2 of them (a held-out set it empties would stop
    # the run with GeneratedHMRDataset's "keeps no samples" error).
    res = subprocess.run(['bash', str(ROOT / 'tools' / 'demo.sh'), '--out', str(out), '--num-samples', '8',
                          '--test-samples', '3', '--iters', '2'],
                         capture_output=True, text=True, timeout=590, cwd=str(tmp_path),
                         env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # It says where everything is, what to open, and which parts are stand-ins.
    assert f'OPEN  {out}/report/index.html' in res.stdout
    assert 'STAND-INS' in res.stdout and 'open SMPL-X stand-in' in res.stdout and 'rendering-baseline' in res.stdout
    for log in ('generate', 'generate_heldout', 'filter', 'filter_heldout', 'train', 'test', 'report'):
        assert (out / 'logs' / f'{log}.log').is_file(), log

    train = json.loads((out / 'dataset' / 'manifest.json').read_text())
    heldout = json.loads((out / 'heldout' / 'manifest.json').read_text())
    assert train['status'] == heldout['status'] == 'complete'
    assert (train['num_samples'], heldout['num_samples']) == (8, 3) and heldout['seed'] == 1
    kept = _lines(out / 'dataset' / 'filter' / 'manifest_filtered.jsonl')
    kept_test = _lines(out / 'heldout' / 'filter' / 'manifest_filtered.jsonl')
    assert kept and kept_test
    train_ids = {r['id'] for r in _lines(out / 'dataset' / 'shards' / '000000' / 'meta.jsonl')}
    assert not train_ids & {r['id'] for r in kept_test}  # the evaluation set is not the training set

    # HMR: a checkpoint after 2 iterations, evaluated by tools/test.py on exactly the kept held-out samples.
    ckpt = Path((out / 'hmr' / 'last_checkpoint').read_text().strip())
    assert ckpt.name == 'iter_2.pth' and ckpt.is_file()
    tests = [p for p in (out / 'hmr').glob('*/*.json') if p.stem == p.parent.name]
    assert len(tests) == 1
    metrics = _lines(tests[0])[-1]
    assert metrics['hmr/heldout/num_samples'] == len(kept_test) and metrics['hmr/heldout/num_skipped'] == 0
    assert 0 < metrics['hmr/heldout/pve_mm'] < 5000

    report = json.loads((out / 'report' / 'report.json').read_text())
    assert report['filter']['num_kept'] == len(kept) and report['num_committed'] == 8
    assert report['hmr']['metrics']['hmr/heldout/pve_mm'] == pytest.approx(metrics['hmr/heldout/pve_mm'])
    page = (out / 'report' / 'index.html').read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert 'hmr_loss.png' in srcs and 'contact_sheet.png' in srcs
    assert all((out / 'report' / s).is_file() for s in srcs)
