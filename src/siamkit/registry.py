"""One generic registry per kind of component (backbones, losses, ...), with strict keyword arguments.

``create`` rejects unknown keyword arguments with a one-line error naming them, so a misspelt option is
never silently ignored. A name containing ``:`` (``package.module:Object``) is imported as a user plugin.

One idiom for every kind: a module defines components and registers them with ``@REGISTRY.register("name")``;
the registry names those modules as its ``providers`` and imports them on first lookup, so the registry's
module imports none of the components (no import cycles) and a lookup always sees them all.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from siamkit.errors import ConfigError

T = TypeVar("T")


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
