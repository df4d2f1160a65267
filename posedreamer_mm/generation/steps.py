"""Running per-sample steps: one runner for the generator's pipeline, its stages and ``tools/filter.py``.

A step is a callable ``step(results) -> results | None`` (an mmcv ``BaseTransform``): it returns the (changed)
results dict, or ``None`` to drop the sample after setting ``results['drop_reason']``
(:func:`~posedreamer_mm.generation.transforms.drop`). :class:`StepRunner` runs a list of steps on one results
dict and reports what happened as a :class:`StepOutcome`; :class:`StepCounts` adds outcomes up (drops by reason,
failures by ``<Step>:<ExceptionType>``, seconds per step), also when the outcomes come from worker processes.

:func:`build_step` builds a step (or a backend) from its config and hands it the process's body model when its
constructor takes ``body_model`` and the config does not set one; :func:`documented_keys` reads the results keys a
transform's docstring lists (``Required Keys:``, ``Optional Keys:``, ``Modified Keys:``, ``Added Keys:``), which
the generator checks before the first sample (:func:`check_pipeline_keys`).
"""
from __future__ import annotations

import collections
import inspect
import re
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple


class StepOutcome(NamedTuple):
    """What happened to one sample in a :class:`StepRunner`.

    ``status`` is ``'ok'``, ``'drop'`` or ``'fail'``; ``results`` the last results dict; ``step`` the name of the
    step that dropped or failed it; ``reason`` the drop reason (``results['drop_reason']``, else
    ``'<step>:unspecified'``) or the failure key ``'<step>:<ExceptionType>'``; ``message`` the error as
    ``'<ExceptionType>: <text>'``, ``error`` its text alone and ``traceback`` its formatted traceback (failures
    only); ``timings`` seconds per step that ran to completion.
    """
    status: str
    results: Any
    step: str | None = None
    reason: str | None = None
    message: str = ''
    traceback: str = ''
    timings: dict | None = None
    error: str = ''


class StepRunner:
    """Runs steps in order on a results dict; a step's exception fails the sample, ``None`` drops it.

    Args:
        steps: The steps (callables ``results -> results | None``).
        names: One name per step (default: the class name, ``#2``... appended to repeats).
        fatal: Exception types that are not a sample's failure but stop the caller (a missing body-model file):
            raised as they are.
        catch: Exception types counted as the sample's failure (others propagate).
    """

    def __init__(self, steps: Sequence[Callable], names: Sequence[str] | None = None,
                 fatal: tuple[type[BaseException], ...] = (),
                 catch: tuple[type[BaseException], ...] = (Exception,)) -> None:
        self.steps = list(steps)
        self.names = list(names) if names is not None else step_names(self.steps)
        if len(self.names) != len(self.steps):
            raise ValueError(f'{len(self.names)} names for {len(self.steps)} steps')
        self.fatal, self.catch = tuple(fatal), tuple(catch)

    def __call__(self, results: Any) -> StepOutcome:
        timings: dict[str, float] = {}
        for name, step in zip(self.names, self.steps):
            t = time.perf_counter()
            try:
                out = step(results)
            except self.fatal:
                raise
            except self.catch as err:
                return StepOutcome('fail', results, name, f'{name}:{type(err).__name__}',
                                   f'{type(err).__name__}: {err}', traceback.format_exc(), timings, str(err))
            timings[name] = time.perf_counter() - t
            if out is None:
                reason = results.get('drop_reason') if isinstance(results, dict) else None
                return StepOutcome('drop', results, name, reason or f'{name}:unspecified', timings=timings)
            results = out
        return StepOutcome('ok', results, timings=timings)

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.names})'


def step_names(steps: Sequence[Any]) -> list[str]:
    """Class names, with ``#2``, ``#3``... appended to the second and later steps of one class."""
    seen: collections.Counter = collections.Counter()
    names = []
    for step in steps:
        name = type(step).__name__
        seen[name] += 1
        names.append(name if seen[name] == 1 else f'{name}#{seen[name]}')
    return names


class StepCounts:
    """Totals over outcomes: ``written``/``dropped``/``failed``, drops by reason, failures by key, seconds per step.

    The first failure's traceback is kept (``first_failure``), for the error a run stops with.
    """

    def __init__(self) -> None:
        self.counts = dict(ok=0, drop=0, fail=0)
        self.dropped: collections.Counter = collections.Counter()
        self.failed: collections.Counter = collections.Counter()
        self.timings: dict[str, float] = collections.defaultdict(float)
        self.first_failure: str | None = None

    def add_timings(self, timings: dict | None) -> None:
        for name, seconds in (timings or {}).items():
            self.timings[name] += seconds

    def add(self, status: str, reason: str | None = None, detail: str = '') -> None:
        """Counts one sample's final status (``'ok'``, ``'drop'``, ``'fail'``) under ``reason``."""
        self.counts[status] += 1
        if status == 'drop':
            self.dropped[reason] += 1
        elif status == 'fail':
            self.failed[reason] += 1
            if self.first_failure is None:
                self.first_failure = detail or reason

    @property
    def handled(self) -> int:
        return sum(self.counts.values())


# --- building steps -------------------------------------------------------------------------------------------------
def takes_argument(cls: Any, name: str) -> bool:
    """Whether ``cls``'s constructor has a parameter ``name``."""
    try:
        return name in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def build_step(registry, cfg: Any, body_model: Any = None) -> Any:
    """Builds ``cfg`` from ``registry``, giving it ``body_model`` when its constructor takes one the config omits.

    A built object is returned as it is. This is how one body model per process reaches every transform, renderer
    and backend that needs it (a config may still set its own ``body_model``, or ``body_model=None`` for none).

    Raises:
        KeyError: ``type`` is not in ``registry`` (naming the registry and docs/components.md).
    """
    if not isinstance(cfg, dict):
        return cfg
    cfg = dict(cfg)
    kind = cfg.get('type')
    cls = registry.get(kind) if isinstance(kind, str) else kind
    if cls is None:
        raise KeyError(f'{kind!r} is not in the {registry.name} registry (registered names: docs/components.md)')
    if body_model is not None and 'body_model' not in cfg and takes_argument(cls, 'body_model'):
        cfg['body_model'] = body_model
    return registry.build(cfg)


# --- documented results keys ----------------------------------------------------------------------------------------
_SECTIONS = {'Required Keys': 'required', 'Optional Keys': 'optional', 'Modified Keys': 'modified',
             'Added Keys': 'added'}
_HEADER = re.compile(r'^\s*([A-Z][A-Za-z ]*):\s*$')
_IDENT = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')


def _bullet_keys(text: str) -> list[str]:
    """Keys named by one ``- key1, key2: meaning`` bullet (parenthesised remarks and alternatives left out)."""
    while True:
        stripped = re.sub(r'\([^()]*\)', '', text)
        if stripped == text:
            break
        text = stripped
    text = re.split(r':|;|, or |\bor a\b|\bwithout\b', text, maxsplit=1)[0]
    keys = []
    for part in re.split(r',|\band\b', text):
        match = _IDENT.search(part.replace('`', ''))
        if match:
            keys.append(match.group(0))
    return keys


def documented_keys(cls: Any) -> dict[str, set[str]]:
    """The results keys listed in a transform's docstring, by section.

    The sections follow mmcv's transforms: a line ``Required Keys:`` (or ``Optional``, ``Modified``, ``Added``)
    followed by indented bullets ``- key: meaning`` or ``- key1, key2``. Text in parentheses, after a ``:`` and
    alternatives (``, or a stored ...``) are not keys.

    Returns:
        ``{'required': {...}, 'optional': {...}, 'modified': {...}, 'added': {...}}``.
    """
    out: dict[str, set[str]] = {v: set() for v in _SECTIONS.values()}
    section = None
    doc = inspect.getdoc(cls if isinstance(cls, type) else type(cls)) or ''
    for line in doc.splitlines():
        header = _HEADER.match(line)
        if header:
            section = _SECTIONS.get(header.group(1))
            continue
        stripped = line.strip()
        if section is None:
            continue
        if not stripped:
            continue
        if stripped.startswith('- '):
            out[section].update(_bullet_keys(stripped[2:]))
        elif not line.startswith(' '):  # unindented prose ends the section
            section = None
    return out


def check_pipeline_keys(steps: Sequence[tuple[str, Any]], available: set[str]) -> set[str]:
    """Checks that every step's Required Keys are produced by an earlier step; returns the keys after the last.

    Args:
        steps: ``(where, step)`` pairs in running order (``where`` names it in the error, e.g. ``'stages[1]'``).
        available: Keys present before the first step.

    Raises:
        ValueError: naming the step, the keys no earlier step adds and the keys that are there.
    """
    available = set(available)
    for where, step in steps:
        keys = documented_keys(step)
        missing = keys['required'] - available
        if missing:
            raise ValueError(f'{where} ({type(step).__name__}) needs results keys {sorted(missing)} that no earlier '
                             f'step adds (present then: {sorted(available)}); add the step that makes them before '
                             'it (e.g. ScorePose before the pose filters)')
        available |= keys['added'] | keys['modified']
    return available
