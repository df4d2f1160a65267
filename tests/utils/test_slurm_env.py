"""One Slurm-to-torch environment set-up for tools/train.py, tools/test.py (CPU) and tools/generate.py.

Before, apis/launch.py set MASTER_ADDR to 127.0.0.1 (a multi-node CPU job never met) while apis/generate.py asked
``scontrol``; both now call ``setup_slurm_env``.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from posedreamer_mm.apis.launch import setup_slurm_env, slurm_first_host
from posedreamer_mm.testing import free_port

ROOT = Path(__file__).resolve().parents[2]


def fake_scontrol(folder: Path, hosts: str, rc: int = 0) -> str:
    """A PATH holding an ``scontrol`` that answers ``show hostnames`` with ``hosts`` (and logs its arguments)."""
    folder.mkdir(exist_ok=True)
    script = folder / 'scontrol'
    script.write_text(f'#!/bin/sh\necho "$@" > "{folder}/args"\nprintf "{hosts}"\nexit {rc}\n')
    script.chmod(0o755)
    return str(folder)


@pytest.mark.parametrize('nodelist, first', [
    ('node7', 'node7'), ('a,b', 'a'), ('gpu[07-08,11],cpu3', 'gpu07'), ('x[9,10]', 'x9'),
    ('rack[1-2]-n[03-04]', 'rack1-n03'), ('n[002-004]', 'n002')])
def test_first_host_of_a_slurm_hostlist(nodelist, first):
    """As ``scontrol show hostnames`` lists them (Slurm's hostlist syntax: ranges keep their zero padding)."""
    assert slurm_first_host(nodelist) == first


def test_env_from_slurm_variables_asks_scontrol(tmp_path):
    env = dict(SLURM_PROCID='3', SLURM_NTASKS='8', SLURM_LOCALID='1', SLURM_NODELIST='gpu[07-08]',
               PATH=fake_scontrol(tmp_path / 'bin', 'gpu07.cluster\\ngpu08.cluster\\n'))
    out = setup_slurm_env(env)
    assert out == dict(RANK='3', WORLD_SIZE='8', LOCAL_RANK='1', MASTER_PORT='29500', MASTER_ADDR='gpu07.cluster')
    assert all(env[k] == v for k, v in out.items())
    assert (tmp_path / 'bin' / 'args').read_text().split() == ['show', 'hostnames', 'gpu[07-08]']


def test_env_without_a_working_scontrol_reads_the_hostlist(tmp_path):
    base = dict(SLURM_PROCID='0', SLURM_NTASKS='2', SLURM_LOCALID='0', SLURM_JOB_NODELIST='cn[12-13]')
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert setup_slurm_env(dict(base, PATH=str(empty)))['MASTER_ADDR'] == 'cn12'
    broken = fake_scontrol(tmp_path / 'bin', 'error\\n', rc=1)
    assert setup_slurm_env(dict(base, PATH=broken))['MASTER_ADDR'] == 'cn12'
    assert setup_slurm_env(dict(SLURM_PROCID='0', PATH=str(empty)))['MASTER_ADDR'] == '127.0.0.1'  # one node


def test_set_variables_are_kept(tmp_path):
    env = dict(RANK='5', WORLD_SIZE='6', SLURM_PROCID='0', SLURM_NODELIST='a')
    assert setup_slurm_env(env) == {} and env['RANK'] == '5'  # torchrun inside the job set them
    env = dict(SLURM_PROCID='1', SLURM_NTASKS='2', MASTER_ADDR='10.0.0.1', MASTER_PORT='1234', SLURM_NODELIST='a')
    out = setup_slurm_env(env)
    assert 'MASTER_ADDR' not in out and 'MASTER_PORT' not in out and env['MASTER_ADDR'] == '10.0.0.1'


_CHILD = '''
import os, sys
from mmengine.config import Config
import torch.distributed as dist
if sys.argv[1] == 'train':
    from posedreamer_mm.apis.launch import setup_cpu_distributed
    setup_cpu_distributed(Config(dict()), 'slurm')
else:
    from posedreamer_mm.apis.generate import init_generation_dist
    init_generation_dist('slurm')
print(os.environ['MASTER_ADDR'], os.environ['RANK'], os.environ['WORLD_SIZE'], dist.get_world_size(), flush=True)
dist.destroy_process_group()
'''


def test_training_and_generation_launches_meet_at_the_same_address(tmp_path):
    """A one-task Slurm job of each tool, in a real process: the process group starts, at the address scontrol
    gave (the training path used to ignore SLURM_NODELIST and take 127.0.0.1)."""
    path = fake_scontrol(tmp_path / 'bin', 'localhost\\nother\\n')
    seen = []
    for tool in ('train', 'generate'):
        env = {k: v for k, v in os.environ.items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR',
                                                                 'MASTER_PORT')}
        env.update(SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_LOCALID='0', SLURM_NODELIST='node[1-2]',
                   MASTER_PORT=str(free_port()), PATH=f'{path}:{env["PATH"]}', CUDA_VISIBLE_DEVICES='')
        done = subprocess.run([sys.executable, '-c', _CHILD, tool], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        seen.append(done.stdout.split()[-4:])
    assert seen == [['localhost', '0', '1', '1']] * 2
