"""mmvi: multimodal representation learning, NLL versus minimum variation of information.

``mmvi.run(overrides, task=...)`` and ``mmvi.load(run_dir)`` are the Python API (:mod:`mmvi.api`);
they are imported on first use, so ``import mmvi`` stays light.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["run", "load"]


def __getattr__(name: str):
    if name in __all__:
        from mmvi import api

        return getattr(api, name)
    raise AttributeError(f"module 'mmvi' has no attribute {name!r}")
