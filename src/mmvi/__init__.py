"""mmvi: multimodal representation learning, NLL versus minimum variation of information.

``mmvi.run(overrides, task=...)`` and ``mmvi.load(run_dir)`` are the Python API (:mod:`mmvi.api`);
they are imported on first use, so ``import mmvi`` stays light.
"""

from __future__ import annotations

from mmvi import context  # noqa: F401 - registers the config resolver ${mmvi_choice:<group>}
from mmvi.version import __version__

__all__ = ["run", "load", "__version__"]


def __getattr__(name: str):
    if name in ("run", "load"):
        from mmvi import api

        return getattr(api, name)
    raise AttributeError(f"module 'mmvi' has no attribute {name!r}")
