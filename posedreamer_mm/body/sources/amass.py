"""AMASS SMPL-X sequences as camera-frame samples.

AMASS (https://amass.is.tue.mpg.de, SMPL-X N and G releases) stores one ``*_stageii.npz`` per mocap sequence in a z-up
world frame and has no camera, so this source invents one (:class:`CameraSpec`): level, looking along world +y
straight at each frame's pelvis.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from posedreamer_mm.registry import POSE_SOURCES

from ..sample import BodySample
from .base import (
    BAD_FILE_ERRORS,
    BodySource,
    CameraSpec,
    check_array,
    decode_str,
    describe_error,
    describe_location,
    list_source_files,
    make_id,
    read_npz_key,
)

#: World (AMASS: x, y, z up) -> camera (OpenCV) rotation: camera x = world x, camera y = -world z (down),
#: camera z = world y (forward). A body whose AMASS ``root_orient`` is ``Rx(90 deg)`` (the usual "stand the
#: y-up model up in a z-up world") becomes ``Rx(180 deg)``: upright, facing the camera.
AMASS_WORLD_TO_CAMERA = Rotation.from_euler('x', 90, degrees=True)

#: Per-frame keys and their trailing shape (T leading).
_FRAME_KEYS = {'root_orient': 3, 'pose_body': 63, 'pose_hand': 90, 'pose_jaw': 3, 'pose_eye': 6, 'trans': 3}
_EXPECTED = ('AMASS SMPL-X npz sequences (pattern {pattern}) with keys root_orient (T,3), pose_body (T,63), '
             'pose_hand (T,90), pose_jaw (T,3), pose_eye (T,6), trans (T,3), betas (>=1,)')


@POSE_SOURCES.register_module()
class AMASSSource(BodySource):
    """Frames of AMASS SMPL-X sequences, converted to the camera frame.

    Body, hand, jaw and eye poses are kept exactly (hands relative to the flat hand, as SMPL-X with
    ``flat_hand_mean=True``). The root is converted: ``global_orient = AMASS_WORLD_TO_CAMERA * root_orient``, and
    ``transl`` puts the pelvis at ``camera.offset``/``camera.distance`` in front of the camera (the world ``trans``
    is kept in ``meta['trans_world']``; the sequence's global motion is therefore not in the samples).

    Files are validated when the source is built (shapes, NaN/inf frames) and read again, one file at a time,
    when samples are accessed, so the whole of AMASS never sits in memory. Only the keys listed in
    docs/sources.md are read; other keys (pickled or not) are never touched.

    Args:
        data_root: Directory searched recursively for ``pattern``; ids use paths relative to it.
        files: Explicit files instead of a directory search (relative ones are joined to ``data_root``).
        subsample: Keep every k-th frame (AMASS is 60-120 fps; ids keep the original frame index). 10 when
            neither this nor ``target_fps`` is given.
        target_fps: Keep frames nearest to the times ``0, 1/target_fps, 2/target_fps, ...`` s, using the file's
            ``mocap_frame_rate`` (or ``mocap_framerate``); files without one, or slower than ``target_fps``,
            are skipped and counted. Exclusive with ``subsample``.
        gender: 'from_file' (default: the file's ``gender`` key; SMPL-X G betas are fitted to a gendered model,
            the N release says 'neutral'), or 'neutral', 'male', 'female' to override it.
        num_betas: Betas kept; ``None`` (default) keeps the file's count (16 in the SMPL-X N/G releases, as the
            sample convention asks); an int truncates or zero-pads (truncation changes the body shape).
        camera: :class:`CameraSpec` or its kwargs (focal 890 px, 1024x1024, pelvis 3 m away by default).
        pattern: File-name glob for the directory search.
        exclude: File-name globs that are not sequences (subject shape files).
    """
    name = 'amass'

    def __init__(self, data_root: str | None = None, files: str | Sequence[str] | None = None,
                 subsample: int | None = None, target_fps: float | None = None, gender: str = 'from_file',
                 num_betas: int | None = None, camera: CameraSpec | dict | None = None, pattern: str = '*.npz',
                 exclude: Sequence[str] = ('shape.npz', '*_stagei.npz')):
        super().__init__()
        if subsample is not None and target_fps is not None:
            raise ValueError('give subsample or target_fps, not both')
        if subsample is None and target_fps is None:
            subsample = 10
        if subsample is not None and subsample < 1:
            raise ValueError(f'subsample must be >= 1, got {subsample}')
        if target_fps is not None and not target_fps > 0:
            raise ValueError(f'target_fps must be > 0, got {target_fps}')
        if gender not in ('neutral', 'male', 'female', 'from_file'):
            raise ValueError(f"gender must be 'neutral', 'male', 'female' or 'from_file', got {gender!r}")
        if num_betas is not None and num_betas < 1:
            raise ValueError(f'num_betas must be >= 1 or None (keep the file\'s count), got {num_betas}')
        self.subsample, self.target_fps, self.gender, self.num_betas = subsample, target_fps, gender, num_betas
        self.camera = CameraSpec.build(camera)
        self._entries: list[dict] = []
        for path, key in list_source_files(data_root, files, (pattern,), exclude):
            try:
                self._entries.append(self._index_file(path, key))
            except BAD_FILE_ERRORS as err:  # a bad file is skipped and counted, never fatal
                self.skip(path, describe_error(err))
        self._offsets = np.cumsum([0] + [len(e['frames']) for e in self._entries])
        self._cache: tuple[int, dict] | None = None
        self._finish(describe_location(data_root, files), _EXPECTED.format(pattern=pattern))

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @staticmethod
    def _read(path: str, keys: Sequence[str], optional: Sequence[str] = ()) -> dict:
        """Reads ``keys`` (required) and those of ``optional`` present, naming the key on any failure."""
        with np.load(path, allow_pickle=False) as npz:
            data = {key: read_npz_key(npz, key) for key in keys}
            data.update({key: read_npz_key(npz, key) for key in optional if key in npz.files})
        return data

    def _frames(self, num_frames: int, fps: float | None) -> np.ndarray:
        if self.target_fps is None:
            return np.arange(0, num_frames, self.subsample)
        if fps is None:
            raise ValueError('target_fps needs the frame rate, but the file has no mocap_frame_rate or '
                             'mocap_framerate key')
        if fps < self.target_fps:
            raise ValueError(f'mocap_frame_rate {fps:g} is below target_fps {self.target_fps:g}')
        count = int(np.ceil(num_frames * self.target_fps / fps - 1e-9))  # times k / target_fps < duration
        frames = np.rint(np.arange(count) * (fps / self.target_fps))
        return np.unique(np.minimum(frames, num_frames - 1).astype(np.int64))

    def _index_file(self, path: str, key: str) -> dict:
        data = self._read(path, (*_FRAME_KEYS, 'betas'),
                          ('surface_model_type', 'mocap_frame_rate', 'mocap_framerate')
                          + (('gender',) if self.gender == 'from_file' else ()))
        if 'surface_model_type' in data and decode_str(data['surface_model_type']) != 'smplx':
            raise ValueError(f"surface_model_type is {decode_str(data['surface_model_type'])!r}, not 'smplx'")
        num_frames = np.asarray(data['pose_body']).shape[0] if np.asarray(data['pose_body']).ndim else 0
        arrays = {k: check_array(data, k, (num_frames, n)) for k, n in _FRAME_KEYS.items()}
        betas = check_array(data, 'betas', (None,))
        if not np.isfinite(betas).all():
            raise ValueError("key 'betas' contains NaN or inf")
        if self.gender != 'from_file':
            gender = self.gender
        elif 'gender' not in data:
            raise ValueError("gender='from_file' but the file has no 'gender' key; pass gender='neutral', "
                             "'male' or 'female'")
        else:
            gender = decode_str(data['gender']).strip().lower()
            if gender not in ('neutral', 'male', 'female'):
                raise ValueError(f"key 'gender' is {gender!r}, expected 'neutral', 'male' or 'female'")
        if num_frames == 0:
            raise ValueError('the sequence has no frames (pose_body has shape (0, 63))')
        fps = data.get('mocap_frame_rate', data.get('mocap_framerate'))
        if fps is not None:
            fps_value = np.asarray(fps, np.float64)
            if fps_value.size != 1 or not np.isfinite(fps_value).all() or not fps_value.reshape(-1)[0] > 0:
                raise ValueError(f'mocap_frame_rate must be one finite frame rate > 0, got {fps_value.tolist()!r}')
            fps = float(fps_value.reshape(-1)[0])
        frames = self._frames(num_frames, fps)
        if len(frames) == 0:
            raise ValueError(f'no frame of {num_frames} is left at target_fps {self.target_fps}')
        finite = np.ones(len(frames), bool)
        for value in arrays.values():
            finite &= np.isfinite(value[frames]).all(axis=1)
        if not finite.any():
            raise ValueError(f'every one of the {len(frames)} frames has NaN or inf values')
        if not finite.all():
            bad = frames[~finite]
            self.skip(path, f'dropped {len(bad)}/{len(frames)} frames with NaN or inf (first: frame {bad[0]})')
        if self.num_betas is not None:
            betas = np.pad(betas[:self.num_betas], (0, max(0, self.num_betas - len(betas))))
        return dict(path=path, key=key, frames=frames[finite], betas=betas, gender=gender, fps=fps)

    def _pose_arrays(self, entry_index: int) -> dict:
        if self._cache is None or self._cache[0] != entry_index:
            data = self._read(self._entries[entry_index]['path'], tuple(_FRAME_KEYS))
            self._cache = (entry_index, {k: np.asarray(data[k], np.float32) for k in _FRAME_KEYS})
        return self._cache[1]

    def _get(self, index: int) -> BodySample:
        entry_index = int(np.searchsorted(self._offsets, index, side='right')) - 1
        entry = self._entries[entry_index]
        frame = int(entry['frames'][index - self._offsets[entry_index]])
        arr = {k: v[frame] for k, v in self._pose_arrays(entry_index).items()}
        root_cam = AMASS_WORLD_TO_CAMERA * Rotation.from_rotvec(arr['root_orient'].astype(np.float64))
        sample = BodySample(
            id=make_id(self.name, entry['key'], frame), betas=entry['betas'].copy(),
            global_orient=root_cam.as_rotvec(), body_pose=arr['pose_body'],
            left_hand_pose=arr['pose_hand'][:45], right_hand_pose=arr['pose_hand'][45:], jaw_pose=arr['pose_jaw'],
            leye_pose=arr['pose_eye'][:3], reye_pose=arr['pose_eye'][3:], gender=entry['gender'],
            source=self.name,
            meta=dict(file=entry['key'], frame=frame, mocap_fps=entry['fps'], trans_world=arr['trans'].copy(),
                      root_orient_world=arr['root_orient'].copy()))
        return self.camera.apply(sample)

    def summary(self) -> str:
        every = f'subsample {self.subsample}' if self.target_fps is None else f'target_fps {self.target_fps:g}'
        return f'{super().summary()} (from {len(self._entries)} sequences, {every})'


def amass_root_from_camera(global_orient: np.ndarray) -> np.ndarray:
    """Inverse of the root conversion: camera-frame ``global_orient`` -> AMASS world ``root_orient``.

    Args:
        global_orient: ``(..., 3)`` axis-angle, camera frame.

    Returns:
        ``(..., 3)`` float32 axis-angle, AMASS z-up world frame.
    """
    rot = AMASS_WORLD_TO_CAMERA.inv() * Rotation.from_rotvec(np.asarray(global_orient, np.float64).reshape(-1, 3))
    return rot.as_rotvec().reshape(np.shape(global_orient)).astype(np.float32)
