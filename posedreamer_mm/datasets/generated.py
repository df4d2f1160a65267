"""This project's generated data (``tools/generate.py`` output) as an HMR dataset.

Read through :class:`~posedreamer_mm.generation.reader.GeneratedDataReader` (format: docs/dataset_format.md;
API: docs/conventions.md): each row's :class:`~posedreamer_mm.body.sample.BodySample` is the label of its image
(crop-frame camera, SMPL-X in that camera's frame, derived keypoints, box and 3D joints), so the image *is* the
"full image" of the HMR convention.
"""
from __future__ import annotations

import os.path as osp

from posedreamer_mm.generation.reader import GeneratedDataReader
from posedreamer_mm.registry import DATASETS
from .hmr_base import HMRBaseDataset, data_info_from_sample


@DATASETS.register_module()
class GeneratedHMRDataset(HMRBaseDataset):
    """Rows of a generated dataset (only committed shards are visible).

    Labels are read lazily per item from the memory-mapped shard labels (the data list holds only row numbers,
    so a million-row dataset starts in seconds and workers share nothing large). A row whose label cannot be
    turned into a sample (no box and no keypoints) raises in test mode and is dropped (mmengine draws another
    index) and counted in ``num_bad_labels`` in training. ``data_info['scores']`` carries the scores the
    generator's filters wrote, for the filter transforms.

    Args:
        data_root: The generator's output directory (with ``manifest.json``).
        **kwargs: :class:`~posedreamer_mm.datasets.hmr_base.HMRBaseDataset` arguments (``dataset_name`` defaults
            to ``'generated'``).
    """
    default_name = 'generated'
    lazy = True

    def __init__(self, data_root: str = '', **kwargs):
        if not osp.isdir(data_root):
            raise FileNotFoundError(f'GeneratedHMRDataset: data_root {data_root!r} is not a directory (expected the '
                                    'output directory of tools/generate.py, with manifest.json)')
        self.reader = GeneratedDataReader(data_root)
        super().__init__(data_root=data_root, **kwargs)

    def load_data_list(self) -> list[dict]:
        if len(self.reader) == 0:
            raise ValueError(f'GeneratedHMRDataset: {self.reader.root} has no committed samples yet')
        return [dict(row=i) for i in range(len(self.reader))]

    def build_data_info(self, entry: dict) -> dict:
        row = entry['row']
        info = data_info_from_sample(self.reader.sample(row), self.reader.image_path(row), self.dataset_name)
        info.update(row=row, scores=self.reader.meta(row).get('scores', {}))
        return info
