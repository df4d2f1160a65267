"""Test stand-ins for the control-validation tests: a labelled dataset with controls, a recording scorer and a
minimal ControlNet training model (until the project's own diffusion trainer is available to these tests)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from mmengine.model import BaseModel

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
    from posedreamer_mm.testing.diffusion import write_tiny_controlnet, write_tiny_sd15
    root = Path(root)
    return dict(sd15=write_tiny_sd15(root / 'sd15'), controlnet=write_tiny_controlnet(root / 'cn'))


class StandInControlNetTrainer(BaseModel):
    """The contract's training-model surface the hook uses (``build_pipeline``) and a real ControlNet loss.

    Frozen UNet / VAE / text encoder in eval mode, a trainable ControlNet; noise and timesteps from the global
    torch generator (so a validation that consumed global draws would change every later loss).
    """

    def __init__(self, parts: dict[str, Path]) -> None:
        from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer
        super().__init__()
        sd = parts['sd15']
        self.unet = UNet2DConditionModel.from_pretrained(sd / 'unet').requires_grad_(False).eval()
        self.vae = AutoencoderKL.from_pretrained(sd / 'vae').requires_grad_(False).eval()
        self.text_encoder = CLIPTextModel.from_pretrained(sd / 'text_encoder').requires_grad_(False).eval()
        self.tokenizer = CLIPTokenizer.from_pretrained(sd / 'tokenizer')
        self.scheduler = DDIMScheduler.from_pretrained(sd / 'scheduler')
        self.controlnet = ControlNetModel.from_pretrained(parts['controlnet'])
        self.build_calls = 0

    def train(self, mode: bool = True):
        super().train(mode)
        for name in ('unet', 'vae', 'text_encoder'):
            getattr(self, name).eval()
        return self

    def forward(self, inputs, data_samples=None, mode='loss'):
        image = torch.stack(list(inputs['image'])).float() / 127.5 - 1
        control = torch.stack(list(inputs['control'])).float() / 255
        ids = self.tokenizer(list(data_samples['prompt']), padding='max_length', max_length=77, truncation=True,
                             return_tensors='pt').input_ids
        with torch.no_grad():
            cond = self.text_encoder(ids)[0]
            latents = self.vae.encode(image).latent_dist.mean * self.vae.config.scaling_factor
        noise = torch.randn_like(latents)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (len(latents),))
        noisy = self.scheduler.add_noise(latents, noise, t)
        down, mid = self.controlnet(noisy, t, cond, controlnet_cond=control, return_dict=False)
        pred = self.unet(noisy, t, cond, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        return dict(loss=torch.nn.functional.mse_loss(pred, noise))

    def build_pipeline(self):
        from diffusers import DDIMScheduler, StableDiffusionControlNetPipeline
        self.build_calls += 1
        pipe = StableDiffusionControlNetPipeline(
            vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, unet=self.unet,
            controlnet=self.controlnet, scheduler=DDIMScheduler.from_config(self.scheduler.config),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe


class PairDataset(torch.utils.data.Dataset):
    """(image, control, prompt) training samples of the contract's form (noise images, fixed seed)."""

    def __init__(self, num: int = 8, side: int = SIDE) -> None:
        gen = torch.Generator().manual_seed(0)
        self.items = [dict(inputs=dict(image=torch.randint(0, 256, (3, side, side), generator=gen, dtype=torch.uint8),
                                       control=torch.randint(0, 256, (3, side, side), generator=gen,
                                                             dtype=torch.uint8)),
                           data_samples=dict(prompt=f'a person {i}', sample_id=f'p{i}')) for i in range(num)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]
