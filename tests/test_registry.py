"""Registries: hierarchy, no shadowing of upstream names, and docs/components.md kept current."""
from pathlib import Path

from mmengine.registry import Registry

from posedreamer_mm import registry as pdm
from posedreamer_mm.utils.components import components_markdown, registered_components

ROOT = Path(__file__).resolve().parents[1]


def _upstream_registries() -> list[Registry]:
    """Every registry object mmengine, mmpose, mmdet and mmpretrain define."""
    import mmdet.registry
    import mmengine.registry
    import mmpose.registry
    import mmpretrain.registry
    from mmdet.utils import register_all_modules as mmdet_register
    from mmpretrain.utils import register_all_modules as mmpretrain_register
    mmdet_register(init_default_scope=False)
    mmpretrain_register(init_default_scope=False)
    regs = []
    for mod in (mmengine.registry, mmpose.registry, mmdet.registry, mmpretrain.registry):
        regs += [v for v in vars(mod).values() if isinstance(v, Registry)]
    return regs


def test_children_of_mmpose_in_our_scope():
    import mmpose.registry as mmpose_registry
    assert pdm.MODELS.parent is mmpose_registry.MODELS
    assert pdm.DATASETS.parent is mmpose_registry.DATASETS
    assert pdm.HOOKS.parent.parent is not None  # mmpose's, whose parent is mmengine's
    for name, reg in pdm.ALL_REGISTRIES.items():
        assert reg.scope == 'posedreamer_mm', name


def test_upstream_components_build_through_our_registries():
    model = pdm.MODELS.build(dict(type='mmpose.KeypointMSELoss'))
    assert type(model).__name__ == 'KeypointMSELoss'
    assert pdm.HOOKS.get('CheckpointHook') is not None  # parent lookup, no scope prefix needed


def test_no_registered_name_shadows_an_upstream_one():
    upstream_names = set()
    for reg in _upstream_registries():
        upstream_names |= set(reg.module_dict)
    ours = [(reg, name) for reg, name, _ in registered_components()]
    assert ours, 'nothing registered'
    clashes = [(reg, name) for reg, name in ours if name in upstream_names]
    assert not clashes, f'these names shadow upstream components (rename them): {clashes}'


def test_components_doc_is_current():
    doc = (ROOT / 'docs' / 'components.md').read_text()
    assert doc == components_markdown(), 'docs/components.md is stale: python tools/misc/list_components.py --write'
    for _, name, path in registered_components():
        assert (ROOT / path).is_file(), path


def test_each_registry_holds_one_kind_and_locations_are_real_modules():
    """issue 15 §2: GENERATORS held the generator, six backends, the prompt sampler and the writer; locations named
    packages that do not exist."""
    import importlib

    from posedreamer_mm.generation.backends import BaseGenerationBackend
    from posedreamer_mm.utils import register_all_modules
    register_all_modules()
    assert set(pdm.GENERATORS.module_dict) == {'DatasetGenerator'}
    assert pdm.BACKENDS.module_dict and all(issubclass(c, BaseGenerationBackend)
                                            for c in pdm.BACKENDS.module_dict.values())
    assert set(pdm.PROMPT_SAMPLERS.module_dict) == {'PromptSampler'}
    for name, reg in pdm.ALL_REGISTRIES.items():
        for location in reg._locations:
            importlib.import_module(location)  # raises for a package that does not exist
        assert not {'posedreamer_mm.alignment', 'posedreamer_mm.mining'} & set(reg._locations), name
