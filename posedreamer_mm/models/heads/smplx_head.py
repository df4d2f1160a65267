"""SMPL-X regression head: one query token cross-attending the ViT's patch tokens (HMR 2.0 style), CLIFF-conditioned.

Why a transformer decoder rather than HMR's iterative MLP regressor: the MLP regressor needs the backbone's
features pooled to one vector, which throws away the spatial layout a ViT keeps in its patch tokens; a query
that cross-attends all tokens reads each body part where it is. HMR 2.0 (Goel et al., ICCV 2023,
https://arxiv.org/abs/2305.20091) showed this head on a ViTPose backbone beats the MLP regressor, and
SMPLest-X / CameraHMR keep it at ViT-L/H scale. Iterative refinement stays available (``num_iters``): each
iteration re-embeds the current estimate into the query, as HMR's IEF does.

CLIFF (https://arxiv.org/abs/2208.00571): the query is built from the crop's position and size in the full
image relative to its focal length (:func:`~posedreamer_mm.models.utils.cliff_bbox_info`), so the head can tell
a person at the image border (seen obliquely) from one at the centre, and its weak-perspective camera is turned
into a full-image translation by the estimator.

Positions of the tokens (``pos_embed_size``): one query cross-attending a set of tokens is blind to where each
token lies unless the tokens carry it -- the head itself is invariant to any permutation of its memory. A
pretrained ViT's tokens carry their position strongly; a backbone trained from scratch (or a CNN's feature map)
barely, so its head first learns only what pooled features tell (heading, shape, the mean pose). The optional
learned position embedding, added to the projected tokens as DETR adds positions to its keys, makes the layout
visible from the first iteration: measured on the learning check (docs/hmr.md), a from-scratch tiny ViT then
learns limb poses beyond the dataset's mean pose, which it did not without it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from posedreamer_mm.body.camera import upright_rotation
from posedreamer_mm.body.rotations import matrix_to_rotation_6d, rotation_6d_to_matrix
from posedreamer_mm.registry import MODELS


@MODELS.register_module()
class SMPLXTransformerHead(BaseModule):
    """Regresses SMPL-X rotations (6D), shape and a weak-perspective crop camera from ViT patch tokens.

    Args:
        in_channels: Channels of the backbone feature map.
        embed_dims: Width of the decoder (HMR 2.0: 1024).
        num_layers: Decoder layers (HMR 2.0: 6).
        num_heads: Attention heads.
        feedforward_channels: Hidden width of each layer's MLP.
        dropout: Dropout in the decoder.
        num_betas: Shape coefficients predicted.
        with_hands: Also predict 15 rotations per hand (else hands stay flat).
        with_face: Also predict the jaw rotation and ``num_expression`` expression coefficients.
        num_expression: Expression coefficients when ``with_face``.
        num_iters: Refinement iterations (1 = a single pass, as HMR 2.0).
        pos_embed_size: ``(h, w)`` of the backbone's feature map, to add a learned position embedding of that
            grid to the projected tokens (bilinearly resized for another grid); ``None`` = none (HMR 2.0).
            Initialised at std 0.5, about the scale of the projected tokens, so positions are told apart from the
            first iteration.
        init_cam: Initial ``(s, tx, ty)``: ``s = 0.9`` makes a 1.7 m person fill about 3/4 of the crop.
        init_cfg: mmengine init config.

    The initial estimate is the rest pose standing upright and facing the camera (``global_orient = Rx(pi)``,
    docs/conventions.md), mean shape, ``init_cam``; the output layers start near zero (xavier, gain 0.01) so
    training starts from it.
    """

    def __init__(self, in_channels: int, embed_dims: int = 1024, num_layers: int = 6, num_heads: int = 8,
                 feedforward_channels: int = 1024, dropout: float = 0.0, num_betas: int = 10,
                 with_hands: bool = False, with_face: bool = False, num_expression: int = 10, num_iters: int = 1,
                 pos_embed_size: tuple[int, int] | None = None,
                 init_cam: tuple[float, float, float] = (0.9, 0.0, 0.0), init_cfg: dict | None = None):
        super().__init__(init_cfg)
        if num_iters < 1:
            raise ValueError(f'num_iters must be >= 1, got {num_iters}')
        self.with_hands, self.with_face = with_hands, with_face
        self.num_betas, self.num_expression = num_betas, num_expression if with_face else 0
        self.num_iters = num_iters
        #: Rotations predicted, in output order: root, 21 body joints, [15 left + 15 right hand], [jaw].
        self.parts = dict(global_orient=1, body_pose=21)
        if with_hands:
            self.parts.update(left_hand_pose=15, right_hand_pose=15)
        if with_face:
            self.parts['jaw_pose'] = 1
        self.num_rot = sum(self.parts.values())

        init_rot = torch.eye(3).repeat(self.num_rot, 1, 1)
        init_rot[0] = upright_rotation(0.0).float()
        self.register_buffer('init_pose', matrix_to_rotation_6d(init_rot).reshape(1, -1), persistent=False)
        self.register_buffer('init_shape', torch.zeros(1, num_betas + self.num_expression), persistent=False)
        self.register_buffer('init_cam', torch.tensor([init_cam], dtype=torch.float32), persistent=False)

        state_dims = 3 + self.num_rot * 6 + num_betas + self.num_expression + 3
        self.query_embed = nn.Linear(state_dims, embed_dims)
        self.memory_proj = nn.Linear(in_channels, embed_dims)
        if pos_embed_size is not None:
            h, w = (int(v) for v in pos_embed_size)
            if h < 1 or w < 1:
                raise ValueError(f'pos_embed_size must be a positive (h, w), got {pos_embed_size}')
            self.pos_embed_size = (h, w)
            self.memory_pos = nn.Parameter(torch.empty(1, embed_dims, h, w).normal_(std=0.5))
        else:
            self.pos_embed_size, self.memory_pos = None, None
        layer = nn.TransformerDecoderLayer(embed_dims, num_heads, feedforward_channels, dropout, activation='gelu',
                                           batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, num_layers, norm=nn.LayerNorm(embed_dims))
        self.dec_pose = nn.Linear(embed_dims, self.num_rot * 6)
        self.dec_shape = nn.Linear(embed_dims, num_betas + self.num_expression)
        self.dec_cam = nn.Linear(embed_dims, 3)

    def init_weights(self) -> None:
        super().init_weights()
        for layer in (self.dec_pose, self.dec_shape, self.dec_cam):
            nn.init.xavier_uniform_(layer.weight, gain=0.01)
            nn.init.zeros_(layer.bias)
        if self.memory_pos is not None:
            nn.init.normal_(self.memory_pos, std=0.5)

    def _memory(self, feats: Tensor) -> Tensor:
        """``(B, C, h, w)`` map or ``(B, N, C)`` tokens -> ``(B, N, embed_dims)`` projected tokens (+ positions)."""
        grid = tuple(feats.shape[-2:]) if feats.dim() == 4 else None
        if feats.dim() == 4:
            feats = feats.flatten(2).transpose(1, 2)
        memory = self.memory_proj(feats)
        if self.memory_pos is None:
            return memory
        if grid is None:  # tokens: only the embedding's own grid is known
            if feats.shape[1] != self.pos_embed_size[0] * self.pos_embed_size[1]:
                raise ValueError(f'{feats.shape[1]} tokens do not fill the position grid {self.pos_embed_size}; '
                                 'pass the (B, C, h, w) feature map')
            grid = self.pos_embed_size
        pos = self.memory_pos
        if grid != self.pos_embed_size:
            pos = F.interpolate(pos, size=grid, mode='bilinear', align_corners=False)
        return memory + pos.flatten(2).transpose(1, 2).to(memory.dtype)

    def forward(self, feats: Tensor, bbox_info: Tensor) -> dict[str, Tensor]:
        """Predicts the body from the backbone's feature map.

        Args:
            feats: ``(B, C, h, w)`` feature map (the ViT's patch tokens) or ``(B, N, C)`` tokens.
            bbox_info: ``(B, 3)`` CLIFF conditioning (:func:`~posedreamer_mm.models.utils.cliff_bbox_info`).

        Returns:
            Local rotation matrices per part (``global_orient (B, 1, 3, 3)``, ``body_pose (B, 21, 3, 3)``, and
            with hands/face ``left_hand_pose``/``right_hand_pose (B, 15, 3, 3)``, ``jaw_pose (B, 1, 3, 3)``),
            ``betas (B, num_betas)``, ``expression (B, num_expression)`` with face, ``pred_cam (B, 3)`` the crop's
            weak-perspective ``(s, tx, ty)``, and ``pose_6d (B, R, 6)`` (the raw regression).
        """
        memory = self._memory(feats)
        b = feats.shape[0]
        pose = self.init_pose.expand(b, -1)
        shape = self.init_shape.expand(b, -1)
        cam = self.init_cam.expand(b, -1)
        for _ in range(self.num_iters):
            query = self.query_embed(torch.cat([bbox_info, pose, shape, cam], -1))[:, None]
            token = self.decoder(query, memory)[:, 0]
            pose = pose + self.dec_pose(token)
            shape = shape + self.dec_shape(token)
            cam = cam + self.dec_cam(token)
        pose_6d = pose.reshape(b, self.num_rot, 6)
        rotmats = rotation_6d_to_matrix(pose_6d)
        out: dict[str, Tensor] = {}
        start = 0
        for name, count in self.parts.items():
            out[name] = rotmats[:, start:start + count]
            start += count
        out['betas'] = shape[:, :self.num_betas]
        if self.with_face:
            out['expression'] = shape[:, self.num_betas:]
        out.update(pred_cam=cam, pose_6d=pose_6d)
        return out


__all__ = ['SMPLXTransformerHead']
