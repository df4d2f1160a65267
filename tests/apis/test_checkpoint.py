"""Strict weight loading (posedreamer_mm/apis/checkpoint.py) and tools/test.py refusing another model's checkpoint."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from posedreamer_mm.apis.checkpoint import (
    CheckpointMismatchError,
    check_state_dict,
    load_checkpoint_strict,
    read_checkpoint,
)
from posedreamer_mm.testing import write_tiny_coco

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / 'configs' / 'smoke' / 'td-hm_vit-tiny_1xb4-20it_tinycoco-64x48.py'


class _Net(torch.nn.Module):
    def __init__(self, out: int = 3):
        super().__init__()
        self.body = torch.nn.Linear(4, 8)
        self.norm = torch.nn.BatchNorm1d(8)
        self.head = torch.nn.Linear(8, out)


def test_check_state_dict_names_every_kind_of_mismatch(tmp_path):
    model = _Net(3)
    own = model.state_dict()
    check_state_dict(model, own, 'same.pth')   # fits: no error
    no_counter = {k: v for k, v in own.items() if not k.endswith('num_batches_tracked')}
    check_state_dict(model, no_counter, 'no_counter.pth')   # the BatchNorm counter alone may be absent
    other = _Net(5).state_dict()
    with pytest.raises(CheckpointMismatchError, match=r'other\.pth.*head\.weight: checkpoint \[5, 8\] vs model '
                                                      r'\[3, 8\]'):
        check_state_dict(model, other, 'other.pth')
    with pytest.raises(CheckpointMismatchError, match=r'1 missing from the checkpoint \(head\.bias\)'):
        check_state_dict(model, {k: v for k, v in own.items() if k != 'head.bias'}, 'x.pth')
    with pytest.raises(CheckpointMismatchError, match=r'1 not in the model \(extra\.weight\)'):
        check_state_dict(model, {**own, 'extra.weight': torch.zeros(1)}, 'x.pth')


def test_load_checkpoint_strict_loads_runner_and_ddp_checkpoints_and_refuses_others(tmp_path):
    src = _Net(3)
    torch.nn.init.constant_(src.head.weight, 0.25)
    ddp = tmp_path / 'ddp.pth'
    torch.save({'state_dict': {f'module.{k}': v for k, v in src.state_dict().items()}, 'meta': {}}, ddp)
    dst = _Net(3)
    load_checkpoint_strict(dst, ddp)
    assert torch.equal(dst.head.weight, src.head.weight)
    bad = tmp_path / 'bad.pth'
    torch.save(_Net(5).state_dict(), bad)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match='bad.pth'):
        load_checkpoint_strict(dst, bad)
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())  # nothing half-loaded
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointMismatchError, match='cannot read checkpoint .*corrupt.pth'):
        read_checkpoint(corrupt)
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        read_checkpoint(tmp_path / 'missing.pth')


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
    """The smoke config's data and two checkpoints: its own model's weights, and a COCO-WholeBody head's (133
    keypoints) on the same backbone."""
    from mmpose.registry import MODELS
    root = tmp_path_factory.mktemp('strict')
    write_tiny_coco(root / 'coco', num_images=4)
    cfg = Config.fromfile(str(SMOKE))
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpose'):
        model = MODELS.build(cfg.model)
        cfg.model.head.out_channels = 133
        wholebody = MODELS.build(cfg.model)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, root / 'own.pth')
    torch.save({'state_dict': wholebody.state_dict(), 'meta': {}}, root / 'wholebody.pth')
    return root


def _test_tool(root, ckpt):
    return subprocess.run([sys.executable, str(ROOT / 'tools' / 'test.py'), str(SMOKE), str(ckpt), '--work-dir',
                           str(root / 'wd'), '--cfg-options', f'data_root={root / "coco"}/'],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'})


@pytest.mark.timeout(300)
def test_tools_test_refuses_a_checkpoint_of_another_head(smoke):
    res = _test_tool(smoke, smoke / 'wholebody.pth')
    log = res.stdout + res.stderr
    assert res.returncode != 0, log[-3000:]
    assert 'CheckpointMismatchError' in log and 'wholebody.pth' in log
    assert 'head.final_layer.weight: checkpoint [133, 32, 1, 1] vs model [17, 32, 1, 1]' in log
    assert 'coco/AP' not in log   # no metric computed with a random head


@pytest.mark.timeout(300)
def test_tools_test_evaluates_its_own_checkpoint(smoke):
    res = _test_tool(smoke, smoke / 'own.pth')
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-3000:]
    assert 'coco/AP' in log and 'strict: every weight name and shape matched' in log
