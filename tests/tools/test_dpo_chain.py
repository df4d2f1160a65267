"""The DPO chain in one go, with the commands a user runs (docs/dpo.md, "Tests"):

1. ``tools/generate.py configs/dpo/candidates/tiny_sd15_controlnet_pncc-candidates.py``: 3 candidates per control
   (4 controls) from the tiny SD1.5 ControlNet, each with its own seed; the same config with ``candidates_per_sample
   =1`` and another seed writes the DPO hook's labelled held-out set (2 controls);
2. ``tools/filter.py`` with the config's ``filter_stages``: every candidate scored by the real ``MMPoseScorer``
   (a tiny top-down ViT heatmap model built by mmpose from its config, random weights, checkpoint written here;
   whole image as the person box);
3. ``tools/make_dpo_pairs.py``: best vs worst OKS per control;
4. ``tools/train.py configs/dpo/tiny_sd15_controlnet-dpo_hook.py`` on exactly that pairs file, with the
   ``DPOControlHook`` scoring the held-out set with the same scorer, a LoRA exported at every checkpoint;
5. ``tools/generate.py`` again on the held-out controls and seeds with ``dpo_lora=<the last checkpoint's LoRA>``.

The scorer's weights are random, so its OKS are low (about 0.05-0.2) and mean nothing about the images: the chain is
checked mechanically (the pairs follow the scores file, the training reads that pairs file, the hook's base and
current figures are the OKS of the tool-generated base and LoRA images, the LoRA changes the images), not for an
OKS gain (that is benchmarks/bench_dpo_method.py's). Only the winner threshold is lowered (``--min-winner 0``); the
gap threshold is the reference 0.05.
"""
import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from posedreamer_mm.generation.reader import GeneratedDataReader
from posedreamer_mm.registry import BACKENDS, SCORERS
from posedreamer_mm.scoring.matching import match_label
from posedreamer_mm.testing.diffusion import write_tiny_controlnet, write_tiny_sd15

from ..scoring.tiny_models import write_tiny_mmpose_models

ROOT = Path(__file__).resolve().parents[2]
CANDIDATES = ROOT / 'configs' / 'dpo' / 'candidates' / 'tiny_sd15_controlnet_pncc-candidates.py'
DPO = ROOT / 'configs' / 'dpo' / 'tiny_sd15_controlnet-dpo_hook.py'
N, CONTROLS, HELD_OUT = 3, 4, 2

# Seven tool processes (each imports torch, diffusers, mmpose): about 70 s of CPU. Not marked slow: it is the
# issue's one-run check of the whole DPO chain, so CI runs it (about a minute of the suite's 15).


def command(tool: str, *args) -> list[str]:
    return [sys.executable, str(ROOT / 'tools' / tool), *map(str, args)]


def run(*cmds: list[str]) -> None:
    """Runs the commands at the same time (the machine's cores) and checks that each succeeded."""
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for c in cmds]
    for cmd, proc in zip(cmds, procs):
        out = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, f'{" ".join(cmd[1:3])} failed:\n{out[-4000:]}'


def scalars(work: Path) -> list[dict]:
    return [json.loads(line) for p in work.glob('*/vis_data/scalars.json') for line in p.read_text().splitlines()]


def rows(reader: GeneratedDataReader) -> list[dict]:
    """The backend records of a generated dataset's rows: stored control, prompts, seed, label."""
    out = []
    for i in range(len(reader)):
        meta = reader.meta(i)
        control = cv2.cvtColor(cv2.imread(reader.control_path(i, 'pncc')), cv2.COLOR_BGR2RGB)
        out.append(dict(seed=meta['seed'], sample=reader.sample(i), prompt=meta['prompt'],
                        negative_prompt=meta.get('negative_prompt') or '', controls=dict(pncc=control)))
    return out


def test_candidates_scores_pairs_dpo_lora_generation(tmp_path, standin_model_dir):
    torch.set_num_threads(1)
    sd15, cn = write_tiny_sd15(tmp_path / 'sd15'), write_tiny_controlnet(tmp_path / 'cn')
    pose = write_tiny_mmpose_models(tmp_path / 'pose')
    weights = ['--cfg-options', f'sd15_dir={sd15}', f'controlnet_dir={cn}', f'body_model_dir={standin_model_dir}']
    cands, held, held_lora, work = (tmp_path / d for d in ('cands', 'held', 'held_lora', 'work'))
    held_out = ['candidates_per_sample=1', f'num_controls={HELD_OUT}', 'seed=1']

    # 1-3: candidates and held-out set, scores, pairs
    run(command('generate.py', CANDIDATES, '--out', cands, '--no-progress', *weights),
        command('generate.py', CANDIDATES, '--out', held, '--no-progress', *weights, *held_out))
    run(command('filter.py', cands, CANDIDATES, '--no-progress', '--cfg-options',
                f'pose_config={pose["pose_config"]}', f'pose_checkpoint={pose["pose_checkpoint"]}'))
    run(command('make_dpo_pairs.py', cands, '--min-winner', 0))

    reader = GeneratedDataReader(str(cands))
    groups = collections.defaultdict(list)
    for i in range(len(reader)):
        groups[reader.meta(i)['group']].append(i)
    assert len(reader) == N * CONTROLS and sorted(map(len, groups.values())) == [N] * CONTROLS
    for idx in groups.values():  # one control, N seeds, N different images
        assert len({reader.meta(i)['seed'] for i in idx}) == N
        controls = [cv2.imread(reader.control_path(i, 'pncc')) for i in idx]
        assert all((c == controls[0]).all() for c in controls)
        assert all(np.abs(reader.load_image(i).astype(int) - reader.load_image(idx[0])).mean() > 1 for i in idx[1:])
    scores = {r['id']: r for r in map(json.loads, (cands / 'filter' / 'scores.jsonl').read_text().splitlines())}
    assert len(scores) == N * CONTROLS and all(r['match']['index'] == 0 for r in scores.values())
    # the pairing rule transcribed on the scores file: best vs worst OKS, gap >= 0.05 (winner threshold 0)
    expected = {}
    for g, idx in groups.items():
        oks = sorted((scores[reader.meta(i)['id']]['scores']['oks'], reader.meta(i)['id']) for i in idx)
        if oks[-1][0] - oks[0][0] >= 0.05:
            expected[g] = (oks[-1][1], oks[0][1])
    pairs = [json.loads(line) for line in (cands / 'dpo_pairs.jsonl').read_text().splitlines()]
    assert {p['group']: (p['winner']['id'], p['loser']['id']) for p in pairs} == expected
    assert len(pairs) >= 2, f'too few pairs to train on: {expected}'

    # 4: DPO on that pairs file, the hook scoring the held-out set with the same scorer
    run(command('train.py', DPO, '--work-dir', work, '--cfg-options', f'pretrained={sd15}', f'controlnet={cn}',
                f'candidates_root={cands}', f'held_out_root={held}', f'pose_config={pose["pose_config"]}',
                f'pose_checkpoint={pose["pose_checkpoint"]}'))
    dataset = Config.fromfile(work / DPO.name).train_dataloader.dataset
    assert (dataset.data_root, dataset.ann_file) == (str(cands), 'dpo_pairs.jsonl')
    recs = scalars(work)
    assert [r['step'] for r in recs if 'loss' in r] == [1, 2, 3, 4]
    hook = {r['step']: r for r in recs if any(k.startswith('dpo_val/') for k in r)}
    assert sorted(hook) == [0, 2, 4] and set(hook[0]) == {'step', 'dpo_val/base_mean_oks', 'dpo_val/base_oks_error'}
    for step in (2, 4):
        assert {'dpo_val/mean_oks', 'dpo_val/oks_error', 'dpo_val/oks_error_reduction', 'dpo_val/implicit_acc',
                'dpo_val/reward_margin', 'dpo_val/base_mean_oks', 'dpo_val/frac_unmatched'} <= set(hook[step])
        assert list(work.glob(f'*/vis_data/vis_image/dpo_val_contact_sheet_{step}.png'))
        lora = work / 'dpo_lora' / f'iter_{step}'
        assert (lora / 'pytorch_lora_weights.safetensors').is_file()
        meta = torch.load(work / f'iter_{step}.pth', map_location='cpu', weights_only=False)['meta']
        assert meta['dpo_lora'] == f'dpo_lora/iter_{step}'

    # 5: the last LoRA in the generation backend, on the held-out controls and seeds
    run(command('generate.py', CANDIDATES, '--out', held_lora, '--no-progress', *weights, *held_out,
                f'dpo_lora={work / "dpo_lora" / "iter_4"}'))
    base_reader, lora_reader = GeneratedDataReader(str(held)), GeneratedDataReader(str(held_lora))
    manifest = json.loads((held_lora / 'manifest.json').read_text())
    assert [lo['path'] for lo in manifest['backend_record']['loras']] == [str(work / 'dpo_lora' / 'iter_4')]
    base_rows, lora_rows = rows(base_reader), rows(lora_reader)
    assert len(base_rows) == len(lora_rows) == HELD_OUT
    backend = BACKENDS.build(dict(type='SD15ControlNetBackend', weights=str(sd15), num_inference_steps=2,
                                  guidance_scale=1.0, device='cpu', dtype='float32', batch_size=HELD_OUT,
                                  controlnets=dict(weights=str(cn), control_type='pncc')))
    again = backend.generate(base_rows)   # the base is deterministic: the same seeds give the same images
    scorer = SCORERS.build(dict(type='MMPoseScorer', pose_config=pose['pose_config'],
                                pose_checkpoint=pose['pose_checkpoint'], det_config=None, device='cpu'))
    oks = {}
    for name, reader_, recs_ in (('base', base_reader, base_rows), ('lora', lora_reader, lora_rows)):
        oks[name] = [match_label(scorer(reader_.load_image(i)), r['sample'].keypoints_coco17, 0.0, 1).oks
                     for i, r in enumerate(recs_)]
    for i, (b, lo) in enumerate(zip(base_rows, lora_rows)):
        assert (b['seed'], b['prompt']) == (lo['seed'], lo['prompt'])
        assert (b['controls']['pncc'] == lo['controls']['pncc']).all()
        base_img, lora_img = base_reader.load_image(i).astype(float), lora_reader.load_image(i).astype(float)
        assert np.array_equal(again[i], base_img)
        assert np.abs(lora_img - base_img).mean() > 0.1
    # the hook's figures are the OKS of the base images and of the last LoRA's images (same controls and seeds)
    assert hook[0]['dpo_val/base_mean_oks'] == pytest.approx(np.mean(oks['base']), abs=1e-4)
    assert hook[4]['dpo_val/mean_oks'] == pytest.approx(np.mean(oks['lora']), abs=1e-4)
    assert hook[4]['dpo_val/oks_error_reduction'] == pytest.approx(
        (np.mean(oks['lora']) - np.mean(oks['base'])) / (1 - np.mean(oks['base'])), abs=1e-3)
