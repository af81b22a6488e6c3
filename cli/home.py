"""Where `runbooks dev` keeps its state (Temporal's database, kubeconfigs, dev.json) unless `--home` says."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = Path(os.environ.get("RUNBOOKS_HOME", ".runbooks"))
