"""tools/hmr_demo.py end to end, and the mesh overlay it draws (posedreamer_mm/visualization/mesh_overlay.py)."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope

from posedreamer_mm.body.body_model import SMPLXBodyModel
from posedreamer_mm.body.camera import project_points, upright_global_orient
from posedreamer_mm.registry import MODELS
from posedreamer_mm.visualization.mesh_overlay import render_mesh_overlay
from tests.configs.test_hmr_configs import ROOT, tiny_config, write_config_fixtures


def _body(model_dir, x: float, z: float) -> np.ndarray:
    body = SMPLXBodyModel(model_dir)
    with torch.no_grad():
        out = body(global_orient=upright_global_orient(0.0)[None], transl=torch.tensor([[x, 0.3, z]]))
    return out.vertices[0].numpy(), body.faces


def test_overlay_draws_each_mesh_where_it_projects_nearer_in_front(standin_model_dir):
    focal, princpt, (w, h) = np.array([200.0, 200.0]), np.array([79.5, 59.5]), (160, 120)
    image = np.full((h, w, 3), 40, np.uint8)
    near, faces = _body(standin_model_dir, -0.3, 5.0)
    far, _ = _body(standin_model_dir, 0.3, 7.0)
    out = render_mesh_overlay(image, [far, near], faces, focal, princpt, alpha=1.0,
                              colors=((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)))
    changed = (out != image).any(-1)
    assert changed.sum() > 100
    uv = project_points(near, focal, princpt).numpy()
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    cols, rows = np.round(uv[inside]).astype(int).T
    # The mesh's own projection is painted (thin fingers may fall between pixel centres: 1-pixel tolerance).
    grown = cv2.dilate(changed.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert grown[rows, cols].mean() > 0.99
    assert not changed[:, :max(0, int(uv[:, 0].min()) - 2)].any()  # nothing left of both meshes
    # Where they overlap the nearer (blue) mesh wins; elsewhere the far one is red.
    blue = (out[..., 2] > out[..., 0]) & changed
    red = (out[..., 0] > out[..., 2]) & changed
    painted = changed[rows, cols]
    assert blue[rows, cols][painted].mean() > 0.95 and red.sum() > 50  # the far mesh never shows over the near one
    np.testing.assert_array_equal(out[~changed], image[~changed])
    with pytest.raises(ValueError, match='uint8 RGB'):
        render_mesh_overlay(image.astype(np.float32), [near], faces, focal, princpt)


@pytest.mark.timeout(300)
def test_hmr_demo_writes_the_overlay_and_params(tmp_path, standin_model_dir):
    paths = write_config_fixtures(tmp_path / 'data', standin_model_dir)
    cfg = tiny_config(ROOT / 'configs' / 'hmr_vitl_posedreamer_bedlam.py', paths, standin_model_dir)
    config = tmp_path / 'hmr_tiny.py'
    cfg.dump(str(config))
    with DefaultScope.overwrite_default_scope('posedreamer_mm'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    ckpt = tmp_path / 'tiny.pth'
    torch.save({'state_dict': model.state_dict()}, ckpt)
    image = os.path.join(paths['ubody']['img_root'], 'ubody_000000.jpg')
    out, params = tmp_path / 'out' / 'overlay.jpg', tmp_path / 'pred.npz'
    res = subprocess.run([sys.executable, str(ROOT / 'tools' / 'hmr_demo.py'), image, str(config), str(ckpt),
                          '--bbox', '20', '10', '120', '150', '--bbox', '100', '20', '190', '150',
                          '--focal', '220', '--out', str(out), '--save-params', str(params)],
                         capture_output=True, text=True, timeout=280,
                         env={**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert '2 person(s)' in res.stdout
    src, drawn = cv2.imread(image), cv2.imread(str(out))
    assert drawn.shape == src.shape and np.abs(drawn.astype(int) - src).max() > 50
    pred = np.load(params)
    assert pred['vertices'].shape == (2, 10475, 3) and pred['smplx_body_pose'].shape == (2, 63)
    np.testing.assert_allclose(pred['focal'], [220.0, 220.0])
