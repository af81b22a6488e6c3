"""A simulated llm-d cluster serving the Kubernetes API, for drills and tests (`runbooks dev`,
`runbooks simulator`, `runbooks drill`).

An optional part of the distribution: its own dependencies come with the `simulator` extra
(`pip install 'llm-runbooks[simulator]'`; the `test` extra includes it). Without them, importing
the simulator fails at once with that command instead of a bare ModuleNotFoundError deep inside.
"""

from importlib.util import find_spec

# Only the simulator needs these (pyproject.toml's `simulator` extra): module -> distribution.
EXTRA_MODULES = {"jsonpatch": "jsonpatch", "cryptography": "cryptography"}


class SimulatorNotInstalled(ImportError):
    """The simulator's extra is not installed; the message says how to install it."""


_missing = [dist for module, dist in EXTRA_MODULES.items() if find_spec(module) is None]
if _missing:
    raise SimulatorNotInstalled(
        f"the simulated cluster needs {', '.join(_missing)}: pip install 'llm-runbooks[simulator]'"
    )
