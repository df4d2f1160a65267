# DPO candidates from the render backend (no weights; CPU): 3 images per control, 256 px, each candidate's
# appearance (background, skin, clothing, light) drawn from its own seed. The pipeline's smoke run and the toy
# benchmark's shape; MediaPipe scores such renders. python tools/generate.py
# configs/dpo/candidates/render_pncc-candidates_256.py --out data/candidates/render-256
_base_ = ['../../generation/render_procedural_generic-512.py']

out_dir = 'data/candidates/render-256'
crop_size = 256
num_controls = 64
candidates_per_sample = 3

generator = dict(
    source=dict(source=dict(num_samples=num_controls), distance_range=(2.5, 3.5)),
    pipeline=[
        dict(type='BodyForward'),
        dict(type='BodyCropCamera', size=crop_size, margin=0.1),
        dict(type='RenderControls', controls=[dict(type='PNCCRenderer')]),
        dict(type='COCO17Visibility', min_visible=8),
        dict(type='SamplePrompt', prompts=dict(type='PromptSampler', preset='generic')),
    ],
    backend=dict(type='RenderBackend', batch_size=6),
    writer=dict(shard_size=24, image_format='png', save_controls=True),
    num_samples=num_controls, candidates_per_sample=candidates_per_sample, num_workers=0)

filter_stages = [dict(type='ScorePose', scorer=dict(type='MediaPipeScorer'))]
