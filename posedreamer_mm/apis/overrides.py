"""``--cfg-options`` that behave exactly like editing the config file (docs/configs.md).

A python config names each asset path and setting once at top level (``body_model_dir = None``) and builds its
component dicts from it; by the time mmengine hands back the parsed dict, every use holds a copy of the old value,
so merging ``body_model_dir=/data/smplx`` into that dict changes one unused key (mmdet#10891). Instead, the file
is evaluated again with the override in place: each python file of the ``_base_`` chain is parsed with
:mod:`ast`, a statement that applies the override is inserted right after every top-level assignment of the
overridden name, and the rewritten chain (temporary copies whose ``_base_`` entries point at each other) goes to
``Config.fromfile`` as usual. Every value computed from the name afterwards -- ``osp.join``/f-strings, dicts and
lists reused under other keys, ``{{_base_.x}}`` in child files -- is computed from the new value.

A dotted key (``train_pipeline.1.prob=0.0``, ``body_model.gender=female``) rebinds the name to a copy of its value
with that one entry set (missing dict keys are created, as mmengine does; list entries are addressed by index).
A root the config does not assign is refused unless it is one of the runtime keys the caller allows (by default
:data:`RUNNER_KEYS`, which mmengine's ``Runner`` reads with a default); those are merged as mmengine does.
Whatever cannot be applied faithfully is refused with :class:`ConfigError` naming the key: a name bound by other
statements (``for``, ``import``, ``def``), a name defined in a package base (``mmpose::...``, not re-evaluated),
a dotted key through a ``{{_base_.x}}`` value (filled in only after the file ran), a non-literal value, and a
result the file changed again after the assignment (the final value is checked for every key).
"""
from __future__ import annotations

import ast
import difflib
import os
import os.path as osp
import re
import tempfile
from collections.abc import Iterable
from typing import Any

from mmengine.config import Config
from mmengine.logging import print_log

#: Top-level keys mmengine's ``Runner.from_cfg`` reads with a default: a config may leave them out, and
#: ``--cfg-options work_dir=...`` or ``randomness.seed=1`` then adds them (merged as mmengine does).
RUNNER_KEYS = frozenset({
    'work_dir', 'experiment_name', 'load_from', 'resume', 'launcher', 'randomness', 'env_cfg', 'log_level',
    'log_processor', 'default_hooks', 'custom_hooks', 'visualizer', 'custom_imports', 'default_scope',
    'auto_scale_lr', 'model_wrapper_cfg', 'compile'})

_APPLY = '__pdm_apply_override__'
_MARK = '[--cfg-options] '  # prefixes the errors raised inside the evaluated config
# Defined inside every rewritten file (no imports: mmengine would take the file for a lazy-import config). Names
# starting with '__' and functions are dropped from the parsed config by mmengine.
_HELPER = f'''
def {_APPLY}(obj, parts, value, key, where, done=()):
    if not parts:
        return value
    head, rest = parts[0], parts[1:]
    here = '.'.join((key.split('.')[0],) + done + (head,))
    if isinstance(obj, dict):
        if head not in obj and rest:  # a child's partial dict: the path is the base's (or new: merged at the end)
            return obj
        new = dict(obj)
        new[head] = {_APPLY}(obj[head] if head in obj else None, rest, value, key, where, done + (head,))
        return new
    if isinstance(obj, (list, tuple)):
        if not (head.isdigit() and int(head) < len(obj)):
            raise KeyError('{_MARK}' + key + ': ' + here + ' is not an index of the ' + str(len(obj))
                           + '-entry ' + type(obj).__name__ + ' at ' + where)
        new = list(obj)
        new[int(head)] = {_APPLY}(obj[int(head)], rest, value, key, where, done + (head,))
        return new if isinstance(obj, list) else tuple(new)
    # (the braces are split: mmengine would take the text for one of its base-variable placeholders)
    raise TypeError('{_MARK}' + key + ': ' + '.'.join((key.split('.')[0],) + done) + ' is ' + repr(obj) + ' at ' + where
                    + ', not a dict or list (a {{' + '{{_base_.x}}' + '}} value is filled in only after the file '
                    'ran: override the base variable x instead)')
'''


class ConfigError(ValueError):
    """A config file or ``--cfg-options`` key that cannot be used, with the file and key named."""


def _literal(key: str, value: Any) -> ast.expr:
    """``value`` as a python expression (overrides are literals: numbers, strings, None, lists, tuples, dicts)."""
    text = repr(value)
    try:
        same = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        same = _literal  # never equal
    if same != value or type(same) is not type(value):
        raise ConfigError(f'--cfg-options {key}: {value!r} ({type(value).__name__}) cannot be written in a config '
                          'file as a literal; give a number, string, None, list, tuple or dict of those')
    return ast.parse(text, mode='eval').body


def _bound_names(node: ast.AST) -> set[str]:
    """Names a non-assignment statement (or a compound statement's header) binds."""
    names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del))}
    for n in ast.walk(node):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split('.')[0] for a in n.names)
    return names


def _assigned(stmt: ast.stmt) -> set[str]:
    """Names an assignment statement rebinds (``a = ...``, ``a, b = ...``, ``a: T = ...``, ``a += ...``)."""
    if isinstance(stmt, ast.Assign):
        targets = stmt.targets
    elif isinstance(stmt, (ast.AugAssign, ast.AnnAssign)) and (
            not isinstance(stmt, ast.AnnAssign) or stmt.value is not None):
        targets = [stmt.target]
    else:
        return set()
    names = set()
    for target in targets:
        stack = [target]
        while stack:
            t = stack.pop()
            if isinstance(t, ast.Name):
                names.add(t.id)
            elif isinstance(t, (ast.Tuple, ast.List)):
                stack.extend(t.elts)
            elif isinstance(t, ast.Starred):
                stack.append(t.value)
    return names


class _Rewriter:
    """Inserts the override statements into one parsed file; records where each root is assigned."""

    _BLOCKS = ('body', 'orelse', 'finalbody')

    def __init__(self, options: dict[str, Any], source: str):
        self.options, self.source = options, source
        self.roots = {k.split('.')[0] for k in options}
        self.assigned: dict[str, list[int]] = {}  # every top-level name -> lines where it is assigned
        self.applied: dict[str, list[int]] = {}  # overridden root -> lines after which the override went in
        self.bound: set[str] = set()  # names bound by other statements (for targets, imports, defs)

    def _apply_stmts(self, root: str, stmt: ast.stmt) -> list[ast.stmt]:
        where = f'{self.source}:{stmt.lineno}'
        out = []
        for key, value in self.options.items():
            parts = key.split('.')
            if parts[0] != root:
                continue
            call = ast.Call(func=ast.Name(_APPLY, ast.Load()), args=[
                ast.Name(root, ast.Load()), ast.Tuple([ast.Constant(p) for p in parts[1:]], ast.Load()),
                _literal(key, value), ast.Constant(key), ast.Constant(where)], keywords=[])
            out.append(ast.Assign(targets=[ast.Name(root, ast.Store())], value=call, lineno=stmt.lineno))
        self.applied.setdefault(root, []).append(stmt.lineno)
        return out

    def visit_block(self, stmts: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for stmt in stmts:
            out.append(stmt)
            names = _assigned(stmt)
            if names:
                for name in names:
                    self.assigned.setdefault(name, []).append(stmt.lineno)
                for root in sorted(names & self.roots):
                    out.extend(self._apply_stmts(root, stmt))
                continue
            if isinstance(stmt, (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try)):
                header = [getattr(stmt, a) for a in ('target', 'test', 'iter') if hasattr(stmt, a)]
                header += [i for i in getattr(stmt, 'items', [])]
                bad = set().union(*(_bound_names(h) for h in header)) if header else set()
                self._refuse(bad, stmt)
                for attr in self._BLOCKS:
                    if getattr(stmt, attr, None):
                        setattr(stmt, attr, self.visit_block(getattr(stmt, attr)))
                for handler in getattr(stmt, 'handlers', []):
                    self._refuse({handler.name} if handler.name else set(), handler)
                    handler.body = self.visit_block(handler.body)
            else:
                self._refuse(_bound_names(stmt), stmt)
        return out

    def _refuse(self, names: set[str], node: ast.AST) -> None:
        self.bound.update(names)
        hit = sorted(names & self.roots)
        if hit:
            raise ConfigError(f'--cfg-options {hit[0]}: {self.source}:{node.lineno} binds {hit[0]!r} by a statement '
                              'other than an assignment; the override cannot follow it faithfully: edit the file')


def _rewrite_chain(path: str, options: dict[str, Any], tmp: str, done: dict[str, str],
                   report: dict[str, list[str]], defined: set[str]) -> str:
    """Writes the rewritten copy of ``path`` (and of its local bases, recursively) under ``tmp``; returns it."""
    path = osp.abspath(osp.expanduser(path))
    if path in done:
        return done[path]
    if not path.endswith('.py'):
        raise ConfigError(f'--cfg-options on {path}: only python config chains can be re-evaluated')
    copy = osp.join(tmp, str(len(done)), osp.basename(path))
    os.makedirs(osp.dirname(copy))
    done[path] = copy
    # mmengine's own text substitutions first ({{fileDirname}} must name the original's folder); its
    # {{_base_.x}} placeholders parse as python and stay for mmengine.
    Config._substitute_predefined_vars(path, copy)
    Config._substitute_env_variables(copy, copy)
    with open(copy, encoding='utf-8') as f:
        tree = ast.parse(f.read(), filename=path)
    rewriter = _Rewriter(options, path)
    roots = rewriter.roots
    body = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == '_base_' for t in stmt.targets):
            bases = ast.literal_eval(stmt.value)
            single = isinstance(bases, str)
            new = []
            for base in [bases] if single else list(bases):
                if '::' in base:  # an installed package's config: read for its names, kept as mmengine loads it
                    base_path, _ = Config._get_cfg_path(base, path)
                    with open(base_path, encoding='utf-8') as f:
                        names = {n for s in ast.parse(f.read()).body for n in _assigned(s)}
                    defined.update(names)
                    if names & roots:
                        key = next(k for k in options if k.split('.')[0] in names)
                        raise ConfigError(f'--cfg-options {key}: {key.split(".")[0]!r} is defined in the package base '
                                          f'{base!r}, which is not re-evaluated; override the keys of {path} that '
                                          'use it instead')
                    new.append(base)
                else:
                    new.append(_rewrite_chain(osp.join(osp.dirname(path), base), options, tmp, done, report, defined))
            stmt = ast.Assign(targets=stmt.targets, value=_literal('_base_', new[0] if single else new),
                              lineno=stmt.lineno)
        body.append(stmt)
    tree.body = ast.parse(_HELPER).body + rewriter.visit_block(body)
    defined.update(rewriter.assigned, rewriter.bound)
    for root, lines in rewriter.applied.items():
        report.setdefault(root, []).extend(f'{path}:{n}' for n in lines)
    with open(copy, 'w', encoding='utf-8') as f:
        f.write(ast.unparse(ast.fix_missing_locations(tree)))
    return copy


def _lookup(cfg: Any, parts: list[str]) -> Any:
    for p in parts:
        cfg = cfg[int(p)] if isinstance(cfg, (list, tuple)) else cfg[p]
    return cfg


def _final_value(cfg: dict, key: str) -> Any:
    """The value at dotted ``key`` of a plain config dict, or ``KeyError`` (the class) where there is none."""
    try:
        return _lookup(cfg, key.split('.'))
    except (KeyError, IndexError, TypeError, ValueError):
        return KeyError


def load_with_overrides(path: str, options: dict[str, Any] | None,
                        runtime_keys: Iterable[str] = RUNNER_KEYS) -> Config:
    """``Config.fromfile(path)`` as if ``options`` had been written into the file (see the module docstring).

    Args:
        path: A python config (its ``_base_`` chain may hold local files and ``package::`` configs).
        options: ``--cfg-options`` as parsed by mmengine's ``DictAction``: dotted key -> value.
        runtime_keys: Roots that may be added although the config does not assign them (merged as mmengine does).

    Raises:
        ConfigError: a key that cannot be applied faithfully or whose root the config does not define; the
            message names the key (and the file and line where it applies).
    """
    if not options:
        return Config.fromfile(path)
    options = {str(k): v for k, v in options.items()}
    bad = [k for k in options if not all(k.split('.'))]
    if bad:
        raise ConfigError(f'--cfg-options {bad[0]!r}: empty key part')
    if any(k.split('.')[0] == '_base_' for k in options):
        raise ConfigError('--cfg-options _base_: the inheritance list is not overridable; write a config that '
                          'inherits the one you want')
    if Config._is_lazy_import(path):
        raise ConfigError(f'--cfg-options on {path}: a lazy-import config (read_base) cannot be re-evaluated; '
                          'edit the file')
    report: dict[str, list[str]] = {}
    defined: set[str] = set()
    with tempfile.TemporaryDirectory(prefix='pdm_cfg_') as tmp:
        # First pass only finds the names the chain defines: a root it does not define is not rewritten.
        _rewrite_chain(path, {}, tmp + '/names', {}, {}, defined)
        runtime_keys = set(runtime_keys)
        in_file = {k: v for k, v in options.items() if k.split('.')[0] in defined}
        added = {k: v for k, v in options.items() if k not in in_file}
        unknown = [k for k in added if k.split('.')[0] not in runtime_keys]
        if unknown:
            root = unknown[0].split('.')[0]
            close = difflib.get_close_matches(root, sorted(defined), n=3)
            raise ConfigError(f'--cfg-options {unknown[0]}: {path} (with its bases) assigns no top-level {root!r}'
                              + (f'; did you mean {close}?' if close else '')
                              + (f' (runtime keys that may be added: {sorted(runtime_keys)})' if runtime_keys else ''))
        root_copy = _rewrite_chain(path, in_file, tmp + '/run', {}, report, set())
        try:
            parsed = Config.fromfile(root_copy)
        except ConfigError:
            raise
        except Exception as err:
            text = str(err)
            if _MARK in text:  # name mmengine's placeholder ('_posedreamer_train_1a2b3c') as the file wrote it
                text = re.sub(r"'_([\w.]+)_[0-9a-f]{6}'", r'{{_base_.\1}}', text[text.index(_MARK) + len(_MARK):])
                raise ConfigError('--cfg-options ' + text.strip('\'"')) from err
            given = ' '.join(f'{k}={v!r}' for k, v in options.items())
            raise ConfigError(f'{path} with --cfg-options {given}: {type(err).__name__}: {err}') from err
    cfg = Config(parsed._cfg_dict.to_dict(), cfg_text=parsed.text, filename=path,
                 env_variables=parsed.env_variables)
    if added:
        cfg.merge_from_dict(added)
    final = cfg.to_dict()
    # A key under a dict path the config does not have: no statement can have used it, so it is merged.
    unheld = [k for k, v in options.items() if _final_value(final, k) != v and k.count('.') > 1]
    as_written = Config.fromfile(path).to_dict() if unheld else {}  # read once, and only when needed
    new_paths = {k: options[k] for k in unheld if _final_value(as_written, k.rsplit('.', 1)[0]) is KeyError}
    if new_paths:
        cfg.merge_from_dict(new_paths)
        final = cfg.to_dict()
    for key, value in options.items():
        got = _final_value(final, key)
        if got != value or type(got) is not type(value):
            where = ', '.join(report.get(key.split('.')[0], [])) or path
            raise ConfigError(f'--cfg-options {key}={value!r} did not hold: the config ends with {key} = '
                              f'{"(missing)" if got is KeyError else repr(got)} (applied after {where}; a later '
                              'statement changed it): edit the file')
    for root in dict.fromkeys(k.split('.')[0] for k in options):
        keys = [k for k in options if k.split('.')[0] == root]
        how = (f'applied where the config assigns {root} ({", ".join(report[root])})' if root in report
               else 'merged as an mmengine runtime key')
        print_log(f'--cfg-options {", ".join(f"{k}={options[k]!r}" for k in keys)}: {how}', logger='current')
    return cfg
