"""The published PoseDreamer data (per-image label files beside the images) as an HMR dataset.

Labels are read by :class:`~posedreamer_mm.body.sources.posedreamer.PoseDreamerLabelSource` (one definition of
the format); this adapter adds the image path, box and keypoints.
"""
from __future__ import annotations

import os.path as osp
from collections.abc import Sequence

from posedreamer_mm.body.sources.base import NoValidSamplesError
from posedreamer_mm.body.sources.posedreamer import PoseDreamerLabelSource
from posedreamer_mm.registry import DATASETS

from .hmr_base import HMRBaseDataset, data_info_from_sample


@DATASETS.register_module()
class PoseDreamerHMRDataset(HMRBaseDataset):
    """PoseDreamer images with one label file each (npz, json or pkl; format in
    ``posedreamer_mm/body/sources/posedreamer.py``).

    Image of a label ``<label_root>/<rel>/<stem>.<ext>``: ``<img_root>/<rel>/<stem><img_suffix>`` (``img_root``
    defaults to ``label_root``: images beside their labels). Keypoints from ``keypoints_coco17``, else the
    COCO-17 subset of ``joints_2d`` (127 SMPL-X joints); box from ``bbox`` (xywh), else the keypoints' box. The
    labels are full SMPL-X fits (``has_smplx`` all True).

    Args:
        label_root: Directory searched recursively for label files.
        img_root: Image directory mirroring ``label_root``'s layout; default ``label_root``.
        img_suffix: Image file suffix.
        label_files: Explicit label files instead of the search.
        **kwargs: :class:`~posedreamer_mm.datasets.hmr_base.HMRBaseDataset` arguments.
    """
    default_name = 'posedreamer'

    def __init__(self, label_root: str | None = None, img_root: str | None = None, img_suffix: str = '.jpg',
                 label_files: Sequence[str] | None = None, **kwargs):
        self.label_root, self.img_root, self.img_suffix, self.label_files = label_root, img_root, img_suffix, \
            label_files
        super().__init__(**kwargs)

    def load_data_list(self) -> list[dict]:
        try:
            source = PoseDreamerLabelSource(label_dir=self.label_root, files=self.label_files)
        except NoValidSamplesError as err:
            raise ValueError(f'{type(self).__name__}: {err}') from err
        skipped = list(source.skipped)
        img_root = self.img_root if self.img_root is not None else (self.label_root or '')
        data_list = []
        for i in range(len(source)):
            sample = source[i]
            rel = osp.splitext(sample.meta['file'])[0] + self.img_suffix
            img_path = rel if osp.isabs(rel) else osp.join(img_root, rel)
            try:
                data_list.append(data_info_from_sample(sample, img_path, self.dataset_name))
            except ValueError as err:
                skipped.append((sample.meta['file'], str(err)))
        self.skip_labels(skipped, 'PoseDreamer label files (see posedreamer_mm/body/sources/posedreamer.py)')
        return data_list
