"""Registration of every posedreamer_mm component (and mmpose's) for tools, tests and notebooks."""
from __future__ import annotations

import datetime
import importlib
import logging
import pkgutil

from mmengine import DefaultScope
from mmengine.logging import print_log

#: Sub-packages whose modules register components. Missing ones (not written yet) are skipped quietly;
#: a module that exists but fails to import is an error, never silently dropped.
COMPONENT_PACKAGES = ('body', 'render', 'generation', 'alignment', 'scoring', 'mining', 'datasets', 'models',
                      'evaluation', 'engine', 'visualization', 'testing')


def import_all_components() -> list[str]:
    """Imports every module under the component packages so their ``register_module`` calls run.

    Returns:
        The imported module names.
    """
    imported = []
    for pkg_name in COMPONENT_PACKAGES:
        full = f'posedreamer_mm.{pkg_name}'
        if importlib.util.find_spec(full) is None:
            continue
        pkg = importlib.import_module(full)
        imported.append(full)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f'{full}.'):
            importlib.import_module(info.name)
            imported.append(info.name)
    return imported


def register_all_modules(init_default_scope: bool = True) -> None:
    """Registers posedreamer_mm's and mmpose's modules and optionally sets ``posedreamer_mm`` as default scope.

    Args:
        init_default_scope: make ``posedreamer_mm`` the current default scope (a new uniquely named scope
            instance if another scope is current, as mmpose does).
    """
    from mmpose.utils import register_all_modules as mmpose_register_all_modules
    mmpose_register_all_modules(init_default_scope=False)
    import_all_components()
    if not init_default_scope:
        return
    never_created = (DefaultScope.get_current_instance() is None
                     or not DefaultScope.check_instance_created('posedreamer_mm'))
    if never_created:
        DefaultScope.get_instance('posedreamer_mm', scope_name='posedreamer_mm')
        return
    current = DefaultScope.get_current_instance()
    if current.scope_name != 'posedreamer_mm':
        print_log(f'The current default scope "{current.scope_name}" is not "posedreamer_mm"; '
                  '`register_all_modules` will force it to "posedreamer_mm".', logger='current',
                  level=logging.WARNING)
        new_name = f'posedreamer_mm-{datetime.datetime.now()}'
        DefaultScope.get_instance(new_name, scope_name='posedreamer_mm')
