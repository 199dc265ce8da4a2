"""Shared fixtures: a quickly built tiny model (a few warm-start steps), cached across runs."""
from __future__ import annotations

from pathlib import Path

import pytest

import reasoner  # noqa: F401  (imported before torch: sets OMP_WAIT_POLICY)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """A small Qwen2-style model with the embedded char tokenizer, 40 supervised steps.

    Not the default recipe (that one aims at 10-60 % accuracy and takes longer); good
    enough for plumbing tests. Cached under ~/.cache/reasoner (or $REASONER_CACHE).
    """
    from reasoner.models.tiny import build_tiny

    return build_tiny(None, max_steps=40, target_accuracy=None, test_size=0, verbose=False)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA
