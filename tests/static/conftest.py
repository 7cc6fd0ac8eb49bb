"""The static checks share the end-to-end tests' harness: the pin, the Envoy binary and validation."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
