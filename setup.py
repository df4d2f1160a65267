"""Installs posedreamer_mm.

The OpenMMLab/torch stack is pinned in ``requirements/`` and installed by ``tools/setup_env.sh`` (some of it
cannot be resolved by a plain ``pip install``: mmpose without chumpy, xtcocotools from source, torch pinned by
a constraints file). ``install_requires`` lists only what posedreamer_mm imports itself, from
``requirements/runtime.txt``.
"""
import os.path as osp
import re

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def parse_requirements(fname: str) -> list[str]:
    """Reads a requirements file, dropping comments and blank lines."""
    reqs = []
    with open(osp.join(HERE, fname)) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line:
                reqs.append(line)
    return reqs


def get_version() -> str:
    with open(osp.join(HERE, 'posedreamer_mm', 'version.py')) as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


setup(
    name='posedreamer_mm',
    version=get_version(),
    description='PoseDreamer for OpenMMLab: diffusion-generated human images with exact SMPL-X labels, '
    'and HMR training on them',
    long_description=open(osp.join(HERE, 'README.md')).read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.10',
    packages=find_packages(exclude=('tests', 'tests.*', 'configs', 'tools', 'benchmarks')),
    include_package_data=True,
    install_requires=parse_requirements('requirements/runtime.txt'),
    # Optional parts get an extra when the code that uses them lands (docs/install.md lists the planned ones).
    # [mediapipe] lists what the offline pose scorer imports besides the mediapipe wheel itself, which must be
    # installed with --no-deps (its metadata pins numpy<2): tools/setup_env.sh does both.
    extras_require={
        'tests': parse_requirements('requirements/tests.txt'),
        'diffusion': parse_requirements('requirements/diffusion.txt'),
        'mediapipe': [r for r in parse_requirements('requirements/mediapipe.txt') if not r.startswith('mediapipe==')],
    },
    license='Apache-2.0',
    zip_safe=False,
)
