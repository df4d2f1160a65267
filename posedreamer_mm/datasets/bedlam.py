"""BEDLAM (Black et al., CVPR 2023, https://bedlam.is.tue.mpg.de) as an HMR dataset, from its label npz files.

Labels are read by :class:`~posedreamer_mm.body.sources.bedlam.BEDLAMSource` (one definition of the format and
its camera-frame translation rule); this adapter adds image paths, boxes and COCO-17 keypoints.
"""
from __future__ import annotations

import os.path as osp
from collections.abc import Sequence

import numpy as np

from posedreamer_mm.body.sources.base import NoValidSamplesError
from posedreamer_mm.body.sources.bedlam import BEDLAMSource
from posedreamer_mm.registry import DATASETS

from .hmr_base import HAS_SMPLX_KEYS, HMRBaseDataset, data_info_from_sample

#: BEDLAM labels have no expression: every part but the face.
_HAS = {k: k != 'face' for k in HAS_SMPLX_KEYS}


@DATASETS.register_module()
class BEDLAMHMRDataset(HMRBaseDataset):
    """BEDLAM label rows (one person per row) with their images.

    Image of a row: ``<img_root>/<img_subdir>/<imgname>`` where ``img_subdir`` may use ``{scene}`` (the label
    file's name without ``.npz``); the default ``'{scene}/png'`` is the released layout
    (``bedlam_data/images/<scene>/png/seq_000000/seq_000000_0000.png`` beside ``<scene>.npz``). Keypoints are the
    COCO-17 subset of ``gtkps`` (127 projected SMPL-X joints; visibility 2 inside the image, 0 outside); the
    box is the keypoints' box (``gtkps`` includes fingertips, toes, heels and face points, so it hugs the body),
    else BEDLAM's ``center``/``scale`` square (``scale * 200`` px). Fits are neutral SMPL-X with 11 betas; the
    first 10 are kept (docs/conventions.md). All parts are labels except the face (no expression).

    Rows are turned into samples on access (``lazy``: the label tables are read once and shared by the
    workers, so a million-row set starts in seconds); bad files and NaN rows are found when loading (the label
    policy of docs/hmr_data.md), a row without a usable box on access.

    Args:
        label_root: Directory of label npz files (all ``*.npz`` under it) or None with ``label_files``.
        img_root: Directory of the scenes' image folders.
        label_files: Explicit label files (relative ones under ``label_root``).
        img_subdir: Per-scene image folder under ``img_root`` (``{scene}`` is substituted).
        **kwargs: :class:`~posedreamer_mm.datasets.hmr_base.HMRBaseDataset` arguments.
    """
    default_name = 'bedlam'
    lazy = True
    locator_key = 'index'

    def __init__(self, label_root: str | None = None, img_root: str = '', label_files: Sequence[str] | None = None,
                 img_subdir: str = '{scene}/png', **kwargs):
        self.label_root, self.img_root, self.label_files, self.img_subdir = label_root, img_root, label_files, \
            img_subdir
        super().__init__(**kwargs)

    def load_data_list(self) -> list[dict]:
        try:
            self.source = BEDLAMSource(label_file=self.label_files, data_root=self.label_root, load_keypoints=True)
        except NoValidSamplesError as err:
            raise ValueError(f'{type(self).__name__}: {err}') from err
        self.skip_labels(self.source.skipped, 'BEDLAM label npz files (see posedreamer_mm/body/sources/bedlam.py)')
        return [dict(index=i) for i in range(len(self.source))]

    def ids_of_locators(self, locators: np.ndarray) -> list[str]:
        """Sample ids of source rows ``locators`` from the label tables (no row is turned into a sample)."""
        return self.source.sample_ids(locators)

    def paths_of_locators(self, locators: np.ndarray) -> list[str]:
        """Image paths of source rows ``locators`` from the label tables (no row is turned into a sample)."""
        folders: dict[str, str] = {}  # one image folder per label file
        out = []
        for file, name in self.source.image_names(locators):
            folder = folders.get(file)
            if folder is None:
                folder = folders[file] = self._img_path(file, '')
            out.append(name if osp.isabs(name) else folder + name)  # osp.join(folder, name)
        return out

    def _img_path(self, file: str, imgname: str) -> str:
        scene = osp.splitext(osp.basename(file))[0]
        return osp.join(self.img_root, self.img_subdir.format(scene=scene), imgname)

    def build_data_info(self, entry: dict) -> dict:
        sample = self.source[entry['index']]
        img_path = self._img_path(sample.meta['file'], sample.meta['imgname'])
        box = None
        has_kpts = sample.joints_2d is not None and len(sample.joints_2d) >= 127
        if not has_kpts and 'center' in sample.meta and 'scale' in sample.meta:
            c, half = np.asarray(sample.meta['center'], np.float32), 100.0 * float(sample.meta['scale'])
            box = np.concatenate([c - half, c + half])
        try:
            return data_info_from_sample(sample, img_path, self.dataset_name, bbox_xyxy=box, has_smplx=_HAS)
        except ValueError as err:
            raise ValueError(f'{sample.meta["file"]} row {sample.meta["row"]}: {err}') from err
