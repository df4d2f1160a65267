"""Loading diffusers weights for the backends: layout checks with clear errors, dtypes, LoRA stacks.

A weights location is either a ``from_pretrained`` folder (what ``save_pretrained`` writes and the Hugging Face
repositories hold: ``model_index.json`` naming the pipeline in ``_class_name`` plus one subfolder per component
for a pipeline, ``config.json`` plus ``diffusion_pytorch_model.safetensors`` for one model) or, where diffusers
supports it, a single checkpoint file (``.safetensors``/``.ckpt``, loaded with ``from_single_file``; offline it
needs ``config=`` a local folder of the same architecture). Layouts per backend: ``docs/backends.md``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch

#: Single-file checkpoint suffixes ``from_single_file`` reads.
SINGLE_FILE_SUFFIXES = ('.safetensors', '.ckpt', '.pt', '.pth', '.bin')
DTYPES = {'float32': torch.float32, 'fp32': torch.float32, 'float16': torch.float16, 'fp16': torch.float16,
          'bfloat16': torch.bfloat16, 'bf16': torch.bfloat16}


class WeightsLayoutError(FileNotFoundError, ValueError):
    """A weights path that is missing or not laid out as the backend expects (the message names both)."""


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``'float16'``/``'fp16'``/``'bfloat16'``/``'bf16'``/``'float32'``/``'fp32'`` or a ``torch.dtype``."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype) not in DTYPES:
        raise ValueError(f'dtype {dtype!r} is not one of {sorted(DTYPES)}')
    return DTYPES[str(dtype)]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise WeightsLayoutError(f'{path} is not a readable JSON file ({err})') from err


def _file_or_folder(path: str | os.PathLike, what: str, layout: str) -> Path:
    """``path`` as a Path if it is a checkpoint file or an existing folder; else the error naming it and ``layout``."""
    p = Path(os.fspath(path)).expanduser()
    if p.is_file() and p.suffix not in SINGLE_FILE_SUFFIXES:
        raise WeightsLayoutError(f'{what}: weights {p} is a file but not a checkpoint; expected {layout}')
    if not p.exists():
        raise WeightsLayoutError(f'{what}: weights path {p} does not exist; expected {layout}')
    return p


def check_pipeline_folder(path: str | os.PathLike, accepted: Sequence[str], subfolders: Sequence[str],
                          what: str) -> Path:
    """Checks a ``from_pretrained`` pipeline folder or a single-file checkpoint; returns the path.

    Args:
        path: folder with ``model_index.json`` or a checkpoint file.
        accepted: ``model_index.json`` ``_class_name`` values that hold the right components.
        subfolders: component subfolders that must exist (each with a config or tokenizer file).
        what: the backend and model family, for the message (e.g. ``'SD15ControlNetBackend (SD1.5)'``).

    Raises:
        WeightsLayoutError: naming the path, what was found and the expected layout.
    """
    layout = (f'a diffusers folder with model_index.json (_class_name one of {list(accepted)}) and the '
              f'subfolders {list(subfolders)}, or a single checkpoint file ({", ".join(SINGLE_FILE_SUFFIXES)})')
    p = _file_or_folder(path, what, layout)
    if p.is_file():
        return p
    index = p / 'model_index.json'
    if not index.is_file():
        raise WeightsLayoutError(f'{what}: {p} has no model_index.json (is it a single model folder or a parent '
                                 f'folder?); expected {layout}')
    found = _read_json(index).get('_class_name')
    if found not in accepted:
        raise WeightsLayoutError(f'{what}: {p} holds a {found!r} pipeline (model_index.json _class_name), not '
                                 f'one of {list(accepted)}; expected {layout}')
    missing = [s for s in subfolders if not (p / s).is_dir() or not any((p / s).iterdir())]
    if missing:
        raise WeightsLayoutError(f'{what}: {p} lacks the component subfolders {missing}; expected {layout}')
    return p


def check_model_folder(path: str | os.PathLike, accepted: Sequence[str], what: str) -> Path:
    """Checks a single-model folder (``config.json`` ``_class_name`` in ``accepted`` plus weights) or file."""
    layout = (f'a folder with config.json (_class_name one of {list(accepted)}) and '
              f'diffusion_pytorch_model.safetensors (or .bin, possibly sharded), or a single checkpoint file')
    p = _file_or_folder(path, what, layout)
    if p.is_file():
        return p
    if not (p / 'config.json').is_file():
        hint = ' (it is a pipeline folder: point at its model subfolder)' if (p / 'model_index.json').is_file() else ''
        raise WeightsLayoutError(f'{what}: {p} has no config.json{hint}; expected {layout}')
    found = _read_json(p / 'config.json').get('_class_name')
    if found not in accepted:
        raise WeightsLayoutError(f'{what}: {p} holds a {found!r} model (config.json _class_name), not one of '
                                 f'{list(accepted)}; expected {layout}')
    if not any(f.name.startswith('diffusion_pytorch_model') for f in p.iterdir()):
        raise WeightsLayoutError(f'{what}: {p} has a config.json but no diffusion_pytorch_model.* weights; '
                                 f'expected {layout}')
    return p


def load_model(cls, path: Path, dtype: torch.dtype, single_file_config: str | None = None, **kwargs):
    """``cls.from_pretrained(folder)`` or ``cls.from_single_file(file, config=...)``, local files only."""
    if path.is_file():
        if not hasattr(cls, 'from_single_file'):
            raise WeightsLayoutError(f'{cls.__name__} cannot load a single checkpoint file ({path}) in this diffusers '
                                     'version: convert it to a from_pretrained folder')
        extra = {} if single_file_config is None else dict(config=os.fspath(single_file_config))
        return cls.from_single_file(os.fspath(path), dtype=dtype, local_files_only=True, **extra, **kwargs)
    loaded = cls.from_pretrained(os.fspath(path), dtype=dtype, local_files_only=True, **kwargs)
    check_loaded_weights(loaded, path, skip=tuple(kwargs))
    return loaded


def _stored_shapes(folder: Path) -> dict[str, tuple[int, ...]] | None:
    """Names and shapes of the safetensors weights in ``folder`` (one file or a sharded index), read from the
    headers only; ``None`` where that is not unambiguous (``.bin`` weights, several variants side by side)."""
    from safetensors import safe_open
    indices = sorted(folder.glob('*.safetensors.index.json'))
    if len(indices) == 1:
        files = sorted({folder / f for f in _read_json(indices[0])['weight_map'].values()})
    else:
        files = sorted(folder.glob('*.safetensors'))
        if len(files) != 1:
            return None
    shapes = {}
    for file in files:
        with safe_open(os.fspath(file), 'pt') as handle:
            for key in handle.keys():
                shapes[key] = tuple(handle.get_slice(key).get_shape())
    return shapes


def check_loaded_weights(loaded, path: Path, skip: Sequence[str] = ()) -> None:
    """Refuses diffusers models whose stored weights do not match them name for name and shape for shape.

    ``from_pretrained`` only logs keys it did not find (they stay randomly initialised: a ControlNet missing one
    layer would generate from noise weights) or did not use; this reads the safetensors headers of ``path`` (a model
    folder) or of each model component's subfolder of a pipeline folder (except the components in ``skip``, passed
    in already loaded) and compares. Text encoders (transformers models, which tie and omit weights by design) and
    ``.bin`` weights are left to their libraries.

    Raises:
        WeightsLayoutError: naming the folder and the first missing, unexpected and mismatched keys.
    """
    import diffusers
    if isinstance(loaded, diffusers.ModelMixin):
        parts = {'': loaded}
    elif isinstance(loaded, diffusers.DiffusionPipeline):
        parts = {name: c for name, c in loaded.components.items()
                 if isinstance(c, diffusers.ModelMixin) and name not in skip}
    else:
        return
    for name, model in parts.items():
        folder = path / name if name else path
        stored = _stored_shapes(folder) if folder.is_dir() else None
        if stored is None:
            continue
        from posedreamer_mm.apis.checkpoint import state_dict_mismatch  # the strict check of every other loader
        diff = state_dict_mismatch(model, {k: torch.empty(shape, device='meta') for k, shape in stored.items()})
        missing, unexpected = diff['missing'], diff['unexpected']
        mismatched = [f'{k} {stored_shape} (model {model_shape})' for k, stored_shape, model_shape in diff['shape']]
        if missing or unexpected or mismatched:
            raise WeightsLayoutError(
                f'{folder}: the weights do not match {type(model).__name__} (its config.json): {len(missing)} '
                f'missing {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, {len(mismatched)} of another '
                f'shape {mismatched[:3]}; missing weights would stay randomly initialised. Use the weights saved '
                'with this config (save_pretrained), or convert them.')


def lora_specs(loras: Sequence[dict] | None) -> list[dict]:
    """Normalised LoRA specs: ``path``, ``weight`` (default 1.0), ``name`` (default ``lora<i>``), ``weight_name``,
    ``target`` (``'pipeline'`` — UNet/transformer/text encoders as the file says — or ``'controlnet'``) and
    ``controlnet_index`` (which ControlNet of several)."""
    out = []
    for i, spec in enumerate(loras or ()):
        spec = dict(spec)
        unknown = set(spec) - {'path', 'weight', 'name', 'weight_name', 'target', 'controlnet_index'}
        if 'path' not in spec or unknown:
            raise ValueError(f'LoRA #{i} {spec}: needs path and takes only weight, name, weight_name, target, '
                             f'controlnet_index (unknown: {sorted(unknown)})')
        target = spec.get('target', 'pipeline')
        if target not in ('pipeline', 'controlnet'):
            raise ValueError(f"LoRA #{i}: target must be 'pipeline' or 'controlnet', got {target!r}")
        path = Path(os.fspath(spec['path'])).expanduser()
        out.append(dict(path=path, weight=float(spec.get('weight', 1.0)), name=str(spec.get('name', f'lora{i}')),
                        weight_name=spec.get('weight_name'), target=target,
                        controlnet_index=int(spec.get('controlnet_index', 0))))
    names = [s['name'] for s in out]
    if len(set(names)) != len(names):
        raise ValueError(f'LoRA names must be unique, got {names}')
    return out


def check_lora_paths(specs: list[dict]) -> None:
    """Raises :class:`WeightsLayoutError` for a LoRA path that does not exist (naming it and the layout)."""
    for spec in specs:
        if not spec['path'].exists():
            raise WeightsLayoutError(f'LoRA {spec["name"]!r}: {spec["path"]} does not exist; expected a LoRA folder '
                                     '(pytorch_lora_weights.safetensors, as save_lora_weights writes) or a '
                                     '.safetensors file')


def _split_file(spec: dict) -> tuple[str, dict]:
    """(folder, kwargs) for diffusers' LoRA loaders: a file becomes its folder plus ``weight_name``."""
    path = spec['path']
    kwargs = {}
    if path.is_file():
        kwargs['weight_name'] = path.name
        path = path.parent
    elif spec['weight_name'] is not None:
        kwargs['weight_name'] = spec['weight_name']
    return os.fspath(path), kwargs


def apply_loras(pipe, specs: list[dict]) -> None:
    """Loads every LoRA as a named adapter and activates them together with their weights (``set_adapters``).

    Pipeline LoRAs go through ``pipe.load_lora_weights`` (which also expands a FLUX control LoRA's input layer);
    ControlNet LoRAs through ``controlnet.load_lora_adapter(prefix=None)`` (saved with ``save_lora_adapter``).
    """
    if not specs:
        return
    pipeline_specs = [s for s in specs if s['target'] == 'pipeline']
    for spec in pipeline_specs:
        folder, kwargs = _split_file(spec)
        try:
            pipe.load_lora_weights(folder, adapter_name=spec['name'], local_files_only=True, **kwargs)
        except Exception as err:  # diffusers/peft/safetensors raise many types; the cause stays attached
            raise WeightsLayoutError(f'LoRA {spec["name"]!r} at {spec["path"]} could not be loaded into '
                                     f'{type(pipe).__name__}: {type(err).__name__}: {err}') from err
        loaded = {n for names in pipe.get_list_adapters().values() for n in names}
        if spec['name'] not in loaded:  # diffusers only warns when no key matches: a LoRA of another model
            raise WeightsLayoutError(f'LoRA {spec["name"]!r} at {spec["path"]} matched no module of '
                                     f'{type(pipe).__name__} (is it a LoRA of another model family, or a ControlNet '
                                     "LoRA that needs target='controlnet'?)")
    if pipeline_specs:
        pipe.set_adapters([s['name'] for s in pipeline_specs], adapter_weights=[s['weight'] for s in pipeline_specs])
    by_net: dict[int, list[dict]] = {}
    for spec in specs:
        if spec['target'] == 'controlnet':
            by_net.setdefault(spec['controlnet_index'], []).append(spec)
    for index, net_specs in by_net.items():
        net = controlnet_at(pipe, index)
        for spec in net_specs:
            folder, kwargs = _split_file(spec)
            try:
                net.load_lora_adapter(folder, prefix=None, adapter_name=spec['name'], use_safetensors=True,
                                      local_files_only=True, **kwargs)
            except Exception as err:  # diffusers/peft/safetensors raise many types; the cause stays attached
                raise WeightsLayoutError(f'ControlNet LoRA {spec["name"]!r} at {spec["path"]} could not be loaded '
                                         f'into {type(net).__name__} (a file written by save_lora_adapter is '
                                         f'expected): {type(err).__name__}: {err}') from err
            if spec['name'] not in getattr(net, 'peft_config', {}):
                raise WeightsLayoutError(f'ControlNet LoRA {spec["name"]!r} at {spec["path"]} matched no module of '
                                         f'{type(net).__name__}')
        net.set_adapters([s['name'] for s in net_specs], weights=[s['weight'] for s in net_specs])


def controlnet_at(pipe, index: int):
    """The ``index``-th ControlNet of a pipeline (one model, or one of a Multi-ControlNet's ``nets``)."""
    net = getattr(pipe, 'controlnet', None)
    if net is None:
        raise ValueError(f'{type(pipe).__name__} has no ControlNet to load a ControlNet LoRA into')
    nets = list(getattr(net, 'nets', [net]))
    if not 0 <= index < len(nets):
        raise ValueError(f'controlnet_index {index} out of range: the pipeline has {len(nets)} ControlNet(s)')
    return nets[index]


def describe(value: Any) -> Any:
    """JSON-able form of a config value for :meth:`record` (paths as strings)."""
    if isinstance(value, Path):
        return os.fspath(value)
    if isinstance(value, dict):
        return {k: describe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    return value
