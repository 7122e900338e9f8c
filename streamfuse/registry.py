"""Extension points found by name: one small registry per kind (source, sink, fuser, registration).

A new implementation is one new module in the kind's package that registers itself under the name
users write in the config; the module is imported the first time that name is looked up, so
nothing else has to list it::

    # streamfuse/sources/thermal_sdk.py
    @dataclass
    class ThermalSdkConfig(SourceConfig):
        type: Literal["thermal_sdk"] = "thermal_sdk"
        serial: str = ""

    @SOURCES.register("thermal_sdk", ThermalSdkConfig)
    def from_config(name: str, config: ThermalSdkConfig, context: SourceContext) -> Source:
        return ThermalSdkSource(name, config.serial, options=context.options(config, live=True))
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from streamfuse.errors import ConfigError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered implementation: its name, its config dataclass (if it has its own) and its factory."""

    name: str
    config: type | None
    factory: Callable[..., T]


class Registry(Generic[T]):
    """Implementations of one extension point by name.

    Args:
        kind: What is registered (``source``, ``sink``, ...), for messages.
        package: The package whose modules hold the implementations; ``package.<name>`` is imported
            when ``name`` is looked up and not registered yet.
    """

    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self.package = package
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, config: type | None = None) -> Callable[[F], F]:
        """Decorator: register the decorated factory (a function or a class) under ``name``."""
        def add(factory: F) -> F:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, config, factory)
            return factory
        return add

    def find(self, name: Any, *, key: str, message: str = "unknown {kind} {name!r} (available: {names})") -> Entry[T]:
        """The entry registered as ``name``, importing its module if needed.

        Raises:
            ConfigError: No such implementation; the message names ``key`` and lists the available ones.
        """
        importlib.import_module(self.package)  # the built-in implementations
        if name not in self._entries and isinstance(name, str) and name.isidentifier():
            try:
                importlib.import_module(f"{self.package}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{self.package}.{name}":
                    raise
        entry = self._entries.get(name) if isinstance(name, str) else None
        if entry is None:
            raise ConfigError(f"{key}: " + message.format(kind=self.kind, name=name, names=", ".join(self)))
        return entry

    def for_config(self, config: object) -> Entry[T]:
        """The entry whose config dataclass ``config`` is."""
        for entry in self._entries.values():
            if entry.config is type(config):
                return entry
        raise TypeError(f"no {self.kind} is registered for {type(config).__name__}")

    def __iter__(self) -> Iterator[str]:
        importlib.import_module(self.package)
        return iter(list(self._entries))


SOURCES: Registry = Registry("source", "streamfuse.sources")
SINKS: Registry = Registry("sink", "streamfuse.sinks")
FUSERS: Registry = Registry("fuser", "streamfuse.fusers")
REGISTRATIONS: Registry = Registry("registration", "streamfuse.registration")
