"""(control, image, caption) training pairs of a control model, read from a generated dataset.

Any dataset in the project's sharded format (docs/dataset_format.md) whose writer stored the controls holds pairs:
photo pairs (``configs/control/pairs/``: the source's photo cropped by the controls' camera) and the generator's
own output (render or diffusion backend: image, controls, prompt). Only committed shards are read, so a dataset
still being generated can be trained on (docs/control_pairs.md).

::

    dataset = DATASETS.build(dict(type='ControlPairDataset', data_root='data/pairs/bedlam', control_types=['pncc'],
                                  pipeline=[dict(type='LoadControlPair'), dict(type='PackControlPair')]))
    dataset[0]  # {'inputs': {'image': uint8 (3, H, W), 'control': uint8 (3k, H, W)},
                #  'data_samples': {'prompt': str, 'sample_id': str}}
"""
from __future__ import annotations

import os.path as osp
from collections.abc import Sequence

from mmengine.dataset import BaseDataset

from posedreamer_mm.generation.reader import GeneratedDataReader
from posedreamer_mm.generation.writer import META
from posedreamer_mm.registry import DATASETS


class MissingControlError(ValueError):
    """A requested control type is not stored for a sample (the message names the metadata file)."""


@DATASETS.register_module()
class ControlPairDataset(BaseDataset):
    """The rows of a generated dataset as control-training pairs (contract: docs/control_pairs.md, "Format").

    ``data_info`` per row: ``img_path`` (the image), ``control_paths`` (one path per requested control type, in
    ``control_types`` order), ``control_types``, ``prompt`` (the stored caption; ``''`` if none), ``sample_id``,
    ``row``. The pipeline reads the files (:class:`~posedreamer_mm.datasets.transforms.control_pair_transforms.
    LoadControlPair`) and ends with :class:`~posedreamer_mm.datasets.transforms.control_pair_transforms.
    PackControlPair`.

    Args:
        data_root: The generator's output directory (with ``manifest.json``).
        control_types: Controls to feed, by name (``'pncc'``, ``'depth'``, ``'openpose'``...), stacked along the
            channels in this order.
        **kwargs: :class:`mmengine.dataset.BaseDataset` arguments (``pipeline``, ``indices``, ``test_mode``...).

    Raises:
        FileNotFoundError: ``data_root`` is not a directory.
        MissingControlError: a requested control type is missing for a row: names the row's ``meta.jsonl``, the
            sample, and the types stored (the writer's ``save_controls``, the config's renderers).
        ValueError: ``control_types`` is empty or repeats a type, or the dataset has no committed sample.
    """
    METAINFO = dict(dataset_name='control_pairs')

    def __init__(self, data_root: str = '', control_types: Sequence[str] = ('pncc',), **kwargs) -> None:
        types = [control_types] if isinstance(control_types, str) else list(control_types)
        if not types or len(set(types)) != len(types):
            raise ValueError(f'ControlPairDataset: control_types must name each control once, got {types}')
        if not osp.isdir(data_root):
            raise FileNotFoundError(f'ControlPairDataset: data_root {data_root!r} is not a directory (expected the '
                                    'output directory of tools/generate.py, with manifest.json)')
        self.control_types = [str(t) for t in types]
        self.reader = GeneratedDataReader(data_root)
        super().__init__(data_root=data_root, serialize_data=True, **kwargs)

    def load_data_list(self) -> list[dict]:
        reader = self.reader
        if len(reader) == 0:
            raise ValueError(f'ControlPairDataset: {reader.root} has no committed samples yet')
        data_list = []
        for row in range(len(reader)):
            meta = reader.meta(row)
            stored = meta.get('controls', {})
            missing = [t for t in self.control_types if t not in stored]
            if missing:
                shard_dir = osp.dirname(osp.dirname(meta['image']))
                raise MissingControlError(
                    f'ControlPairDataset: {osp.join(reader.root, shard_dir, META)} (row {meta.get("row", row)}, '
                    f'sample {meta["id"]!r}) stores no {missing} control; it stores {sorted(stored)}. Choose '
                    'control_types among those, or generate the dataset with those renderers and '
                    'writer.save_controls=True')
            data_list.append(dict(
                img_path=reader.image_path(row), control_types=list(self.control_types),
                control_paths=[reader.control_path(row, t) for t in self.control_types],
                prompt=str(meta.get('prompt') or ''), sample_id=str(meta['id']), row=row))
        return data_list


__all__ = ['ControlPairDataset', 'MissingControlError']
