"""Where the tests find things outside the checkout; the one place that says so.

``SHARED_DATA``: the real benchmark files (see shared/data/SOURCES.md), ``$REASONER_DATA_DIR``,
else ``../shared/data`` beside the checkout (what CI provides). Tests that need them skip when absent.
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the project checkout
SHARED_DATA = Path(os.environ.get("REASONER_DATA_DIR") or ROOT.parent / "shared" / "data")
