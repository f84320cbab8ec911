"""Shared fixtures: the real data folder and small exact models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Real data for tests: $MMVI_SHARED_DATA, else ../shared/data beside the repository."""
    return Path(os.environ.get("MMVI_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "mnist").is_dir():
        pytest.fail(f"real test data not found at {path}; set MMVI_SHARED_DATA to the shared/data folder")
    return path


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)
    yield
