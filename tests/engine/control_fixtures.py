"""Fixtures of the control-validation tests: a labelled dataset with stored controls, a recording scorer, and the
project's ControlNetTrainer on the tiny SD1.5 folder of ``posedreamer_mm/testing/diffusion.py``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from posedreamer_mm.body.sample import BodySample
from posedreamer_mm.registry import SCORERS
from posedreamer_mm.scoring.base import BasePoseScorer, PoseDetections

#: Side of the tiny dataset's images and controls (the tiny SD1.5 VAE and ControlNet downsample 2x).
SIDE = 32


def label_keypoints(i: int) -> np.ndarray:
    """``(17, 3)`` a standing-person-like COCO-17 label in a SIDE x SIDE image, shifted per row."""
    ys = np.array([6, 5, 5, 6, 6, 10, 10, 14, 14, 18, 18, 18, 18, 23, 23, 28, 28], np.float32)
    xs = np.array([16, 15, 17, 14, 18, 12, 20, 10, 22, 9, 23, 13, 19, 13, 19, 13, 19], np.float32) + (i % 3) - 1
    vis = np.full(17, 2.0, np.float32)
    vis[3] = 1.0
    return np.stack([xs, ys, vis], 1)


def write_control_dataset(root: str | Path, num: int = 6, side: int = SIDE) -> Path:
    """A generated dataset (sharded writer format) with labels, prompts, seeds and a stored ``pncc`` control."""
    from posedreamer_mm.generation.writer import ShardedDatasetWriter
    root = Path(root)
    rng = np.random.default_rng(0)
    writer = ShardedDatasetWriter(shard_size=4, save_controls=True, image_format='png')
    writer.prepare_output(str(root), dict(fingerprint='control-val-fixture', config={}, num_samples=num))
    for shard in range(writer.num_shards(num)):
        builder = writer.open_shard(str(root), shard, num)
        for b in builder.indices:
            kp = label_keypoints(b) * side / SIDE
            sample = BodySample(id=f'val_{b:03d}', focal=[40.0, 40.0], princpt=[side / 2, side / 2],
                                img_size=[side, side], keypoints_coco17=kp)
            control = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            builder.add(b, dict(sample=sample, img=rng.integers(0, 256, (side, side, 3), dtype=np.uint8),
                                controls=dict(pncc=control), seed=1000 + b, prompt=f'a person {b}'))
        builder.commit()
    writer.finalize(str(root), num)
    return root


@SCORERS.register_module(name='TestOnlyRecordingScorer')
class RecordingScorer(BasePoseScorer):
    """Test scorer: one person whose keypoints follow the image's content; nobody in every ``miss_every``-th image.

    Keypoints are the fixture label of row 0 shifted by ``(mean red - 128) / 32`` pixels; keypoint ``k`` scores
    ``(k + 1) / 17`` (so some fall under a 0.3 threshold). It draws from the global torch and numpy generators
    on every image, as a detector with random test-time augmentation would, and records every detection it
    returned (class-level list, so a config-built instance can be inspected).
    """

    name = 'test_recording'
    calls: list[PoseDetections] = []

    def __init__(self, miss_every: int = 3) -> None:
        self.miss_every = int(miss_every)

    def predict_batch(self, images):
        out = []
        for img in images:
            torch.rand(1)
            np.random.rand()
            n = len(RecordingScorer.calls)
            if self.miss_every and n % self.miss_every == self.miss_every - 1:
                det = PoseDetections.empty((img.shape[1], img.shape[0]), self.name)
            else:
                kp = label_keypoints(0)[:, :2] * img.shape[0] / SIDE + (float(img[..., 0].mean()) - 128) / 32
                x1, y1 = kp.min(0)
                x2, y2 = kp.max(0)
                det = PoseDetections(kp[None], (np.arange(17, dtype=np.float32)[None] + 1) / 17,
                                     np.array([[x1, y1, x2, y2]], np.float32), np.ones(1, np.float32),
                                     (img.shape[1], img.shape[0]), self.name)
            RecordingScorer.calls.append(det)
            out.append(det)
        return out


def write_tiny_parts(root: str | Path) -> dict[str, Path]:
    from posedreamer_mm.testing.diffusion import write_tiny_sd15
    return dict(sd15=write_tiny_sd15(Path(root) / 'sd15'))


def trainer_cfg(parts: dict[str, Path], **kwargs) -> dict:
    """The project's ControlNetTrainer on the tiny SD1.5 folder (ControlNet from the UNet; the tiny VAE shrinks
    2x, so two conditioning-embedding widths)."""
    return dict(type='ControlNetTrainer', pretrained=str(parts['sd15']), conditioning_embedding_out_channels=(16, 32),
                **kwargs)


def build_trainer(parts: dict[str, Path], **kwargs):
    from posedreamer_mm.registry import MODELS
    return MODELS.build(trainer_cfg(parts, **kwargs))
