"""posedreamer_mm registries.

Every registry that an OpenMMLab config can reach (models, datasets, transforms, hooks, metrics, ...) is a
child of mmpose's, which is a child of mmengine's, so ``default_scope='posedreamer_mm'`` configs can still
build any mmpose/mmdet/mmengine component (``type='mmdet.RTMDet'``) and mmpose configs can build ours
(``type='posedreamer_mm.X'``). Registries for concepts upstream has no name for (body models, pose sources,
control renderers, generators, scorers) are roots in the ``posedreamer_mm`` scope.

``locations`` lists the sub-packages imported on first build, so a config never needs ``custom_imports``.
"""
import os.path as osp

from mmengine.registry import Registry
from mmpose import registry as mmpose_registry

SCOPE = 'posedreamer_mm'


def _existing(locations: list[str]) -> list[str]:
    """The sub-packages that exist (mmengine errors on a missing location).

    Looked up on disk, not with ``importlib.util.find_spec``: that imports the parent package of a nested
    location (``generation`` for ``generation.backends``), which imports this module while it is half built.
    """
    here = osp.dirname(osp.abspath(__file__))
    paths = {loc: osp.join(here, *loc.split('.')) for loc in locations}
    return [f'{SCOPE}.{loc}' for loc, path in paths.items()
            if osp.isfile(osp.join(path, '__init__.py')) or osp.isfile(path + '.py')]


def _child(name: str, parent: Registry, locations: list[str]) -> Registry:
    return Registry(name, parent=parent, scope=SCOPE, locations=_existing(locations))


def _root(name: str, locations: list[str]) -> Registry:
    return Registry(name, scope=SCOPE, locations=_existing(locations))


# --- children of mmpose's registries ------------------------------------------------------------------------
RUNNERS = _child('runner', mmpose_registry.RUNNERS, ['engine'])
RUNNER_CONSTRUCTORS = _child('runner constructor', mmpose_registry.RUNNER_CONSTRUCTORS, ['engine'])
LOOPS = _child('loop', mmpose_registry.LOOPS, ['engine'])
HOOKS = _child('hook', mmpose_registry.HOOKS, ['engine'])
DATASETS = _child('dataset', mmpose_registry.DATASETS, ['datasets'])
DATA_SAMPLERS = _child('data sampler', mmpose_registry.DATA_SAMPLERS, ['datasets'])
TRANSFORMS = _child('transform', mmpose_registry.TRANSFORMS, ['datasets'])
MODELS = _child('model', mmpose_registry.MODELS, ['models', 'body'])
MODEL_WRAPPERS = _child('model_wrapper', mmpose_registry.MODEL_WRAPPERS, ['models'])
WEIGHT_INITIALIZERS = _child('weight initializer', mmpose_registry.WEIGHT_INITIALIZERS, ['models'])
OPTIMIZERS = _child('optimizer', mmpose_registry.OPTIMIZERS, ['engine'])
OPTIM_WRAPPERS = _child('optim_wrapper', mmpose_registry.OPTIM_WRAPPERS, ['engine'])
OPTIM_WRAPPER_CONSTRUCTORS = _child('optimizer wrapper constructor', mmpose_registry.OPTIM_WRAPPER_CONSTRUCTORS,
                                    ['engine'])
PARAM_SCHEDULERS = _child('parameter scheduler', mmpose_registry.PARAM_SCHEDULERS, ['engine'])
METRICS = _child('metric', mmpose_registry.METRICS, ['evaluation'])
EVALUATORS = _child('evaluator', mmpose_registry.EVALUATORS, ['evaluation'])
VISUALIZERS = _child('visualizer', mmpose_registry.VISUALIZERS, ['visualization'])
VISBACKENDS = _child('vis_backend', mmpose_registry.VISBACKENDS, ['visualization'])
LOG_PROCESSORS = _child('log_processor', mmpose_registry.LOG_PROCESSORS, ['engine'])

# --- roots for concepts upstream has no registry for --------------------------------------------------------
#: SMPL-X (and stand-in) body-model wrappers: ``body_model=dict(type='SMPLXBodyModel', model_path=...)``.
BODY_MODELS = _root('body model', ['body'])
#: Pose/camera sources yielding SMPL-X parameter records (AMASS, BEDLAM, PoseDreamer labels, procedural).
POSE_SOURCES = _root('pose source', ['body'])
#: Control-image renderers: ``control=dict(type='PNCCRenderer', size=512)``.
RENDERERS = _root('renderer', ['render'])
#: The dataset generator (``DatasetGenerator``, the main job).
GENERATORS = _root('generator', ['generation'])
#: Generation backends turning a sample's controls and prompt into its image (rendering baseline, diffusers).
BACKENDS = _root('generation backend', ['generation.backends'])
#: Prompt samplers (``SamplePrompt(prompts=dict(type='PromptSampler', preset='generic'))``).
PROMPT_SAMPLERS = _root('prompt sampler', ['generation'])
#: 2D pose / person-count / head-pose / quality scorers used by filters and DPO.
SCORERS = _root('scorer', ['scoring'])
#: diffusers scheduler classes (``scheduler=dict(type='UniPCMultistepScheduler', ...)`` of a backend), registered
#: on first use by ``posedreamer_mm/generation/backends/schedulers.py`` (importing diffusers is slow).
DIFFUSION_SCHEDULERS = _root('diffusion scheduler', ['generation.backends'])

#: Every registry of this package, by attribute name (used by tests and tools/misc/list_components.py).
ALL_REGISTRIES = {k: v for k, v in dict(globals()).items() if isinstance(v, Registry)}
