"""Runs of a comparison read from the wandb API instead of run folders (online only).

Every network step runs under a short timeout; a missing login, offline mode or no network give
one clear :class:`WandbUnavailable` message instead of a prompt or a hang.
"""

from __future__ import annotations

import netrc
import os
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlparse

from mmvi.report.collect import Collection, Run, Skipped, finite_numbers, make_run
from mmvi.report.curves import from_history

T = TypeVar("T")
DEFAULT_URL = "https://api.wandb.ai"
# summary keys that are training curves or bookkeeping, not final measures
NOT_MEASURES = ("_", "train/", "val/", "epoch", "trainer/", "lr", "figures/", "step")


class WandbUnavailable(RuntimeError):
    """wandb cannot be used here (offline, not logged in, no network, timeout)."""


def with_timeout(fn: Callable[[], T], timeout: float, what: str) -> T:
    """Run ``fn`` in a daemon thread; give up after ``timeout`` seconds."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise WandbUnavailable(f"{what}: no answer within {timeout:.0f} s (no network?)")
    if "error" in box:
        raise box["error"]
    return box["value"]


def base_url() -> str:
    return os.environ.get("WANDB_BASE_URL", DEFAULT_URL)


def api_key(host: str) -> str | None:
    """``WANDB_API_KEY``, else the password stored for the wandb host in ``~/.netrc``."""
    key = os.environ.get("WANDB_API_KEY")
    if key:
        return key
    try:
        auth = netrc.netrc(os.environ.get("NETRC")).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    return auth[2] if auth else None


def check_online(timeout: float) -> str:
    """The API key, once wandb mode, login and network are known to be fine."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        raise WandbUnavailable(f"WANDB_MODE={mode}: reading runs from wandb needs online mode")
    url = urlparse(base_url())
    host = url.hostname or "api.wandb.ai"
    key = api_key(host)
    if not key:
        raise WandbUnavailable(
            f"wandb is not logged in for {host}: run `wandb login` or set WANDB_API_KEY "
            "(or compare run folders instead: python -m mmvi.compare <multirun folder>)"
        )
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with_timeout(lambda: socket.create_connection((host, port), timeout=timeout).close(), timeout, host)
    except OSError as exc:
        raise WandbUnavailable(f"cannot reach {host}:{port} ({exc}); no network?") from exc
    return key


def run_from_wandb(run: Any, history: bool = False) -> Run | Skipped:
    """A :class:`Run` from a wandb API run (state ``finished``), or why it is skipped.

    The run's config is the resolved config plus ``choices`` (as ``mmvi.train`` logs it); its
    settings are read from it like a ``results.json``'s. With ``history`` the per-epoch curves
    come from ``run.history(pandas=True)``.
    """
    source = "/".join(run.path) if isinstance(run.path, list | tuple) else str(run.path)
    if run.state != "finished":
        return Skipped(source, str(run.state), f"wandb state {run.state}")
    summary = {k: v for k, v in run.summary.items() if not str(k).startswith(NOT_MEASURES)}
    metrics = finite_numbers(summary)
    if not metrics:
        return Skipped(source, "finished", "no final metrics in the wandb summary")
    config = dict(run.config)
    choices = config.pop("choices", None) or {}
    out = make_run({"config": config, "choices": choices}, source, "completed", metrics)
    out.run_dir = getattr(run, "url", source)
    if history:
        out.curves = from_history(run.history(samples=100_000, pandas=True))
    return out


def collect_wandb(project: str, group: str | None = None, timeout: float = 15.0) -> Collection:
    """Runs of ``entity/project`` (optionally one wandb group) as a :class:`Collection`."""
    if project.count("/") != 1:
        raise WandbUnavailable(f"--wandb wants entity/project, got {project!r}")
    key = check_online(timeout)

    def fetch() -> list[Any]:
        import wandb

        api = wandb.Api(timeout=int(timeout), api_key=key)
        return list(api.runs(project, filters={"group": group} if group else None))

    runs = with_timeout(fetch, 4 * timeout, f"wandb runs of {project}")
    out = Collection(sources=[f"wandb:{project}" + (f" group {group}" if group else "")])
    for run in runs:
        item = with_timeout(
            lambda run=run: run_from_wandb(run, history=True), 4 * timeout, f"history of {run.path}"
        )
        (out.runs if isinstance(item, Run) else out.skipped).append(item)
    return out
