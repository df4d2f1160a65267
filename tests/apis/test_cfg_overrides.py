"""``--cfg-options`` act exactly as if the config file said them (docs/configs.md), or are refused by name.

Each example of issue 16 §1 is here: before, the override changed only the unused top-level variable.
"""
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from posedreamer_mm.apis.launch import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
GENERATION = str(ROOT / 'configs' / 'generation' / 'render_procedural_generic-512.py')
DEMO = str(ROOT / 'configs' / 'demo' / 'render_standin_procedural.py')
HMR = str(ROOT / 'configs' / 'hmr' / 'hmr_vitl_posedreamer_bedlam.py')
HMR_S = str(ROOT / 'configs' / 'hmr' / 'hmr_vits_posedreamer_bedlam.py')


def values_of(node, key, path=''):
    """Every ``(dotted path, value)`` of a key called ``key`` in a plain config dict."""
    if isinstance(node, dict):
        for k, v in node.items():
            sub = f'{path}.{k}' if path else str(k)
            if k == key:
                yield sub, v
            yield from values_of(v, key, sub)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from values_of(v, key, f'{path}.{i}')


def edited(config: str, tmp_path: Path, name: str, value) -> dict:
    """The config loaded after rewriting its lines ``name = ...`` to ``name = value`` in a copy of configs/ (so
    relative ``_base_`` files resolve as in the original), in the file and in every local ``_base_`` file that
    assigns ``name`` (what a user editing the files would do): what the override must be equal to."""
    import ast
    import re
    import shutil

    from mmengine.config import Config
    shutil.copytree(ROOT / 'configs', tmp_path / 'configs', dirs_exist_ok=True)
    todo, found = [tmp_path / Path(config).relative_to(ROOT)], 0
    while todo:
        copy = todo.pop()
        text, n = re.subn(rf'^{name} = .*$', f'{name} = {value!r}', copy.read_text(), count=1, flags=re.M)
        copy.write_text(text)
        found += n
        for node in ast.parse(text).body:  # its local bases
            if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ['_base_']:
                bases = ast.literal_eval(node.value)
                todo += [copy.parent / b for b in ([bases] if isinstance(bases, str) else bases) if '::' not in b]
    assert found, f'{config} (with its bases) has no one-line assignment of {name}'
    return Config.fromfile(str(tmp_path / Path(config).relative_to(ROOT))).to_dict()


@pytest.mark.parametrize('config', [GENERATION, DEMO], ids=['generation', 'demo'])
def test_body_model_dir_replaces_none_in_every_body_model(config, tmp_path):
    """The README's main-job command: ``body_model_dir`` is ``None`` in the file (the stand-in), so the old
    propagation skipped it and the generator labelled a mannequin."""
    cfg = load_config(config, {'body_model_dir': '/some/dir'}).to_dict()
    paths = dict(values_of(cfg, 'model_path'))
    assert 'generator.body_model.model_path' in paths and set(paths.values()) == {'/some/dir'}, paths
    assert cfg == edited(config, tmp_path, 'body_model_dir', '/some/dir')


@pytest.mark.parametrize('config', [GENERATION, DEMO], ids=['generation', 'demo'])
@pytest.mark.parametrize('name, value', [('seed', 3), ('crop_size', 256), ('num_samples', 7)])
def test_generation_settings_act_as_if_the_file_said_them(config, name, value, tmp_path):
    cfg = load_config(config, {name: value}).to_dict()
    assert cfg == edited(config, tmp_path, name, value)
    assert cfg != load_config(config).to_dict()
    if name == 'seed':  # the generator and its sources, which read it from the variable
        gen = cfg['generator']
        assert (gen['seed'], gen['source']['seed'], gen['source']['source']['seed']) == (3, 3, 3)


@pytest.mark.parametrize('config', [HMR, HMR_S], ids=['vitl', 'vits'])
def test_backbone_checkpoint_prefix_none_reaches_the_backbone(config):
    """The HMR config recommends ``backbone_checkpoint_prefix=None`` for MAE weights; a string replaced by None
    was skipped. The ViT-S child reads it through ``{{_base_.backbone_checkpoint_prefix}}``."""
    cfg = load_config(config, {'backbone_checkpoint_prefix': None})
    assert cfg.model.backbone.init_cfg.prefix is None
    assert cfg.model.backbone.init_cfg.checkpoint == cfg.backbone_checkpoint  # the rest as written


def test_train_pipeline_entry_reaches_the_train_dataloader():
    cfg = load_config(HMR, {'train_pipeline.1.prob': 0.0})
    flip = cfg.train_dataloader.dataset.pipeline[1]
    assert flip.type == 'HMRRandomFlip' and flip.prob == 0.0
    assert flip.body_model.model_path == 'data/body_models/smplx/'  # the rest of the entry kept
    assert len(cfg.train_dataloader.dataset.pipeline) == 7


def test_dataset_dicts_reach_the_dataloaders_that_use_them():
    cfg = load_config(HMR, {'posedreamer_train.label_root': '/data/pd/', 'ubody_val.min_keypoints': 5})
    posedreamer, bedlam = cfg.train_dataloader.dataset.datasets
    assert posedreamer.label_root == '/data/pd/' and posedreamer.type == 'PoseDreamerHMRDataset'
    assert bedlam.label_root == 'data/bedlam/bedlam_labels/all_npz_12_training/'
    # test_dataloader = val_dataloader in the file: both see it, as if the file had said it.
    assert cfg.val_dataloader.dataset.min_keypoints == 5 and cfg.test_dataloader.dataset.min_keypoints == 5
    # A child config that lists the base's dict through {{_base_.posedreamer_train}} gets the new one too.
    cfg = load_config(str(ROOT / 'configs' / 'hmr' / 'hmr_vitl_posedreamer.py'),
                      {'posedreamer_train.label_root': '/data/pd/'})
    assert [d.label_root for d in cfg.train_dataloader.dataset.datasets] == ['/data/pd/']


def test_a_dict_setting_reaches_every_copy(tmp_path):
    cfg = load_config(DEMO, {'body_model.gender': 'female'}).to_dict()
    assert cfg['generator']['body_model'] == dict(type='SMPLXBodyModel', model_path=None, gender='female',
                                                  num_betas=10)  # the rest of the dict kept
    assert cfg == edited(DEMO, tmp_path, 'body_model',
                         dict(type='SMPLXBodyModel', model_path=None, gender='female', num_betas=10))
    cfg = load_config(HMR, {'body_model.num_betas': 11})
    got = dict(values_of(cfg.to_dict(), 'body_model'))
    assert len(got) >= 6 and all(v['num_betas'] == 11 for v in got.values()), got


def test_values_computed_from_the_variable_follow_it(tmp_path):
    """Joins, f-strings, arithmetic, a None old value, a string replaced by a non-string, and equal values
    that were written separately (they must stay: only what the file computes from the variable changes).
    (mmengine's python configs cannot import os: joining is done with str methods.)"""
    (tmp_path / 'cfg.py').write_text(
        "data_root = 'data/coco'\n"
        'weights = None\n'
        'input_size = (192, 256)\n'
        "ann = '/'.join([data_root, 'ann.json'])\n"
        "img = f'{data_root}/images'\n"
        "other = 'data/coco'\n"
        'heatmap = (input_size[0] // 4, input_size[1] // 4)\n'
        'pipeline = [dict(type="A", input_size=input_size, img_size=(192, 256))]\n'
        'model = dict(init=weights, size=input_size)\n')
    cfg = load_config(str(tmp_path / 'cfg.py'), {'data_root': '/mnt/coco', 'weights': 'w.pth',
                                                 'input_size': (96, 128)})
    assert cfg.ann == '/mnt/coco/ann.json' and cfg.img == '/mnt/coco/images' and cfg.other == 'data/coco'
    assert tuple(cfg.heatmap) == (24, 32) and tuple(cfg.model.size) == (96, 128) and cfg.model.init == 'w.pth'
    assert tuple(cfg.pipeline[0].input_size) == (96, 128) and tuple(cfg.pipeline[0].img_size) == (192, 256)
    # A string replaced by a non-string is used as the file would use it: here the join fails, naming the option.
    with pytest.raises(ConfigError, match=r"cfg.py with --cfg-options data_root=3: TypeError: sequence item 0"):
        load_config(str(tmp_path / 'cfg.py'), {'data_root': 3})
    (tmp_path / 'cfg.py').write_text("data_root = 'data/coco'\nloader = dict(root=data_root)\n")
    assert load_config(str(tmp_path / 'cfg.py'), {'data_root': 3}).loader.root == 3


def test_base_chains_resolve_with_overrides(tmp_path):
    """Relative ``_base_`` files, ``{{_base_.x}}``, ``{{fileDirname}}`` and a variable the child assigns again."""
    (tmp_path / 'base').mkdir()
    (tmp_path / 'base' / 'b.py').write_text("root = 'a/'\nsub = root + 'x'\nshared = dict(path=root)\n")
    (tmp_path / 'child.py').write_text("_base_ = ['./base/b.py']\nroot = 'c/'\nmine = root + 'y'\n"
                                       'copied = {{_base_.shared}}\nhere = "{{fileDirname}}"\n')
    cfg = load_config(str(tmp_path / 'child.py'), {'root': 'z/'})
    assert (cfg.root, cfg.sub, cfg.mine, cfg.copied.path, cfg.shared.path) == ('z/', 'z/x', 'z/y', 'z/', 'z/')
    assert cfg.here == str(tmp_path) and cfg.filename == str(tmp_path / 'child.py')


def test_runtime_keys_may_be_added_and_typos_are_refused(tmp_path):
    (tmp_path / 'cfg.py').write_text('seed = 0\nrun = dict(seed=seed)\n')
    with pytest.raises(ConfigError, match=r"sed: .*cfg.py.* assigns no top-level 'sed'; did you mean \['seed'\]"):
        load_config(str(tmp_path / 'cfg.py'), {'sed': 3})
    cfg = load_config(str(tmp_path / 'cfg.py'), {'work_dir': '/w', 'randomness.seed': 1})
    assert cfg.work_dir == '/w' and cfg.randomness.seed == 1 and cfg.run.seed == 0
    with pytest.raises(ConfigError, match='work_dir'):  # a generation config is no Runner config
        load_config(str(tmp_path / 'cfg.py'), {'work_dir': '/w'}, runtime_keys=('custom_imports',))


def test_what_cannot_be_applied_faithfully_is_refused(tmp_path):
    def refused(text, options, match):
        (tmp_path / 'cfg.py').write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_config(str(tmp_path / 'cfg.py'), options)

    # The file changes the entry again after assigning the dict: the override would not hold.
    refused("pipe = [dict(prob=0.5)]\npipe[0]['prob'] = 0.3\n", {'pipe.0.prob': 0.0},
            r'pipe.0.prob=0.0 did not hold: the config ends with pipe.0.prob = 0.3')
    refused('for seed in range(3):\n    pass\n', {'seed': 1}, r'seed: .*cfg.py:1 binds .seed. by a statement')
    refused('pipe = [dict(prob=0.5)]\n', {'pipe.3.prob': 0.0}, r'pipe.3.prob: pipe.3 is not an index of the 1-entry')
    refused('seed = 0\n', {'seed.x': 1}, r'seed.x: seed is 0 at .*cfg.py:1, not a dict or list')
    refused('seed = 0\n', {'seed': float('nan')}, r'seed: nan .* cannot be written in a config file')
    refused('seed = 0\n', {'_base_': ['other.py']}, r'_base_: the inheritance list is not overridable')
    # A package base is not re-evaluated; mmpose's dataset_info is one.
    with pytest.raises(ConfigError, match=r"dataset_info.*package base 'mmpose::_base_/datasets/coco.py'"):
        load_config(HMR, {'dataset_info.dataset_name': 'x'})
    # A dotted key through a {{_base_.x}} value (filled in after the file ran) names the base variable to use.
    with pytest.raises(ConfigError, match=r'train_dataloader.dataset.datasets.0 is {{_base_.bedlam_train}} at '
                       r'.*hmr_vitl_bedlam.py:4'):
        load_config(str(ROOT / 'configs' / 'hmr' / 'hmr_vitl_bedlam.py'),
                    {'train_dataloader.dataset.datasets.0.label_root': '/x'})


def test_the_log_says_where_each_override_applied(tmp_path):
    from mmengine.logging import MMLogger
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        load_config(DEMO, {'seed': 3, 'work_dir': '/w'})
    finally:
        logger.removeHandler(handler)
    assert any(m.startswith('--cfg-options seed=3: applied where the config assigns seed (')
               and 'render_procedural_generic-512.py:' in m for m in messages), messages  # the demo's base
    assert '--cfg-options work_dir=\'/w\': merged as an mmengine runtime key' in messages


def test_a_body_model_dir_that_does_not_exist_stops_the_generation_tool(tmp_path):
    """Before, the override was dropped (old value None) and the run exited 0 with stand-in labels."""
    env = dict(os.environ, PDM_STANDIN_DIR=str(tmp_path / 'standin'), HF_HUB_OFFLINE='1')
    out = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'generate.py'), DEMO, '--out', str(tmp_path / 'out'), '--num-samples',
         '2', '--no-progress', '--cfg-options', 'body_model_dir=/nonexistent/smplx'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0, out.stdout[-2000:]
    assert '/nonexistent/smplx' in out.stderr, out.stderr[-3000:]
    assert not (tmp_path / 'out' / 'summary.json').exists()
    assert not (tmp_path / 'standin').exists()  # the stand-in was never reached for


def test_a_dotted_key_through_a_child_s_partial_dict_reaches_the_base_s_list():
    """The demo's ``generator`` is a partial dict over its base's: ``generator.pipeline.1.size`` must set the base's
    pipeline entry (not create ``pipeline={'1': ...}`` in the child, which mmengine cannot merge with a list)."""
    cfg = load_config(DEMO, {'generator.pipeline.1.size': 128, 'generator.writer.shard_size': 4})
    gen = cfg.generator
    assert gen.pipeline[1] == dict(type='BodyCropCamera', size=128, margin=0.1) and len(gen.pipeline) == 5
    assert gen.writer == dict(shard_size=4, image_format='jpg', jpeg_quality=95, save_controls=True)
    assert gen.backend.batch_size == 8  # the child's own entries kept
    # A key under a path no file has is added as mmengine adds it (nothing can have been computed from it).
    cfg = load_config(HMR, {'train_dataloader.sampler.extra.depth': 3})
    assert cfg.train_dataloader.sampler.extra == dict(depth=3) and cfg.train_dataloader.sampler.shuffle is True
