"""Config loading, tool arguments and process-group end (the override mechanism: tests/apis/test_cfg_overrides.py)."""
import argparse

import pytest
from mmengine.config import Config

from posedreamer_mm.apis.launch import ConfigError, load_config, merge_train_args


def test_top_level_asset_variable_propagates(tmp_path):
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text("data_root = 'data/coco/'\nbody_model_dir = 'data/body_models'\n"
                        "train = dict(dataset=dict(data_root=data_root, ann=data_root + 'ann.json', "
                        "other='data/coco_other/x'), model=dict(path=body_model_dir))\n")
    cfg = load_config(str(cfg_file), {'data_root': '/mnt/coco/', 'body_model_dir': '/models/smplx'})
    assert cfg.train.dataset.data_root == '/mnt/coco/'
    assert cfg.train.dataset.ann == '/mnt/coco/ann.json'
    assert cfg.train.dataset.other == 'data/coco_other/x'  # only whole values or paths under the old dir
    assert cfg.train.model.path == '/models/smplx'


def test_a_dotted_override_leaves_equal_values_elsewhere(tmp_path):
    """Only what the file computes from the overridden entry changes, not values that happen to be equal."""
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text("a = 'x/'\nb = dict(c='x/')\nd = b\n")
    cfg = load_config(str(cfg_file), {'b.c': 'y/'})
    assert cfg.a == 'x/' and cfg.b.c == 'y/' and cfg.d.c == 'y/'


def test_missing_and_broken_configs_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match='not found.*nope.py'):
        load_config(str(tmp_path / 'nope.py'))
    bad = tmp_path / 'bad.py'
    bad.write_text('model = dict(\n')
    with pytest.raises(ConfigError, match='bad.py'):
        load_config(str(bad))


def test_amp_and_resume_args():
    cfg = Config(dict(optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)), train_dataloader=dict(batch_size=2)))
    args = argparse.Namespace(launcher='none', work_dir='wd', config='x.py', amp=True, resume='auto',
                              auto_scale_lr=True)
    merge_train_args(cfg, args)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.resume is True and cfg.load_from is None
    assert cfg.auto_scale_lr.enable and cfg.auto_scale_lr.base_batch_size == 2


def test_shutdown_distributed_ends_only_a_launcher_made_group(tmp_path):
    """tools/train.py, tools/test.py and tools/generate.py end their group before exit (gloo may abort the process
    when the group is left to interpreter finalisation); a group made without a launcher is the caller's."""
    import torch.distributed as dist

    from posedreamer_mm.apis.launch import shutdown_distributed
    assert not dist.is_initialized()
    assert shutdown_distributed('pytorch') is False  # nothing to end
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    try:
        assert shutdown_distributed('none') is False and dist.is_initialized()
        assert shutdown_distributed('pytorch') is True and not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_top_level_settings_reach_every_use(tmp_path):
    """``--cfg-options seed=3`` used to set the variable only: the generator kept seed 0 (a silent wrong run)."""
    cfg = load_config('configs/demo/render_standin_procedural.py', {'seed': 3, 'num_samples': 5})
    gen = cfg.generator
    assert gen.seed == 3 and gen.source.seed == 3 and gen.source.source.seed == 3
    # As if the files said it: the demo's base computes its source's length from num_samples too (sample i does
    # not depend on the length: tests/body/test_sources.py).
    assert gen.num_samples == 5 and gen.source.source.num_samples == 5
    # A tuple setting reaches the transforms built from it; equal values written separately stay.
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text('input_size = (192, 256)\nother = (192, 256)\n'
                        'pipeline = [dict(type="A", input_size=input_size, img_size=(192, 256)), '
                        'dict(type="B", input_size=(1, 2))]\n')
    cfg = load_config(str(cfg_file), {'input_size': (96, 128)})
    assert tuple(cfg.pipeline[0]['input_size']) == (96, 128) and tuple(cfg.pipeline[0]['img_size']) == (192, 256)
    assert tuple(cfg.pipeline[1]['input_size']) == (1, 2) and tuple(cfg.other) == (192, 256)
