"""The rasteriser's GLSL program and the projection that makes GL reproduce ``body.camera.project_points``.

One draw call writes every output (multiple render targets): interpolated vertex colour, the camera-frame depth
of the visible surface (``v_pos.z``, metres, not the non-linear z-buffer value) and, with ``WITH_NORMAL``, the
unit normal turned towards the camera. See ``rasterizer.py`` for the conventions.
"""
from __future__ import annotations

from typing import Sequence

VERTEX_SHADER = """
#version 330
uniform vec4 proj_xy;   // clip.x = proj_xy.x * x + proj_xy.y * z ; clip.y = proj_xy.z * y + proj_xy.w * z
uniform vec2 proj_z;    // clip.z = proj_z.x * z + proj_z.y ; clip.w = z
in vec3 in_pos;
in vec3 in_color;
in vec3 in_normal;
out vec3 v_pos;
out vec3 v_color;
out vec3 v_normal;
void main() {
    v_pos = in_pos;
    v_color = in_color;
    v_normal = in_normal;
    gl_Position = vec4(proj_xy.x * in_pos.x + proj_xy.y * in_pos.z,
                       proj_xy.z * in_pos.y + proj_xy.w * in_pos.z,
                       proj_z.x * in_pos.z + proj_z.y,
                       in_pos.z);
}
"""

FRAGMENT_SHADER = """
#version 330
in vec3 v_pos;
in vec3 v_color;
in vec3 v_normal;
layout(location = 0) out vec4 out_color;
layout(location = 1) out float out_depth;
#ifdef WITH_NORMAL
layout(location = 2) out vec4 out_normal;
#endif
void main() {
    out_color = vec4(v_color, 1.0);
    out_depth = v_pos.z;
#ifdef WITH_NORMAL
    // The geometric normal of the visible side (turned towards the camera) decides which way the smooth
    // normal points, so back faces seen through an open mesh are lit from the visible side too.
    vec3 ng = cross(dFdx(v_pos), dFdy(v_pos));
    if (dot(ng, v_pos) > 0.0) ng = -ng;
    vec3 n = normalize(v_normal);
    if (dot(n, ng) < 0.0) n = -n;
    out_normal = vec4(n, 1.0);
#endif
}
"""


def projection_coefficients(focal: Sequence[float], princpt: Sequence[float], img_size: Sequence[int],
                            near: float, far: float) -> tuple[tuple[float, ...], tuple[float, float]]:
    """Clip-space coefficients that reproduce ``project_points`` and the pixel-centre convention.

    Window x must be ``u + 0.5`` (GL fills pixel i when its centre i + 0.5 is covered; ours is at i), so
    ``clip.x / clip.w = 2 * (fx * x / z + cx + 0.5) / W - 1``. The same holds for y with no flip: GL's
    window y grows upwards, but ``glReadPixels`` returns the bottom row first, so array row v holds window
    y in [v, v + 1), which is image row v of the y-down OpenCV image.

    Returns:
        ``(ax, bx, ay, by)`` with ``clip.x = ax * x + bx * z``, ``clip.y = ay * y + by * z``, and
        ``(cz, dz)`` with ``clip.z = cz * z + dz`` (z = near -> -1, z = far -> +1), ``clip.w = z``.
    """
    fx, fy = (float(f) for f in focal)
    cx, cy = (float(c) for c in princpt)
    w, h = (int(s) for s in img_size)
    xy = (2.0 * fx / w, 2.0 * (cx + 0.5) / w - 1.0, 2.0 * fy / h, 2.0 * (cy + 0.5) / h - 1.0)
    z = ((far + near) / (far - near), -2.0 * far * near / (far - near))
    return xy, z


__all__ = ['VERTEX_SHADER', 'FRAGMENT_SHADER', 'projection_coefficients']
