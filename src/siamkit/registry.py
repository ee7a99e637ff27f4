"""One generic registry per kind of component (backbones, losses, ...), with strict keyword arguments.

``create`` rejects unknown keyword arguments with a one-line error naming them, so a misspelt option is
never silently ignored. A name containing ``:`` (``package.module:Object``) is imported as a user plugin.

Code is imported only when the user asked for it: a plugin name typed by the user (``--set``, a config file given
on the command line) is imported, but one read from a run's or a gallery's files — which anyone may have written —
is refused unless the user opts in with ``--trust-code`` (Python: ``trust_code=True``). Readers of such files wrap
their work in :func:`code_from_files` and check what they read with :func:`refuse_code_in`.

One idiom for every kind: a module defines components and registers them with ``@REGISTRY.register("name")``;
the registry names those modules as its ``providers`` and imports them on first lookup, so the registry's
module imports none of the components (no import cycles) and a lookup always sees them all.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import importlib
import inspect
import re
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, Generic, NoReturn, TypeVar

from siamkit.errors import ConfigError

T = TypeVar("T")
PLUGIN_NAME = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
"""The ``package.module:Object`` form (``cuda:0``, ``C:\\x`` and URLs do not match)."""
TRUST_HINT = "pass --trust-code (Python: trust_code=True) only if you trust whoever wrote it"
_FROM_FILES: ContextVar[str | None] = ContextVar("siamkit_code_from_files", default=None)
"""The file whose names are being resolved (plugins refused), or None (names typed by the user)."""


class Registry(Generic[T]):
    """Maps names to factories (classes or functions) that build a ``T``.

    Example:
        >>> losses: Registry[object] = Registry("loss")
        >>> @losses.register("dummy")
        ... class Dummy:
        ...     def __init__(self, margin: float = 1.0) -> None:
        ...         self.margin = margin
        >>> losses.create("dummy", margin=0.5).margin
        0.5
    """

    def __init__(self, kind: str, providers: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.providers = providers
        """Modules (dotted names) whose components register here; imported on the first lookup."""
        self._factories: dict[str, Callable[..., T]] = {}
        self._prefixes: dict[str, Callable[..., T]] = {}
        self._loaded = not providers

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self.providers:
                importlib.import_module(module)

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorator

    def register_prefix(self, prefix: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """A family of names (``timm/<model>``): the factory takes the rest of the name as its first argument."""

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            self._prefixes[prefix] = factory
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        if ":" in name:
            source = _FROM_FILES.get()
            if source is not None:
                refuse_code(source, self.kind, name)
            return _import_object(name, self.kind)
        self._load()
        for prefix, family in self._prefixes.items():
            if name.startswith(prefix):
                return functools.partial(family, name[len(prefix) :])
        try:
            return self._factories[name]
        except KeyError:
            known = ", ".join(self.list()) or "none"
            raise ConfigError(
                f"unknown {self.kind} {name!r}; choose one of: {known} (or give package.module:Object)"
            ) from None

    def create(self, name: str, **kwargs: Any) -> T:
        factory = self.get(name)
        check_kwargs(factory, kwargs, f"{self.kind} {name!r}")
        return factory(**kwargs)

    def list(self, pattern: str = "*") -> list[str]:
        self._load()
        return sorted(n for n in self._factories if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._factories


def check_kwargs(factory: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    """Raise ConfigError if ``kwargs`` holds a name ``factory`` does not accept."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = {n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ConfigError(
            f"{what} has no option {unknown[0]!r}; its options are: {', '.join(sorted(accepted)) or 'none'}"
        )


def _import_object(path: str, kind: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import {kind} {path!r} ({exc}); give it as package.module:Object") from None


def refuse_code(source: str, key: str, value: str) -> NoReturn:
    """Raise the one-line refusal of a plugin name ``value`` found at ``key`` of the file ``source``."""
    raise ConfigError(f"{source}: {key} = {value!r} would import and run code named by the file, not a registered "
                      f"name; {TRUST_HINT}")  # fmt: skip


def plugin_names(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Every ``(key.path, value)`` of nested dicts and lists whose string value has the plugin form."""
    if isinstance(obj, str):
        return [(prefix or "value", obj)] if PLUGIN_NAME.fullmatch(obj.strip()) else []
    if isinstance(obj, dict):
        return [f for k, v in obj.items() for f in plugin_names(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(obj, (list, tuple)):
        return [f for i, v in enumerate(obj) for f in plugin_names(v, f"{prefix}[{i}]")]
    return []


def refuse_code_in(obj: Any, source: str, trust_code: bool) -> None:
    """Refuse (one line, :func:`refuse_code`) any plugin name in ``obj``, read from ``source``, unless trusted."""
    found = plugin_names(obj) if not trust_code else []
    if found:
        refuse_code(source, *found[0])


@contextlib.contextmanager
def code_from_files(source: str, trust_code: bool = False) -> Iterator[None]:
    """Names resolved inside come from the file ``source``: a plugin name is refused unless ``trust_code``."""
    token = _FROM_FILES.set(None if trust_code else source)
    try:
        yield
    finally:
        _FROM_FILES.reset(token)
