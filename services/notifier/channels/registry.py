"""The notification channels, found by module: every module of this package that defines
``SPEC`` (a :class:`ChannelSpec`) is a channel the routing file may name, the notifier builds
when it is configured, the planner addresses and renders for, and the metrics and logs know.

Adding a channel is one module here — its delivery class and its ``SPEC`` — plus its message
templates (``services/notifier/message_templates/<locale>/``, the ``.sms.j2`` family for a
short-form channel, ``.txt.j2``/``.html.j2``/``.subject.j2`` for a long-form one) and, when it
needs any, its settings in ``services/common/settings.py`` (one settings object).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from services.common.redisconn import Keys
    from services.common.settings import Settings
    from services.notifier.channels.base import Channel
    from services.notifier.routing import Recipient


@dataclass(frozen=True)
class Built:
    """What :attr:`ChannelSpec.build` gets: the settings, Redis and the key names, and the
    channels the routing file (with its escalation policy) asks for."""

    settings: Settings
    redis: Any
    keys: Keys
    used: Collection[str]


@dataclass(frozen=True)
class ChannelSpec:
    name: str
    order: int  # position in lists: routing choices, metrics, messages
    audience: Literal["staff", "subscribers"]  # people the routing names, or webhook subscriptions
    # reaches a person's own device or address: rate limits, quiet hours, digests and the
    # default escalation channels apply
    push: bool
    # a subject, a text and an HTML part (e-mail-like); else one short text (SMS-like, clipped)
    long_form: bool
    target: Callable[[Recipient], str | None]  # where it reaches a person (None: it cannot)
    mask: Callable[[str], str]  # the target as logs and the delivery log show it
    # the channel, or None when it is not configured (then ``off`` says why, if it is used)
    build: Callable[[Built], Channel | None]
    off: str = ""


@cache
def specs() -> tuple[ChannelSpec, ...]:
    """Every channel, in order (import-time discovery of this package's modules)."""
    package = importlib.import_module(__package__ or "services.notifier.channels")
    found: list[ChannelSpec] = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        spec = getattr(module, "SPEC", None)
        if isinstance(spec, ChannelSpec):
            found.append(spec)
    names = [s.name for s in found]
    if len(set(names)) != len(names):
        raise RuntimeError(f"two channel modules claim the same name: {sorted(names)}")
    return tuple(sorted(found, key=lambda s: (s.order, s.name)))


def spec(name: str) -> ChannelSpec:
    """The channel called ``name``; KeyError for a name no module defines."""
    for s in specs():
        if s.name == name:
            return s
    raise KeyError(name)


def names(*, audience: str | None = None, push: bool | None = None) -> tuple[str, ...]:
    """Channel names in order, optionally only those of an audience or push kind."""
    return tuple(s.name for s in specs()
                 if (audience is None or s.audience == audience)
                 and (push is None or s.push == push))


def target(name: str, person: Recipient) -> str | None:
    """Where channel ``name`` reaches ``person`` (None: it cannot)."""
    try:
        return spec(name).target(person)
    except KeyError:
        return None
