"""ControlValidationHook in a real mmengine Runner: logged OKS equals the OKS of oks.py on the same detections, a
contact sheet is written, and validation does not change the training losses."""
import json
import uuid

import cv2
import numpy as np
import pytest
from mmengine.hooks import Hook
from mmengine.runner import Runner

from posedreamer_mm.apis.control_eval import load_held_out, scale_keypoints, select_indices
from posedreamer_mm.engine.hooks.control_validation_hook import ControlValidationHook
from posedreamer_mm.evaluation.functional.oks import detection_as_ground_truth, keypoint_oks
from posedreamer_mm.generation.reader import GeneratedDataReader

from .control_fixtures import SIDE, RecordingScorer, build_trainer, trainer_cfg, write_control_dataset, write_tiny_parts


@pytest.fixture(scope='module')
def parts(tmp_path_factory):
    return write_tiny_parts(tmp_path_factory.mktemp('tiny_sd'))


@pytest.fixture(scope='module')
def val_root(tmp_path_factory):
    return write_control_dataset(tmp_path_factory.mktemp('val') / 'data', num=6)


@pytest.fixture(scope='module')
def train_root(tmp_path_factory):
    return write_control_dataset(tmp_path_factory.mktemp('train') / 'data', num=8)


class LossRecorder(Hook):
    def __init__(self):
        self.losses = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.append(float(outputs['loss'].detach()))


def run(tmp_path, parts, train_root, hooks, max_iters=4):
    """A few iterations of the project's ControlNetTrainer on control pairs through mmengine's Runner. The
    noise, timesteps and dropout come from torch's global generator (``noise_seed=None``), so a validation that
    consumed global draws would change every later loss."""
    recorder = LossRecorder()
    pipeline = [dict(type='LoadControlPair'), dict(type='ResizeControlPair', size=SIDE), dict(type='PackControlPair')]
    runner = Runner(
        model=trainer_cfg(parts, noise_seed=None, caption_dropout=0.3, control_dropout=0.3), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=dict(type='ControlPairDataset', data_root=str(train_root),
                                           control_types=['pncc'], pipeline=pipeline),
                              sampler=dict(type='DefaultSampler', shuffle=True), batch_size=2, num_workers=0,
                              collate_fn=dict(type='pseudo_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-2)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=10 ** 6), logger=dict(
            type='LoggerHook', interval=1)),
        custom_hooks=[recorder] + hooks, randomness=dict(seed=7),
        visualizer=dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')], name=f'vis_{uuid.uuid4().hex}'),
        experiment_name=f'control_val_{uuid.uuid4().hex}', default_scope='posedreamer_mm')
    runner.train()
    return runner, recorder.losses


def hook_cfg(val_root, **kw):
    return {**dict(type='ControlValidationHook', data_root=str(val_root), control_types=['pncc'],
                   scorer=dict(type='TestOnlyRecordingScorer', miss_every=3), num_samples=3, interval=2,
                   before_train=True, backend=dict(num_inference_steps=2, guidance_scale=1.0)), **kw}


def independent_oks(detections, labels, thr=0.3):
    """OKS per image straight from evaluation/functional/oks.py: the single detection is the ground truth, the
    label the prediction; no detection -> 0."""
    out = []
    for det, label in zip(detections, labels):
        if len(det) == 0:
            out.append(0.0)
            continue
        gt, area, box = detection_as_ground_truth(det.keypoints[0], det.keypoint_scores[0], det.bboxes[0], thr)
        out.append(float(keypoint_oks(gt[None], np.array([area]), label[None, :, :2], gt_bboxes=box[None])[0, 0]))
    return np.array(out)


def test_hook_logs_oks_of_oks_py_and_a_contact_sheet(tmp_path, parts, val_root, train_root):
    RecordingScorer.calls.clear()
    runner, _ = run(tmp_path, parts, train_root, [hook_cfg(val_root)])
    hook = next(h for h in runner.hooks if isinstance(h, ControlValidationHook))
    vis = next(tmp_path.glob('*/vis_data'))
    lines = [json.loads(line) for line in (vis / 'scalars.json').read_text().splitlines()]
    logged = [d for d in lines if 'control_val/mean_oks' in d]
    assert [d['step'] for d in logged] == [0, 2, 4]            # no extra one at the end: 4 was validated
    # The held-out rows are 0, 2, 4 of 6 (evenly spaced); labels read here straight from the dataset.
    assert select_indices(6, 3) == [0, 2, 4]
    reader = GeneratedDataReader(val_root)
    labels = [reader.sample(i).keypoints_coco17 for i in (0, 2, 4)]
    assert len(RecordingScorer.calls) == 9
    for k, d in enumerate(logged):
        oks = independent_oks(RecordingScorer.calls[3 * k:3 * k + 3], labels)
        assert 0 in oks and (oks > 0.1).sum() == 2     # one undetected person per round, counted as OKS 0
        assert d['control_val/mean_oks'] == pytest.approx(oks.mean(), abs=1e-9)
        assert d['control_val/oks_error'] == pytest.approx(1 - oks.mean(), abs=1e-9)
        assert d['control_val/frac_unmatched'] == pytest.approx(1 / 3)
    assert hook.last_result is not None and len(hook.last_result.images) == 3
    for step in (0, 2, 4):
        sheet = cv2.imread(str(vis / 'vis_image' / f'control_val_contact_sheet_{step}.png'))
        assert sheet is not None and sheet.shape == (28 + 3 * 128, 3 * 128, 3)
    # The control column is the stored control (nearly: the tile is resized).
    ctrl = cv2.cvtColor(cv2.imread(reader.control_path(0, 'pncc')), cv2.COLOR_BGR2RGB)
    sheet = cv2.cvtColor(cv2.imread(str(vis / 'vis_image' / 'control_val_contact_sheet_4.png')), cv2.COLOR_BGR2RGB)
    tile = cv2.resize(ctrl, (128, 128), interpolation=cv2.INTER_AREA)
    assert np.abs(sheet[28 + 40:28 + 100, 256:384].astype(int) - tile[40:100]).max() <= 1


def test_validation_leaves_the_training_trajectory_unchanged(tmp_path, parts, val_root, train_root):
    _, plain = run(tmp_path / 'plain', parts, train_root, [], max_iters=3)
    RecordingScorer.calls.clear()
    runner, hooked = run(tmp_path / 'hooked', parts, train_root, [hook_cfg(val_root, sheet_rows=0, num_samples=2)],
                         max_iters=3)
    assert len(RecordingScorer.calls) == 6                     # validated before iteration 1, after 2 and at the end
    assert len(plain) == 3 and plain == hooked                 # bit-identical losses
    # The trained ControlNet is back in train mode, the frozen parts still in eval mode.
    assert runner.model.controlnet.training and not runner.model.unet.training


def test_validation_restores_modes_and_random_state(parts, val_root):
    import torch
    model = build_trainer(parts).train()
    model.controlnet.controlnet_cond_embedding.eval()          # a submodule the trainer keeps in eval mode
    hook = ControlValidationHook(val_root, ['pncc'], dict(type='TestOnlyRecordingScorer', miss_every=0),
                                 num_samples=2, backend=dict(num_inference_steps=1), sheet_rows=0)

    class FakeRunner:
        visualizer = type('V', (), dict(add_scalars=lambda *a, **k: None, add_image=lambda *a, **k: None))()
        logger = type('L', (), dict(info=lambda *a, **k: None))()

    FakeRunner.model = model
    torch.manual_seed(3)
    np.random.seed(3)
    hook.validate(FakeRunner, step=1)
    after = torch.rand(4), np.random.rand(4)
    torch.manual_seed(3)
    np.random.seed(3)
    expected = torch.rand(4), np.random.rand(4)
    assert torch.equal(after[0], expected[0]) and np.array_equal(after[1], expected[1])
    assert model.controlnet.training and not model.controlnet.controlnet_cond_embedding.training
    assert not model.vae.training


def test_held_out_resized_moves_the_labels(val_root):
    held = load_held_out(val_root, 2, ['pncc'], size=(64, 48))
    reader = GeneratedDataReader(val_root)
    assert [h.sample_id for h in held] == [reader.ids[0], reader.ids[3]]
    assert held[0].controls['pncc'].shape == (48, 64, 3)
    label = reader.sample(3).keypoints_coco17
    # x doubles, y grows 1.5x about pixel centres; visibilities kept.
    np.testing.assert_allclose(held[1].keypoints[:, 0], (label[:, 0] + 0.5) * 2 - 0.5, atol=1e-5)
    np.testing.assert_allclose(held[1].keypoints[:, 1], (label[:, 1] + 0.5) * 1.5 - 0.5, atol=1e-5)
    np.testing.assert_array_equal(held[1].keypoints[:, 2], label[:, 2])
    np.testing.assert_allclose(scale_keypoints(label, (SIDE, SIDE), (SIDE, SIDE)), label, atol=1e-6)
    assert held[1].seed == 1003 and held[1].prompt == 'a person 3'


def test_bad_inputs_get_one_clear_error(tmp_path, val_root):
    with pytest.raises(ValueError, match="no stored 'depth' control"):
        load_held_out(val_root, 2, ['depth'])
    with pytest.raises(ValueError, match='control_types must be a non-empty list'):
        ControlValidationHook(val_root, 'pncc', dict(type='TestOnlyRecordingScorer'))
    with pytest.raises(ValueError, match='num_samples must be >= 1'):
        select_indices(6, 0)
    assert select_indices(2, 5) == [0, 1] and select_indices(7, 3) == [0, 2, 4] and select_indices(6, 2) == [0, 3]
    # A wrong data_root fails before the first iteration (setup in before_train), naming the folder.
    hook = ControlValidationHook(tmp_path / 'nope', ['pncc'], dict(type='TestOnlyRecordingScorer'))
    with pytest.raises(Exception, match='nope is not a generated dataset'):
        hook.before_train(runner=None)


def test_live_pipeline_images_are_the_pipelines_own_for_the_stored_seed(parts, val_root):
    """The wrapped live pipeline is called as dataset generation calls it: one generator seeded with the row's
    seed, its prompt and negative prompt, the control in [0, 1]; the same call made by hand gives the same image."""
    import torch

    from posedreamer_mm.apis.control_eval import evaluate_control, pipeline_backend
    from posedreamer_mm.generation.backends.diffusers_backends import SD15ControlNetBackend
    model = build_trainer(parts).eval()
    from posedreamer_mm.testing.diffusion import make_trained_like
    make_trained_like(model.controlnet)          # a zero-output ControlNet would ignore the control
    pipe = model.build_pipeline()
    assert isinstance(pipeline_backend(pipe, ['pncc']), SD15ControlNetBackend)
    held = load_held_out(val_root, 2, ['pncc'])
    result = evaluate_control(pipe, held, RecordingScorer(miss_every=0), backend=dict(num_inference_steps=2))
    for h, img in zip(held, result.images):
        control = torch.from_numpy(h.controls['pncc']).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            ref = pipe(prompt=[h.prompt], negative_prompt=[h.negative_prompt], image=control, height=SIDE, width=SIDE,
                       num_inference_steps=2, guidance_scale=7.5, output_type='np',
                       generator=[torch.Generator().manual_seed(h.seed)]).images[0]
        np.testing.assert_array_equal(img, np.round(np.clip(ref, 0, 1) * 255).astype(np.uint8))
    assert not np.array_equal(result.images[0], result.images[1])


def test_flux_control_pipeline_is_run_by_the_flux_control_backend(tmp_path, val_root):
    from posedreamer_mm.apis.control_eval import evaluate_control, pipeline_backend
    from posedreamer_mm.generation.backends.diffusers_backends import FluxControlBackend
    from posedreamer_mm.models.editors.flux_control.flux_control_lora import FluxControlLoRATrainer
    from posedreamer_mm.testing.diffusion import write_tiny_flux
    model = FluxControlLoRATrainer(pretrained=write_tiny_flux(tmp_path / 'flux'), rank=4, max_sequence_length=16)
    pipe = model.eval().build_pipeline()
    assert isinstance(pipeline_backend(pipe, ['pncc']), FluxControlBackend)
    held = load_held_out(val_root, 1, ['pncc'])
    backend = dict(num_inference_steps=1, call_kwargs=dict(max_sequence_length=16))
    result = evaluate_control(pipe, held, RecordingScorer(miss_every=0), backend=backend)
    assert result.images[0].shape == (SIDE, SIDE, 3) and result.oks.shape == (1,)
    with pytest.raises(ValueError, match='no registered generation backend runs a dict'):
        pipeline_backend({}, ['pncc'])


def test_contact_sheet_columns_base_current_label_and_control(val_root):
    from posedreamer_mm.apis.control_eval import control_contact_sheet
    held = load_held_out(val_root, 2, ['pncc'])
    current = [np.full((SIDE, SIDE, 3), 200, np.uint8)] * 2
    base = [np.full((SIDE, SIDE, 3), 50, np.uint8)] * 2
    sheet = control_contact_sheet(held, current, [0.5, 0.25], tile=64, base_images=base, base_oks=[0.1, 0.2])
    assert sheet.shape == (28 + 2 * 64, 4 * 64, 3)
    mid = (slice(28 + 64 + 10, 28 + 64 + 40), slice(None))       # second row, above its caption
    row = sheet[mid[0]]
    assert (row[:, 5:60] == 50).all() and (row[:, 64 + 5:128 - 5] == 200).all()
    # The label column is the current image with the label skeleton drawn on it (some pixels differ from 200).
    assert (row[:, 128:192] != 200).any()
    ctrl = cv2.resize(held[1].controls['pncc'], (64, 64), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(row[:, 192:256], ctrl[10:40])
    without_base = control_contact_sheet(held, current, tile=64)
    assert without_base.shape == (28 + 2 * 64, 3 * 64, 3)
