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
from .base import (
    BAD_FILE_ERRORS,
    BodySource,
    check_array,
    decode_str,
    describe_error,
    describe_location,
    list_source_files,
    make_id,
    read_npz_key,
)

_EXPECTED = ('BEDLAM label npz files with keys imgname (N,), pose_cam (N,165), shape (N,>=10), trans_cam (N,3), '
             'cam_int (N,3,3); optional cam_ext (N,4,4), gender (N,), gtkps (N,J,2|3), center (N,2), scale (N,); '
             'other keys are not read')
_GENDER_NOTE = ("BEDLAM's fits are neutral SMPL-X (its own code builds a neutral model with num_betas=11); the "
                "file's gender column is the subject's gender and is kept as meta['subject_gender']")


@POSE_SOURCES.register_module()
class BEDLAMSource(BodySource):
    """Rows of BEDLAM label files.

    ``pose_cam`` (N, 165) is the SMPL-X full pose in smplx order: global_orient (camera frame), body (21 joints),
    jaw, leye, reye, left hand (15), right hand (15); hands relative to the flat hand (``flat_hand_mean=True``).
    ``focal``/``princpt`` come from ``cam_int``. Rows with NaN/inf in any parameter are dropped and counted (one
    :attr:`skipped` entry per file). Only the keys this source uses are read (lazily), so extra keys of the
    released labels (``motion_info``, ``sub``, ``proj_verts``, ``pose_world``, ..., pickled or not) are ignored.

    The fits are neutral SMPL-X with 11 shape components (BEDLAM's code builds
    ``smplx.create(..., gender='neutral', num_betas=11)``; no kid template, the 11th is an ordinary component),
    so every sample is ``gender='neutral'``; the file's ``gender`` column (the subject's) goes to
    ``meta['subject_gender']``.

    Args:
        label_file: One label npz or a list of them (relative ones are joined to ``data_root``).
        data_root: Directory of label files (all ``*.npz`` under it when ``label_file`` is ``None``); ids use
            paths relative to it, else the file's basename.
        img_size: (W, H) of the images these labels belong to. ``None`` (default) infers it per row as
            ``(2 * cx, 2 * cy)`` from ``cam_int`` (BEDLAM's principal point is exactly the image centre: 1280x720,
            and 720x1280 for the rotated closeup scenes); a given size that disagrees with it is logged (WARNING)
            once per file.
        num_betas: Betas kept; ``None`` (default) keeps the file's count (11); an int truncates or zero-pads
            (truncating changes the body).
        gender: Only 'neutral' (see above); kept as an argument to explain the removed 'from_file'.
        load_keypoints: Also load ``gtkps`` (N, J, 2|3) into ``joints_2d`` (pixels); off by default because
            the full set of keypoints is the largest part of the labels.
    """
    name = 'bedlam'

    def __init__(self, label_file: str | Sequence[str] | None = None, data_root: str | None = None,
                 img_size: Sequence[int] | None = None, num_betas: int | None = None, gender: str = 'neutral',
                 load_keypoints: bool = False):
        super().__init__()
        if gender != 'neutral':
            raise ValueError(f'BEDLAMSource takes no gender={gender!r}: {_GENDER_NOTE}')
        if num_betas is not None and num_betas < 1:
            raise ValueError(f"num_betas must be >= 1 or None (keep the file's count), got {num_betas}")
        self.img_size = None if img_size is None else np.asarray(img_size, np.int64)
        self.num_betas, self.gender, self.load_keypoints = num_betas, gender, load_keypoints
        self._tables: list[dict] = []
        for path, key in list_source_files(data_root, label_file, ('*.npz',)):
            try:
                table = self._load_table(path, key)
            except BAD_FILE_ERRORS as err:  # a bad file is skipped and counted, never fatal
                self.skip(path, describe_error(err))
                continue
            if len(table['rows']):
                self._tables.append(table)
        self._offsets = np.cumsum([0] + [len(t['rows']) for t in self._tables])
        self._finish(describe_location(data_root, label_file), _EXPECTED)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _load_table(self, path: str, key: str) -> dict:
        optional = ['cam_ext', 'center', 'scale', 'gender'] + (['gtkps'] if self.load_keypoints else [])
        with np.load(path, allow_pickle=False) as npz:
            data = {k: read_npz_key(npz, k) for k in ('imgname', 'pose_cam', 'shape', 'trans_cam', 'cam_int')}
            data.update({k: read_npz_key(npz, k) for k in optional if k in npz.files})
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
        if 'gender' in data:
            genders = np.asarray(data['gender']).reshape(-1)
            if len(genders) != n:
                raise ValueError(f"key 'gender' has shape {np.shape(data['gender'])}, expected ({n},)")
            table['subject_gender'] = [decode_str(g) for g in genders]
        finite = np.ones(n, bool)
        for name in ('pose_cam', 'shape', 'trans_cam', 'cam_int', 'cam_ext'):
            if name in table:
                finite &= np.isfinite(table[name].reshape(n, -1)).all(axis=1)
        finite &= (table['cam_int'][:, 0, 0] > 0) & (table['cam_int'][:, 1, 1] > 0)
        finite &= (table['cam_int'][:, 0, 2] > 0) & (table['cam_int'][:, 1, 2] > 0)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            self.skip(path, f'dropped {len(bad)}/{n} rows with NaN/inf, non-positive focal or principal point '
                            f'(first: row {bad[0]})')
        table['rows'] = np.flatnonzero(finite)
        self._check_img_size(path, table)
        return table

    def _check_img_size(self, path: str, table: dict) -> None:
        """Warns once per file when the given ``img_size`` is not ``2 * princpt`` (BEDLAM's convention)."""
        if self.img_size is None or not len(table['rows']):
            return
        implied = 2 * table['cam_int'][table['rows']][:, :2, 2]
        off = np.abs(implied - self.img_size).max(axis=1) > 1.0
        if off.any():
            row = int(table['rows'][np.argmax(off)])
            self.warn(f'{path}: img_size={tuple(self.img_size.tolist())} but cam_int of {off.sum()} '
                      f'row(s) puts the principal point at the centre of a '
                      f'{tuple(np.round(implied[np.argmax(off)], 1).tolist())} image (first: row {row}); '
                      'pass img_size=None to infer it per row')

    def sample_ids(self, indices: Sequence[int] | np.ndarray | None = None) -> list[str]:
        """The ids of samples ``indices`` (default all), as ``self[i].id`` gives them, from the tables alone:
        one digest per file, no row decoded (a million rows in well under a second)."""
        which, rows = self._locate(indices)
        heads = [make_id(self.name, t['key'], 0)[:-6] for t in self._tables]  # the id rule checked once per file
        return [f'{heads[t]}{r:06d}' for t, r in zip(which.tolist(), rows.tolist())]

    def image_names(self, indices: Sequence[int] | np.ndarray | None = None) -> list[tuple[str, str]]:
        """``(meta['file'], meta['imgname'])`` of samples ``indices`` (default all), from the tables alone."""
        which, rows = self._locate(indices)
        return [(self._tables[t]['key'], decode_str(self._tables[t]['imgname'][r]))
                for t, r in zip(which.tolist(), rows.tolist())]

    def _locate(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """``(table, row in its file)`` of each sample index (default all)."""
        n = len(self)
        indices = np.arange(n) if indices is None else np.asarray(indices, np.int64).reshape(-1)
        if len(indices) and (indices.min() < -n or indices.max() >= n):
            raise IndexError(f'{type(self).__name__} indices out of range for {n} samples')
        indices = indices % max(n, 1)
        which = np.searchsorted(self._offsets, indices, side='right') - 1
        rows = np.empty(len(indices), np.int64)
        for t, table in enumerate(self._tables):
            here = which == t
            rows[here] = table['rows'][indices[here] - self._offsets[t]]
        return which, rows

    def _get(self, index: int) -> BodySample:
        t_index = int(np.searchsorted(self._offsets, index, side='right')) - 1
        table = self._tables[t_index]
        row = int(table['rows'][index - self._offsets[t_index]])
        transl = table['trans_cam'][row].astype(np.float64)
        if 'cam_ext' in table:
            transl = transl + table['cam_ext'][row, :3, 3]
        betas = table['shape'][row]
        if self.num_betas is not None:
            betas = np.pad(betas[:self.num_betas], (0, max(0, self.num_betas - len(betas))))
        k = table['cam_int'][row]
        img_size = np.rint(2 * k[:2, 2]).astype(np.int64) if self.img_size is None else self.img_size.copy()
        meta = dict(file=table['key'], row=row, imgname=decode_str(table['imgname'][row]))
        if 'subject_gender' in table:
            meta['subject_gender'] = table['subject_gender'][row]
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
            focal=(k[0, 0], k[1, 1]), princpt=(k[0, 2], k[1, 2]), img_size=img_size, gender='neutral',
            source=self.name, joints_2d=joints_2d, meta=meta, **split_full_pose(table['pose_cam'][row]))
