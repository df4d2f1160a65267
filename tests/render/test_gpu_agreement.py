"""CPU (Mesa llvmpipe) and GPU EGL devices render the same control images (runs only where both exist).

The CI machine has no GPU, so this is skipped there; on a GPU node it is the check that the one rasteriser
gives the same geometry on both paths: identical silhouettes, colours within 1/255, depth within 1 mm.
"""
import numpy as np
import pytest

from posedreamer_mm.render import PNCCRenderer
from posedreamer_mm.render.rasterizer import egl_devices


def _devices():
    devices = egl_devices()
    gpu = next((d['index'] for d in devices if d['is_gpu']), None)
    cpu = next((d['index'] for d in devices if not d['is_gpu']), None)
    return cpu, gpu, devices


@pytest.mark.gpu
def test_cpu_and_gpu_egl_devices_agree(standin_model_dir):
    import torch

    from posedreamer_mm.body.body_model import SMPLXBodyModel, canonical_body_pose
    from posedreamer_mm.body.camera import upright_global_orient
    cpu, gpu, devices = _devices()
    if cpu is None or gpu is None:
        pytest.skip(f'needs a software and a GPU EGL device, found {devices}')
    model = SMPLXBodyModel(model_path=standin_model_dir, num_betas=10)
    yaws = torch.tensor([0.0, 0.7, 2.0, 3.1])
    with torch.no_grad():
        out = model(global_orient=torch.stack([torch.as_tensor(upright_global_orient(y)).float() for y in yaws]),
                    body_pose=canonical_body_pose('A').float().repeat(4, 1), transl=torch.tensor([[0, 0.2, 4.0]] * 4))
    for size in (512, 1024):
        renderers = [PNCCRenderer(body_model=model, size=size, device_index=i) for i in (cpu, gpu)]
        for verts in out.vertices.numpy():
            a, b = (r.render(verts, model.faces, (890.0, 890.0), (512.0, 512.0), (1024, 1024)) for r in renderers)
            np.testing.assert_array_equal(a['mask'], b['mask'])
            fg = a['mask'] > 0
            diff = np.abs(a['image'].astype(int) - b['image'].astype(int))[fg]
            assert diff.max() <= 1, f'colour differs by {diff.max()}/255 at {size}px'
            assert np.abs(a['depth'][fg] - b['depth'][fg]).max() <= 1e-3
