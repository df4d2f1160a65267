"""SMPL-X with one model per gender: ``BodySample.gender`` selects the model a body is posed with.

SMPL-X ships ``SMPLX_NEUTRAL``, ``SMPLX_MALE`` and ``SMPLX_FEMALE`` (same mesh topology, different templates
and shape spaces); betas fitted to a gendered model (AMASS SMPL-X G, BEDLAM's subjects) describe another body
under the neutral model. The stand-in writes all three (``standin.ensure_standin_smplx``).
"""
from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from posedreamer_mm.registry import BODY_MODELS

from .body_model import GENDERS, BodyOutput, SMPLXBodyModel, gender_from_file_name
from .flip import PelvisRegressor
from .standin import standin_dir


def build_gendered_body_models(model_path: str | os.PathLike, genders: Iterable[str],
                               **kwargs) -> dict[str, SMPLXBodyModel]:
    """One :class:`SMPLXBodyModel` per gender in ``genders``, all from the directory ``model_path``.

    Args:
        model_path: Directory holding ``SMPLX_<GENDER>.<ext>`` files (or a ``smplx/`` subfolder of it).
        genders: Genders needed (duplicates ignored), e.g. ``{s.gender for s in samples}``.
        **kwargs: Other :class:`SMPLXBodyModel` arguments (``num_betas``, ``ext``, ...), the same for all.

    Returns:
        ``{gender: model}``.

    Raises:
        BodyModelFileError: a needed gender's file is missing or unreadable (the message names it, e.g.
            ``SMPLX_MALE.npz``, and where it was searched). ``posedreamer_mm.body.standin.ensure_standin_smplx``
            writes all three stand-in genders.
        ValueError: an unknown gender, or gendered models with different topologies.
    """
    genders = list(dict.fromkeys(str(g) for g in genders))
    bad = [g for g in genders if g not in GENDERS]
    if bad:
        raise ValueError(f'unknown gender(s) {bad}; expected some of {GENDERS}')
    models = {g: SMPLXBodyModel(model_path, gender=g, **kwargs) for g in genders}
    if models:
        first_gender, first = next(iter(models.items()))
        for g, m in models.items():
            if m.num_verts != first.num_verts or not torch.equal(m.faces_tensor, first.faces_tensor):
                raise ValueError(f'{m.model_file} ({g}) and {first.model_file} ({first_gender}) have different '
                                 'meshes; all genders must share one topology')
    return models


@BODY_MODELS.register_module()
class GenderedSMPLXBodyModel(nn.Module):
    """SMPL-X with the model of each sample's gender: one :class:`SMPLXBodyModel` per gender, built on first use.

    ``BodySample.gender`` selects the model (``neutral``, ``male``, ``female``); a batch of mixed genders is
    split, run per gender and put back in order. All genders share the mesh topology, so :attr:`faces` and PNCC
    colours are common.

    This is the one place the project keeps "a model per gender": the generator, the HMR flip/roll pivot
    (:class:`~posedreamer_mm.datasets.transforms.hmr_geometric.GenderedPelvis`) and the HMR metric use it, the
    CPU users through the per-process :func:`shared_body_models`.

    Args:
        model_path: Directory with ``SMPLX_<GENDER>.<ext>``; ``None``: the open stand-in, each gender written when
            first needed (:class:`SMPLXBodyModel`); one file: that file's gender only (from its name, else
            ``default_gender``), and a body of another gender is refused naming the file.
        genders: Genders to build up front (their files are checked now); others are built when first needed
            and raise :class:`BodyModelFileError` naming the missing file then. ``()`` builds nothing now; default
            ``(default_gender,)``.
        default_gender: The model of :attr:`default` and :attr:`faces` (e.g. the one whose canonical body gives
            the PNCC colours); built when first used. Default ``'neutral'`` (a file: its own gender).
        **kwargs: :class:`SMPLXBodyModel` arguments shared by every gender.
    """

    def __init__(self, model_path: str | os.PathLike | None, genders: Iterable[str] | None = None,
                 default_gender: str | None = None, **kwargs) -> None:
        super().__init__()
        #: The single file ``model_path`` names, or None (a directory or the stand-in).
        self.model_file = None
        if model_path is not None and pathlib.Path(model_path).expanduser().is_file():
            self.model_file = str(model_path)
            default_gender = gender_from_file_name(model_path) or default_gender
        default_gender = default_gender or 'neutral'
        if default_gender not in GENDERS:
            raise ValueError(f'default_gender must be one of {GENDERS}, got {default_gender!r}')
        self.model_path, self.kwargs, self.default_gender = model_path, dict(kwargs), str(default_gender)
        self._pelvis: dict[str, PelvisRegressor] = {}
        self.models = nn.ModuleDict()
        for gender in dict.fromkeys((self.default_gender,) if genders is None else genders):
            self.model(gender)

    @classmethod
    def from_config(cls, cfg: dict, genders: Iterable[str] = ()) -> GenderedSMPLXBodyModel:
        """The gendered set a ``BODY_MODELS`` config stands for.

        A ``GenderedSMPLXBodyModel`` config is built as it is. A single-gender :class:`SMPLXBodyModel` config
        (``dict(type='SMPLXBodyModel', model_path=DIR, gender='neutral', num_betas=10)``, what the generation
        configs share with the render backend) gives every gender from the same directory and arguments; its
        ``gender`` becomes :attr:`default_gender`.

        Args:
            cfg: The config (``type`` a registered name or a class).
            genders: For a single-gender config, the genders to build up front (``()``: each on first use).

        Raises:
            TypeError: ``type`` is not an :class:`SMPLXBodyModel` or :class:`GenderedSMPLXBodyModel` (other body
                models have no per-gender files).
        """
        cfg = dict(cfg)
        kind = cfg.pop('type', SMPLXBodyModel)
        kind = BODY_MODELS.get(kind) if isinstance(kind, str) else kind
        if isinstance(kind, type) and issubclass(kind, cls):
            return kind(**cfg)
        if not (isinstance(kind, type) and issubclass(kind, SMPLXBodyModel)):
            raise TypeError(f'a gendered body model set needs an SMPLXBodyModel or GenderedSMPLXBodyModel config, '
                            f'got type={kind!r}')
        return cls(genders=genders, default_gender=cfg.pop('gender', None), **cfg)

    def model(self, gender: str) -> SMPLXBodyModel:
        """The model of ``gender`` (built on first use, on the device of the existing ones).

        Raises:
            ValueError: an unknown gender, or another gender than a single ``model_path`` file's (naming it).
            BodyModelFileError: the gender's file is missing or unreadable (naming it).
        """
        gender = str(gender)
        if gender not in self.models:
            if gender not in GENDERS:
                raise ValueError(f'unknown gender {gender!r}; expected one of {GENDERS}')
            if self.model_file is not None and gender != self.default_gender:
                raise ValueError(f'a {gender} body, but model_path is the file {self.model_file} (the '
                                 f'{self.default_gender} model); give the directory holding SMPLX_{gender.upper()}')
            model = build_gendered_body_models(self.model_path, [gender], **self.kwargs)[gender]
            if len(self.models):
                ref = next(iter(self.models.values()))
                if not torch.equal(model.faces_tensor.cpu(), ref.faces_tensor.cpu()):
                    raise ValueError(f'{model.model_file} ({gender}) and {ref.model_file} have different meshes; all '
                                     'genders must share one topology')
                model.to(ref.smplx.v_template.device)
            self.models[gender] = model
        return self.models[gender]

    @property
    def default(self) -> SMPLXBodyModel:
        """The model of :attr:`default_gender`."""
        return self.model(self.default_gender)

    @property
    def faces(self) -> np.ndarray:
        """``(F, 3)`` int64, shared by every gender."""
        return self.model(next(iter(self.models), self.default_gender)).faces

    def forward(self, genders: Sequence[str], **params) -> BodyOutput:
        """Poses a batch whose ``genders[i]`` names body ``i``'s model.

        Args:
            genders: ``B`` genders.
            **params: As :meth:`SMPLXBodyModel.forward`, each ``(B, D)``.

        Returns:
            :class:`BodyOutput` in the input order.
        """
        genders = [str(g) for g in genders]
        b = len(genders)
        tensors = {k: torch.as_tensor(v) for k, v in params.items() if v is not None}
        for k, v in tensors.items():
            if v.ndim == 0 or v.shape[0] != b:
                raise ValueError(f'{k} has shape {tuple(v.shape)}, expected {b} rows (one per gender)')
        verts = joints = None
        for gender in dict.fromkeys((self.default_gender,) if genders is None else genders):
            idx = torch.tensor([i for i, g in enumerate(genders) if g == gender])
            out = self.model(gender)(**{k: v[idx] for k, v in tensors.items()})
            if verts is None:
                verts = out.vertices.new_empty((b, *out.vertices.shape[1:]))
                joints = out.joints.new_empty((b, *out.joints.shape[1:]))
            verts[idx.to(verts.device)] = out.vertices
            joints[idx.to(joints.device)] = out.joints
        if verts is None:
            raise ValueError('GenderedSMPLXBodyModel.forward needs at least one body')
        return BodyOutput(verts, joints)

    def forward_samples(self, samples: Sequence[Any]) -> BodyOutput:
        """Poses ``BodySample``s, each with the model of its ``gender`` (``BodySample.stack`` batching rules)."""
        from .sample import BodySample
        return self(genders=[s.gender for s in samples], **BodySample.stack(list(samples)))

    def pelvis_regressor(self, gender: str) -> PelvisRegressor:
        """The exact rest pelvis ``J0(betas)`` map of ``gender``'s model (built with the model, then a dict look-up:
        a fork worker that only looks up a gender built before the fork runs no torch). Raises as :meth:`model`."""
        gender = str(gender)
        if gender not in self._pelvis:
            self._pelvis[gender] = PelvisRegressor(self.model(gender))
        return self._pelvis[gender]


_SHARED: dict[str, GenderedSMPLXBodyModel] = {}


def _config_key(cfg: dict) -> str:
    cfg = dict(cfg)
    kind = cfg.pop('type', SMPLXBodyModel)
    name = kind.rsplit('.', 1)[-1] if isinstance(kind, str) else getattr(kind, '__name__', repr(kind))
    if cfg.get('model_path') is None:  # the stand-in: where it lives ($PDM_STANDIN_DIR) tells two apart
        cfg['model_path'] = ('stand-in', standin_dir())
    items = sorted((k, str(v) if isinstance(v, os.PathLike) else v) for k, v in cfg.items())
    return repr((name, items))


def shared_body_models(cfg: dict) -> GenderedSMPLXBodyModel:
    """The per-process gendered model set of a ``BODY_MODELS`` config: one per equal config, built once.

    For CPU users that only read the models (HMR transforms, the HMR metric): every user of the same config in a
    process gets the same :class:`GenderedSMPLXBodyModel`, so each gender's model is read once per process (fork
    workers inherit the parent's). Do not move it to another device or train it; a trainable or GPU model builds
    its own (``BODY_MODELS.build``).

    Args:
        cfg: An ``SMPLXBodyModel`` or ``GenderedSMPLXBodyModel`` config (:meth:`GenderedSMPLXBodyModel.from_config`;
            a single-gender config's ``gender`` is the set's default). Nothing is built until a gender is asked
            for.

    Example:
        ``shared_body_models(dict(type='SMPLXBodyModel', model_path=DIR)).model('female')(betas=...)``
    """
    key = _config_key(cfg)
    if key not in _SHARED:
        _SHARED[key] = GenderedSMPLXBodyModel.from_config(cfg).eval()
    return _SHARED[key]


__all__ = ['GenderedSMPLXBodyModel', 'build_gendered_body_models', 'shared_body_models']
