"""Objects built from config nodes, a refused value reported in one line."""

from __future__ import annotations

from typing import Any

from mmvi.errors import ConfigError, DataError


def one_line(exc: BaseException) -> str:
    """The message of an error raised while building an object from the config, on one line
    (Hydra's InstantiationException is unwrapped to its cause)."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    text = " ".join(str(cause).split())
    full_key = getattr(exc, "full_key", None) or ""
    return f"{full_key}: {text}" if full_key and full_key not in text else text


def instantiate_checked(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node)``; a constructor that refuses a value raises a one-line
    :class:`ConfigError` (a data error raised inside keeps its own type)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, DataError | FileNotFoundError):
            raise cause from None
        raise ConfigError(one_line(exc)) from None
