"""SMPL-X body model: a registered wrapper around ``smplx.SMPLX`` with file checks and zero-filled defaults.

The licensed SMPL-X files are not shipped. Users register at https://smpl-x.is.tue.mpg.de, download
"SMPL-X v1.1 NPZ+PKL" and point ``model_path`` at the folder holding ``SMPLX_NEUTRAL.npz`` (configs: the top-level
body-model path variable). Tests and demos use the open stand-in (:mod:`posedreamer_mm.body.standin`), which
has the same layout and loads through this same class.
"""
from __future__ import annotations

import logging
import os
import pathlib
import pickle
import re
import zipfile
from typing import NamedTuple

import numpy as np
import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from posedreamer_mm.registry import BODY_MODELS

#: Keys ``smplx`` reads from an SMPL-X file, with their shapes (V vertices, F faces, S shape+expression
#: components, L landmarks); ``dynamic_*`` only with ``use_face_contour``.
REQUIRED_KEYS = {
    'v_template': ('V', 3), 'f': ('F', 3), 'weights': ('V', 55), 'J_regressor': (55, 'V'),
    'kintree_table': (2, 55), 'shapedirs': ('V', 3, 'S'), 'posedirs': ('V', 3, 486),
    'hands_componentsl': (45, 45), 'hands_componentsr': (45, 45), 'hands_meanl': (45,), 'hands_meanr': (45,),
    'lmk_faces_idx': ('L',), 'lmk_bary_coords': ('L', 3)}
CONTOUR_KEYS = {'dynamic_lmk_faces_idx': (79, 17), 'dynamic_lmk_bary_coords': (79, 17, 3)}
GENDERS = ('neutral', 'male', 'female')


class BodyModelFileError(FileNotFoundError, ValueError):
    """A missing, corrupt or malformed body-model file (one message says where, what and how to get it)."""


def _fmt(shape) -> str:
    return '(' + ', '.join(str(d) for d in shape) + (',)' if len(shape) == 1 else ')')


def _explain(problem: str, searched, model_path, ext: str) -> BodyModelFileError:
    files = ', '.join(f'SMPLX_{g.upper()}.{ext}' for g in GENDERS)
    keys = ', '.join(f'{k} {_fmt(v)}' for k, v in {**REQUIRED_KEYS, **CONTOUR_KEYS}.items())
    searched = ', '.join(str(p) for p in searched)
    return BodyModelFileError(
        f'SMPL-X body model: {problem}\n'
        f'  searched: {searched}\n'
        f'  model_path={str(model_path)!r} must be a directory holding {files} (directly or in a smplx/ '
        f'subfolder) or one such file.\n'
        f'  required keys (dynamic_* only with use_face_contour): {keys}\n'
        f'  The SMPL-X files are licensed and not shipped: register at https://smpl-x.is.tue.mpg.de, download '
        f'"SMPL-X v1.1 NPZ+PKL" and point model_path at the folder.\n'
        f'  For tests and demos, posedreamer_mm.body.standin.write_standin_smplx(dir) writes an open stand-in '
        f'(a procedural mannequin, not SMPL-X) in the same format.')


def gender_from_file_name(path: str | os.PathLike) -> str | None:
    """The gender an SMPL-X file name states (``SMPLX_FEMALE.npz`` -> ``'female'``), or ``None``."""
    match = re.fullmatch(r'smplx_(neutral|male|female)(\.[a-z]+)?', pathlib.Path(path).name, re.IGNORECASE)
    return None if match is None else match.group(1).lower()


def resolve_model_file(model_path: str | os.PathLike, gender: str = 'neutral', ext: str = 'npz') -> pathlib.Path:
    """The SMPL-X file to load: ``model_path`` itself if a file, else ``SMPLX_<GENDER>.<ext>`` in it or in
    its ``smplx/`` subfolder (the layout ``smplx.create`` expects). Raises :class:`BodyModelFileError`."""
    if gender not in GENDERS:
        raise ValueError(f'gender must be one of {GENDERS}, got {gender!r}')
    path = pathlib.Path(model_path).expanduser()
    if path.is_file():
        return path
    name = f'SMPLX_{gender.upper()}.{ext}'
    candidates = [path / name, path / 'smplx' / name]
    for cand in candidates:
        if cand.is_file():
            return cand
    problem = 'no such file or directory' if not path.exists() else f'no {name} found'
    raise _explain(problem, candidates if path.is_dir() else [path], model_path, ext)


def _npz_shapes(path: pathlib.Path) -> dict[str, tuple]:
    """Array shapes in an ``.npz`` read from the member headers only (fast, no decompression of the data)."""
    shapes = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith('.npy'):
                continue
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                    else np.lib.format.read_array_header_2_0
                shapes[info.filename[:-4]] = read(fh)[0]
    return shapes


def _pkl_shapes(path: pathlib.Path) -> dict[str, tuple]:
    with open(path, 'rb') as fh:
        try:
            data = pickle.load(fh, encoding='latin1')
        except ModuleNotFoundError as err:
            if 'chumpy' in str(err):
                raise ModuleNotFoundError(
                    'this .pkl was pickled with chumpy arrays (the official SMPL-X pkls are): pip install '
                    'chumpy-fixed, or use the SMPLX_*.npz files of the same download') from err
            raise
    return {k: tuple(np.shape(v)) for k, v in data.items()}


def check_model_file(path: str | os.PathLike, use_face_contour: bool = False, model_path=None) -> dict[str, tuple]:
    """Validates an SMPL-X ``.npz``/``.pkl`` (keys and shapes) before ``smplx`` reads it.

    Returns:
        ``{key: shape}`` of the file's arrays.

    Raises:
        BodyModelFileError: Unreadable or truncated file, a missing key, or a wrong shape.
    """
    path = pathlib.Path(path)
    ext = 'pkl' if path.suffix == '.pkl' else 'npz'
    try:
        shapes = _pkl_shapes(path) if ext == 'pkl' else _npz_shapes(path)
    except ModuleNotFoundError as err:
        raise _explain(f'cannot unpickle {path}: {err}', [path], model_path or path, ext) from err
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise _explain(f'{path} is not a readable .{ext} file (truncated or corrupt?): {err!r}', [path],
                       model_path or path, ext) from err
    expected = {**REQUIRED_KEYS, **(CONTOUR_KEYS if use_face_contour else {})}
    missing = [k for k in expected if k not in shapes]
    if missing:
        raise _explain(f'{path} lacks the key(s) {missing}', [path], model_path or path, ext)
    sizes: dict[str, int] = {}
    for key, want in expected.items():
        got = shapes[key]
        ok = len(got) == len(want)
        for g, w in zip(got, want):
            if isinstance(w, str):
                ok &= sizes.setdefault(w, g) == g
            else:
                ok &= g == w
        if not ok:
            raise _explain(f'{path}: {key} has shape {tuple(got)}, expected {_fmt(want)} (V={sizes.get("V", "?")})',
                           [path], model_path or path, ext)
    return shapes


class BodyOutput(NamedTuple):
    """Posed body. ``vertices (B, V, 3)`` and ``joints (B, J, 3)`` (J = 127, or 144 with the face contour),
    metres, in the frame of ``global_orient``/``transl`` (the camera frame for this project's samples)."""
    vertices: Tensor
    joints: Tensor


#: Whether the flat_hand_mean=False warning was already logged in this process (it is logged once).
_warned_hand_mean = False


@BODY_MODELS.register_module()
class SMPLXBodyModel(nn.Module):
    """SMPL-X (https://smpl-x.github.io) forward with every parameter optional.

    Args:
        model_path: Directory with ``SMPLX_{NEUTRAL,MALE,FEMALE}.<ext>`` (or a ``smplx/`` subfolder of it), or
            the file itself. The stand-in from :func:`~posedreamer_mm.body.standin.write_standin_smplx` works.
            ``None``: the open stand-in (:func:`~posedreamer_mm.body.standin.standin_model_dir`, written on first
            use, logged as a WARNING); a path that does not exist raises :class:`BodyModelFileError`.
        gender: ``'neutral'``, ``'male'`` or ``'female'``. ``None`` (default): the gender a file ``model_path``
            names (``SMPLX_MALE.npz`` -> ``'male'``), else ``'neutral'``. A gender that contradicts the file
            name raises ``ValueError``.
        num_betas: Shape coefficients used (10 in most datasets; BEDLAM 11, AMASS 16). Records with fewer betas
            are zero-padded (exact); records with more raise, naming the count to build with. Must not exceed
            the file's shape components (``ValueError``; ``smplx`` itself would silently cap it).
        num_expression_coeffs: Expression coefficients used (same rules as ``num_betas``).
        use_pca: Hand poses as ``num_pca_comps`` PCA coefficients instead of 45 axis-angle values.
        num_pca_comps: PCA components per hand when ``use_pca``.
        flat_hand_mean: Zero hand pose = flat hand (True, the convention of every record from
            :mod:`posedreamer_mm.body.sources`: BEDLAM and AMASS store hands relative to the flat hand) instead
            of the mean curl. False logs a WARNING once per process, since records would then be misread.
        use_face_contour: Also output the 17 jaw-contour landmarks (144 joints).
        ext: ``'npz'`` or ``'pkl'`` (pkl needs ``chumpy-fixed``).
    """
    PARAM_DIMS = dict(global_orient=3, body_pose=63, jaw_pose=3, leye_pose=3, reye_pose=3, transl=3)

    def __init__(self, model_path: str | os.PathLike | None, gender: str | None = None, num_betas: int = 10,
                 num_expression_coeffs: int = 10, use_pca: bool = False, num_pca_comps: int = 6,
                 flat_hand_mean: bool = True, use_face_contour: bool = False, ext: str = 'npz'):
        super().__init__()
        import smplx
        if model_path is None:  # the user asked for no licensed model (a config's body_model_dir = None)
            from .standin import standin_model_dir
            model_path = standin_model_dir(gender or 'neutral')
        named = gender_from_file_name(model_path) if pathlib.Path(model_path).expanduser().is_file() else None
        if gender is not None and named is not None and gender != named:
            raise ValueError(f'gender={gender!r} but model_path {str(model_path)!r} is the {named} model; pass '
                             f'the directory (the file is then SMPLX_{gender.upper()}.{ext}) or gender={named!r}')
        gender = gender or named or 'neutral'
        path = resolve_model_file(model_path, gender, ext)
        shapes = check_model_file(path, use_face_contour, model_path)
        if not flat_hand_mean:
            _warn_hand_mean_once()
        try:
            self.smplx = smplx.SMPLX(
                str(path), gender=gender, num_betas=num_betas, num_expression_coeffs=num_expression_coeffs,
                use_pca=use_pca, num_pca_comps=num_pca_comps, flat_hand_mean=flat_hand_mean,
                use_face_contour=use_face_contour, ext=path.suffix[1:], batch_size=1)
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, pickle.UnpicklingError) as err:
            raise _explain(f'smplx could not read {path}: {err!r}', [path], model_path, ext) from err
        components = shapes['shapedirs'][-1] if len(shapes.get('shapedirs', ())) == 3 else '?'
        for what, asked, got in (('num_betas', num_betas, self.smplx.num_betas),
                                 ('num_expression_coeffs', num_expression_coeffs, self.smplx.num_expression_coeffs)):
            if got != asked:
                raise ValueError(f'{what}={asked} but {path} supports only {got} (its shapedirs hold {components} '
                                 f'shape+expression components; smplx would silently use {got}): build the body '
                                 f'model with {what}={got} or use an SMPL-X v1.1 file (300 + 100 components)')
        self.model_file = path
        self.gender = gender
        self.num_betas = self.smplx.num_betas
        self.num_expression_coeffs = self.smplx.num_expression_coeffs
        self.flat_hand_mean = flat_hand_mean
        self.hand_dim = num_pca_comps if use_pca else 45
        # The stand-in says what it is; make that visible wherever the model is printed or logged.
        self.is_standin = 'standin_note' in _npz_keys(path)

    @property
    def faces(self) -> np.ndarray:
        """``(F, 3)`` int64 triangle indices, outward (counter-clockwise) winding."""
        return self.smplx.faces_tensor.cpu().numpy().astype(np.int64)

    @property
    def faces_tensor(self) -> Tensor:
        return self.smplx.faces_tensor

    @property
    def parents(self) -> Tensor:
        """``(55,)`` kinematic-tree parents (-1 for the pelvis)."""
        return self.smplx.parents

    @property
    def num_verts(self) -> int:
        return int(self.smplx.v_template.shape[0])

    def forward(self, **params) -> BodyOutput:
        """Poses the body; any parameter left out is zero with the batch size of the others.

        Args:
            **params: One body's ``(D,)`` vectors are read as a batch of one (never as ``D`` bodies).
                Any of ``betas (B, <=num_betas)`` (zero-padded; more raise), ``global_orient (B, 3)``, ``body_pose
                (B, 63) or (B, 21, 3)``, ``left_hand_pose``/``right_hand_pose (B, 45)`` (or ``(B, 15, 3)``;
                ``(B, num_pca_comps)`` with PCA), ``jaw_pose``/``leye_pose``/``reye_pose (B, 3)``,
                ``expression (B, <=num_expression_coeffs)``, ``transl (B, 3)`` metres. Axis-angle radians;
                tensors or arrays.

        Returns:
            :class:`BodyOutput`.
        """
        dims = {**self.PARAM_DIMS, 'betas': self.num_betas, 'expression': self.num_expression_coeffs,
                'left_hand_pose': self.hand_dim, 'right_hand_pose': self.hand_dim}
        unknown = set(params) - set(dims)
        if unknown:
            raise TypeError(f'unknown SMPL-X parameter(s) {sorted(unknown)}; expected some of {sorted(dims)}')
        ref = self.smplx.v_template
        given = {k: torch.as_tensor(v, dtype=ref.dtype, device=ref.device) for k, v in params.items() if v is not None}
        for key, v in given.items():
            if v.ndim == 0:
                raise ValueError(f'{key} is a scalar; pass (B, D) values (or (D,) for one body)')
            if v.ndim == 1:  # one body: (D,) is (1, D), never D bodies with one value each
                given[key] = v[None]
            if not torch.isfinite(given[key]).all():
                raise ValueError(f'{key} contains NaN or inf')
        batch = {v.shape[0] for v in given.values()}
        if len(batch) > 1:
            raise ValueError(f'parameters disagree on the batch size: { {k: v.shape[0] for k, v in given.items()} }')
        b = batch.pop() if batch else 1
        args = {}
        for key, dim in dims.items():
            v = given.get(key)
            if v is None:
                v = ref.new_zeros(b, dim)
            v = v.reshape(b, -1)
            if key in ('betas', 'expression') and v.shape[1] < dim:  # exact: missing components are zero
                v = torch.cat([v, v.new_zeros(b, dim - v.shape[1])], 1)
            if key in ('betas', 'expression') and v.shape[1] > dim:
                what = 'num_betas' if key == 'betas' else 'num_expression_coeffs'
                raise ValueError(f'{key} has {v.shape[1]} components per sample but this body model was built with '
                                 f'{what}={dim}; dropping components would change the body: build the body model '
                                 f'with {what}={v.shape[1]}')
            if v.shape[1] != dim:
                raise ValueError(f'{key} has {v.shape[1]} values per sample, expected {dim}')
            args[key] = v
        out = self.smplx(**args, return_verts=True)
        return BodyOutput(out.vertices, out.joints)

    def extra_repr(self) -> str:
        kind = 'open stand-in, NOT SMPL-X' if self.is_standin else 'SMPL-X'
        return (f'file={self.model_file} ({kind}), gender={self.gender}, betas={self.num_betas}, '
                f'flat_hand_mean={self.flat_hand_mean}')


def _warn_hand_mean_once() -> None:
    global _warned_hand_mean
    if _warned_hand_mean:
        return
    _warned_hand_mean = True
    print_log('SMPLXBodyModel built with flat_hand_mean=False: the records of posedreamer_mm.body.sources '
              '(BEDLAM, AMASS, PoseDreamer labels) store hand poses relative to the flat hand '
              '(flat_hand_mean=True); their hands will be posed wrongly', logger='current', level=logging.WARNING)


def _npz_keys(path: pathlib.Path) -> set[str]:
    if path.suffix != '.npz':
        return set()
    with zipfile.ZipFile(path) as zf:
        return {n[:-4] for n in zf.namelist()}


def canonical_body_pose(kind: str = 'A', arm_angle_deg: float = 55.0, leg_angle_deg: float = 6.0) -> Tensor:
    """A reference ``(1, 63)`` body pose.

    Args:
        kind: ``'T'`` (all zeros: SMPL-X's rest T-pose) or ``'A'`` (arms lowered, legs slightly apart, so left
            and right feet do not touch and stay distinguishable in PNCC renders).
        arm_angle_deg: How far each arm is lowered from horizontal (``'A'`` only).
        leg_angle_deg: How far each leg is spread from vertical (``'A'`` only).

    Returns:
        ``(1, 63)`` float32 axis-angle (joints 1..21 of the SMPL-X skeleton).
    """
    pose = torch.zeros(21, 3)
    if kind.upper() == 'A':
        arm, leg = np.deg2rad(arm_angle_deg), np.deg2rad(leg_angle_deg)
        # Canonical frame: left arm along +x, lowering it turns +x towards -y, i.e. negative about z.
        pose[16 - 1, 2], pose[17 - 1, 2] = -arm, arm  # shoulders
        pose[1 - 1, 2], pose[2 - 1, 2] = leg, -leg  # hips: feet outwards
    elif kind.upper() != 'T':
        raise ValueError(f"kind must be 'A' or 'T', got {kind!r}")
    return pose.reshape(1, 63)


__all__ = ['SMPLXBodyModel', 'BodyOutput', 'BodyModelFileError', 'resolve_model_file', 'check_model_file',
           'gender_from_file_name', 'canonical_body_pose', 'REQUIRED_KEYS', 'CONTOUR_KEYS']
