"""Protocol tests: every protocol connector is registered with the engine."""

from __future__ import annotations

import protocols

protocols.register_all()
