"""BEDLAM label files as samples.

BEDLAM (Black et al., CVPR 2023, https://bedlam.is.tue.mpg.de) ships one label npz per scene, one row per person
per image, already in the camera frame. The translation convention follows BEDLAM's released training code
(``train/dataset/dataset.py``: ``translation = cam_ext[:, 3]; translation[:3] += trans_cam``): the camera-frame
SMPL-X ``transl`` is ``trans_cam + cam_ext[:3, 3]``. The rotation part of ``cam_ext`` is already folded into
``pose_cam`` and is not applied again.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from posedreamer_mm.registry import POSE_SOURCES
from ..sample import BodySample, split_full_pose
from .base import (BodySource, check_array, decode_str, describe_error, describe_location, list_source_files,
                   make_id)

_EXPECTED = ('BEDLAM label npz files with keys imgname (N,), pose_cam (N,165), shape (N,>=10), trans_cam (N,3), '
             'cam_int (N,3,3); optional cam_ext (N,4,4), gender (N,), gtkps (N,J,2|3), center (N,2), scale (N,)')


@POSE_SOURCES.register_module()
class BEDLAMSource(BodySource):
    """Rows of BEDLAM label files.

    ``pose_cam`` (N, 165) is the SMPL-X full pose in smplx order: global_orient (camera frame), body (21 joints),
    jaw, leye, reye, left hand (15), right hand (15). ``focal``/``princpt`` come from ``cam_int``. Image sizes
    are not stored in the labels: BEDLAM frames are 1280x720 (W, H); the closeup scenes' frames are stored
    rotated, 720x1280 — give ``img_size`` per label file accordingly. Rows with NaN/inf in any parameter are
    dropped and counted (one :attr:`skipped` entry per file).

    Args:
        label_file: One label npz or a list of them (relative ones are joined to ``data_root``).
        data_root: Directory of label files (all ``*.npz`` under it when ``label_file`` is ``None``); ids use
            paths relative to it, else the file's basename.
        img_size: (W, H) of the images these labels belong to.
        num_betas: Betas kept (BEDLAM stores 11: the 11th is the kid-template blend weight, dropped by the
            default 10); truncated or zero-padded.
        gender: 'neutral' (default, BEDLAM's fits are neutral SMPL-X), 'male', 'female' or 'from_file'.
        load_keypoints: Also load ``gtkps`` (N, J, 2|3) into ``joints_2d`` (pixels); off by default because
            the full set of keypoints is the largest part of the labels.
    """
    name = 'bedlam'

    def __init__(self, label_file: str | Sequence[str] | None = None, data_root: str | None = None,
                 img_size: Sequence[int] = (1280, 720), num_betas: int = 10, gender: str = 'neutral',
                 load_keypoints: bool = False):
        super().__init__()
        if gender not in ('neutral', 'male', 'female', 'from_file'):
            raise ValueError(f"gender must be 'neutral', 'male', 'female' or 'from_file', got {gender!r}")
        self.img_size = np.asarray(img_size, np.int64)
        self.num_betas, self.gender, self.load_keypoints = num_betas, gender, load_keypoints
        self._tables: list[dict] = []
        for path, key in list_source_files(data_root, label_file, ('*.npz',)):
            try:
                table = self._load_table(path, key)
            except Exception as err:  # noqa: BLE001 - a bad file is skipped and counted, never fatal
                self.skip(path, describe_error(err))
                continue
            if len(table['rows']):
                self._tables.append(table)
        self._offsets = np.cumsum([0] + [len(t['rows']) for t in self._tables])
        self._finish(describe_location(data_root, label_file), _EXPECTED)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _load_table(self, path: str, key: str) -> dict:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files if k != 'gtkps' or self.load_keypoints}
        if 'imgname' not in data:
            raise ValueError("missing key 'imgname'")
        n = len(data['imgname'])
        table = dict(path=path, key=key, imgname=np.asarray(data['imgname']),
                     pose_cam=check_array(data, 'pose_cam', (n, 165)),
                     shape=check_array(data, 'shape', (n, None)),
                     trans_cam=check_array(data, 'trans_cam', (n, 3)),
                     cam_int=check_array(data, 'cam_int', (n, 3, 3)))
        if 'cam_ext' in data:
            table['cam_ext'] = check_array(data, 'cam_ext', (n, 4, 4))
        for name, shape in (('center', (n, 2)), ('scale', (n,))):
            if name in data:
                table[name] = check_array(data, name, shape)
        if self.load_keypoints and 'gtkps' in data:
            table['gtkps'] = check_array(data, 'gtkps', (n, None, None))
            if table['gtkps'].shape[2] not in (2, 3):
                raise ValueError(f"key 'gtkps' has shape {table['gtkps'].shape}, expected (N, J, 2|3)")
        if self.gender == 'from_file':
            if 'gender' not in data:
                raise ValueError("gender='from_file' but the file has no 'gender' key")
            table['gender'] = [decode_str(g) for g in np.asarray(data['gender'])]
            bad = sorted({g for g in table['gender'] if g not in ('neutral', 'male', 'female')})
            if bad:
                raise ValueError(f"key 'gender' has unknown values {bad}")
        finite = np.ones(n, bool)
        for name in ('pose_cam', 'shape', 'trans_cam', 'cam_int', 'cam_ext'):
            if name in table:
                finite &= np.isfinite(table[name].reshape(n, -1)).all(axis=1)
        finite &= (table['cam_int'][:, 0, 0] > 0) & (table['cam_int'][:, 1, 1] > 0)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            self.skip(path, f'dropped {len(bad)}/{n} rows with NaN/inf or non-positive focal (first: row {bad[0]})')
        table['rows'] = np.flatnonzero(finite)
        return table

    def _get(self, index: int) -> BodySample:
        t_index = int(np.searchsorted(self._offsets, index, side='right')) - 1
        table = self._tables[t_index]
        row = int(table['rows'][index - self._offsets[t_index]])
        transl = table['trans_cam'][row].astype(np.float64)
        if 'cam_ext' in table:
            transl = transl + table['cam_ext'][row, :3, 3]
        betas = table['shape'][row, :self.num_betas]
        betas = np.pad(betas, (0, max(0, self.num_betas - len(betas))))
        k = table['cam_int'][row]
        meta = dict(file=table['key'], row=row, imgname=decode_str(table['imgname'][row]))
        for name in ('center', 'scale'):
            if name in table:
                meta[name] = np.asarray(table[name][row])
        joints_2d = None
        if 'gtkps' in table:
            joints_2d = table['gtkps'][row, :, :2]
            if table['gtkps'].shape[2] == 3:
                meta['joints_2d_conf'] = table['gtkps'][row, :, 2].copy()
        return BodySample(
            id=make_id(self.name, table['key'], row), betas=betas, transl=transl,
            focal=(k[0, 0], k[1, 1]), princpt=(k[0, 2], k[1, 2]), img_size=self.img_size.copy(),
            gender=table['gender'][row] if 'gender' in table else self.gender, source=self.name,
            joints_2d=joints_2d, meta=meta, **split_full_pose(table['pose_cam'][row]))
