"""The layout's promises: one configuration, one default channel, the simulator an
optional extra that says how to install it, stand-ins shared by tests and benchmarks without sys.path edits,
the worker process apart from the CLI with imports going one way."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import simulator
from settings import DEFAULT_CHANNEL, Settings, WorkerSettings, worker_settings
from worker.worker import build_worker

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ["settings", "workflows", "activities", "worker", "cli", "triggers"]


def _imports(package: str) -> list[tuple[str, set[str]]]:
    """(module path, top-level packages it imports) for every import statement under `package`,
    function-level imports included."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.append((str(path.relative_to(ROOT)), {a.name.split(".")[0] for a in node.names}))
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.append((str(path.relative_to(ROOT)), {node.module.split(".")[0]}))
    return found


def test_one_default_channel_everywhere() -> None:
    assert DEFAULT_CHANNEL == "#incident-response"  # the seeds' incident channel
    assert Settings().slack.channel_for(None) == DEFAULT_CHANNEL
    assert WorkerSettings().slack_channel == DEFAULT_CHANNEL
    assert worker_settings(Settings()).slack_channel == DEFAULT_CHANNEL
    assert inspect.signature(build_worker).parameters["slack_channel"].default == DEFAULT_CHANNEL
    configured = Settings.model_validate({"slack": {"channels": {"default": "#llm-platform"}}})
    assert worker_settings(configured).slack_channel == "#llm-platform"


def test_the_simulator_is_an_extra_with_the_modules_only_it_imports() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = lambda reqs: {r.split(">")[0].split("[")[0].strip().lower() for r in reqs}  # noqa: E731
    extra = names(project["optional-dependencies"]["simulator"])
    assert extra == set(simulator.EXTRA_MODULES.values())
    assert not extra & names(project["dependencies"])
    assert "llm-runbooks[simulator]" in project["optional-dependencies"]["test"]
    for package in PRODUCT:  # only the simulator may import them, else the product needs the extra
        for path, imported in _imports(package):
            assert not imported & set(simulator.EXTRA_MODULES), f"{path} imports {imported}"


# Which way imports go (/work/shared/design.md "Layout"): the command (cli/) drives the worker process
# (worker/), which composes the rest; the triggers start incidents; settings/ is read by all of them and
# reads only the playbooks' models; the stand-ins know nothing of the product. Nothing below the command
# imports it, nothing but the command imports the worker.
PRODUCT_AND_COMMAND = {"settings", "workflows", "activities", "triggers", "worker", "cli"}
MAY_NOT_IMPORT = {
    "worker": {"cli"},
    "triggers": {"cli", "worker"},
    "workflows": {"cli", "worker", "triggers"},
    "activities": {"cli", "worker"},
    "settings": {"cli", "worker", "triggers", "activities"},
    "simulator": PRODUCT_AND_COMMAND | {"standins"},
    "standins": PRODUCT_AND_COMMAND | {"simulator"},
}


@pytest.mark.parametrize("package", sorted(MAY_NOT_IMPORT))
def test_imports_go_one_way(package: str) -> None:
    wrong = [
        (path, imported & MAY_NOT_IMPORT[package])
        for path, imported in _imports(package)
        if imported & MAY_NOT_IMPORT[package]
    ]
    assert not wrong, f"{package}/ imports what depends on it: {wrong}"


@pytest.mark.parametrize(
    "command",
    [
        ["dev", "--home", "{home}"],
        ["simulator", "--port", "0"],
        ["drill", "service-outage", "--home", "{home}"],
        ["drill", "--list"],
    ],
)
def test_simulator_commands_without_the_extra_say_how_to_install_it(command: list[str], tmp_path: Path) -> None:
    # The extra's modules hidden (None in sys.modules: importing them fails as if not installed).
    hide = "; ".join(f"sys.modules[{m!r}] = None" for m in simulator.EXTRA_MODULES)
    code = f"import sys; {hide}; from cli.main import main; sys.exit(main(sys.argv[1:]))"
    args = [a.format(home=tmp_path) for a in command]
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"runbooks {command[0]}: ")
    assert "pip install 'llm-runbooks[simulator]'" in lines[0] and "jsonpatch, cryptography" in lines[0]
    assert not list(tmp_path.iterdir()), "nothing started, nothing written"


def test_benchmarks_import_the_standins_without_sys_path_edits() -> None:
    for path in (ROOT / "bench").glob("*.py"):
        assert "sys.path" not in path.read_text(), path.name
        assert "from tests" not in path.read_text(), path.name
    # As bench/README.md runs them: modules, from the repository root.
    done = subprocess.run(
        [sys.executable, "-m", "bench.alert_storm", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


# ---- the engine and its playbooks ---------------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _product_modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PRODUCT for p in sorted((ROOT / package).rglob("*.py"))}


def _import_graph() -> dict[str, set[str]]:
    """module -> the product modules it imports when it runs (top level and inside functions; imports
    under `if TYPE_CHECKING:` are left out). `from package import name` is an edge to the submodule
    when `name` is one, else to the package."""
    modules = _product_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        package = name if path.stem == "__init__" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        typing_only = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    if f"{base}.{alias.name}" in modules:
                        edges.add(f"{base}.{alias.name}")
                    elif base in modules:
                        edges.add(base)
        graph[name] = edges - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_in_the_product_code() -> None:
    graph = _import_graph()
    assert "workflows.incident.incident" in graph and graph["workflows.playbooks.catalog"], "the graph is read"
    assert not _cycles(graph), _cycles(graph)


def test_the_import_circle_check_sees_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_root_of_workflows_holds_packages_only() -> None:
    loose = sorted(p.name for p in (ROOT / "workflows").iterdir() if p.suffix == ".py" and p.name != "__init__.py")
    assert not loose, f"modules at the root of workflows/: {loose}"
    packages = {p.name for p in (ROOT / "workflows").iterdir() if (p / "__init__.py").exists()}
    assert {"incident", "playbooks", "checks"} <= packages


def test_the_engine_imports_nothing_of_any_playbook() -> None:
    graph = _import_graph()
    engine = {m for m in graph if m == "workflows.incident" or m.startswith("workflows.incident.")}
    wrong = {
        m: sorted(e for e in graph[m] if e.startswith(("workflows.playbooks", "workflows.checks"))) for m in engine
    }
    assert not {m: e for m, e in wrong.items() if e}, wrong


def test_nothing_outside_examples_names_an_example_package() -> None:
    """A team's playbook package needs no edit here: no tracked file outside examples/ names one
    (its distribution, its Python package, its entry points, its playbooks' or drills' names)."""
    names: set[str] = set()
    for pyproject in sorted((ROOT / "examples").glob("*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        names.add(project["name"])
        for entry, value in project.get("entry-points", {}).get("llm_runbooks.playbooks", {}).items():
            names |= {entry, value.split(".")[0].split(":")[0]}
    for example in (ROOT / "examples").iterdir():
        names.add(example.name)
    assert names, "examples/ holds no package"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    named = {
        (path, name)
        for path in tracked
        if not path.startswith("examples/")
        for name in names
        if (ROOT / path).is_file() and name in (ROOT / path).read_text(errors="replace")
    }
    assert not named, sorted(named)


# ---- activities: named by the system each module talks to -----------------------------------------

# The systems activities/ talks to. A module is named by one (`http.py`, `temporal_coordinator.py`,
# `slack_models.py`), or sits in the system's package (`kube/`), there named by the Kubernetes object
# family it acts on. `models.py` holds what every system's modules share.
SYSTEMS = {"kube", "kserve", "prometheus", "slack", "http", "nvidia_smi", "temporal", "pagerduty"}
KUBE_FAMILIES = {
    "api",
    "models",
    "pods",
    "deployments",
    "daemonsets",
    "nodes",
    "gpus",
    "gpu_probes",
    "llmdeployments",
    "claims",
    "services",
}


def _named_by_a_system(stem: str) -> bool:
    base = stem.removesuffix("_models")
    return any(base == s or base.startswith(f"{s}_") for s in SYSTEMS)


def test_every_activity_module_is_named_by_the_system_it_talks_to() -> None:
    root = ROOT / "activities"
    wrong = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if len(parts) == 1:
            ok = parts[0] in ("__init__", "models") or _named_by_a_system(parts[0])
        else:
            family = parts[-1].removesuffix("_models")
            ok = (
                len(parts) == 2
                and parts[0] in SYSTEMS
                and (parts[0] != "kube" or parts[-1] == "__init__" or family in KUBE_FAMILIES)
            )
        if not ok:
            wrong.append(str(path.relative_to(ROOT)))
    assert not wrong, f"activity modules not named by a system ({sorted(SYSTEMS)}) or a Kubernetes family: {wrong}"
    # the check itself: a playbook's name is not a system's
    assert _named_by_a_system("temporal_coordinator") and _named_by_a_system("slack_models")
    assert not any(map(_named_by_a_system, ("memory", "latency_models", "rollouts", "gpu_remediation")))


def _activity_classes() -> dict[str, list[str]]:
    """class name -> the activity modules that define a class of that name."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "activities").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                found.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
    return found


def test_one_model_per_concept_in_activities() -> None:
    """No two activity modules define a model of the same name (two `ScaleRequest`s, two `PodRef`s), and the
    base of every request model (unknown fields are errors) is written once, in activities/models.py."""
    twice = {name: paths for name, paths in _activity_classes().items() if len(paths) > 1}
    assert not twice, twice
    forbid = [
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / "activities").rglob("*.py"))
        if 'extra="forbid"' in p.read_text()
    ]
    assert forbid == ["activities/models.py"], forbid


# ---- the tests' own layout ----------------------------------------------------------------------------


def _test_modules_imported(path: Path, root: Path = ROOT) -> set[str]:
    """The test modules (`tests.test_*`) that `path` imports anywhere in it: `import tests.test_x`,
    `from tests.test_x import ...`, `from tests import test_x` and the relative forms from tests/."""
    imported: set[str] = set()
    package = ".".join(path.relative_to(root).parent.parts)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        imported |= {".".join(n.split(".")[:2]) for n in names if n.startswith("tests.test_")}
    return imported


def test_no_test_module_imports_another_and_shared_code_lives_in_tests_helpers() -> None:
    modules = sorted((ROOT / "tests").glob("test_*.py"))
    assert len(modules) > 50, "the test modules are read"
    wrong = {
        p.name: sorted(found)
        for p in [*modules, *(ROOT / "tests" / "helpers").glob("*.py")]
        if (found := _test_modules_imported(p))
    }
    assert not wrong, f"move what these import into tests/helpers/: {wrong}"
    loose = sorted(
        p.name
        for p in (ROOT / "tests").glob("*.py")
        if not p.name.startswith("test_") and p.name not in ("__init__.py", "conftest.py")
    )
    assert not loose, f"shared test code outside tests/helpers/: {loose}"


def test_the_test_import_check_sees_each_form(tmp_path: Path) -> None:
    probe = tmp_path / "tests" / "test_probe.py"
    probe.parent.mkdir()
    probe.write_text(
        "\n".join(
            [
                "import tests.test_cli",
                "from tests.test_crash import x",
                "from tests import test_rbac",
                "from . import test_drills",
                "from .test_webhook import y",
                "def f():",
                "    from tests.test_deploy import z",
                "from tests.helpers import audit",
                "import tests.helpers.waiting",
                "from tests.helpers.audit import writes",
            ]
        )
        + "\n"
    )
    assert _test_modules_imported(probe, tmp_path) == {
        "tests.test_cli",
        "tests.test_crash",
        "tests.test_rbac",
        "tests.test_drills",
        "tests.test_webhook",
        "tests.test_deploy",
    }


# ---- the engine's API ---------------------------------------------------------------------------------


def _engine_imports(path: Path) -> set[str]:
    """The workflows.incident modules `path` imports, under `if TYPE_CHECKING:` too."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("workflows.incident"):
            found |= {
                f"{node.module}.{a.name}" if node.module == "workflows.incident" else node.module for a in node.names
            }
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("workflows.incident")}
    return found


def test_engine_helpers_take_what_they_need_not_the_incident() -> None:
    """Only the incident module and the package's API hold the `Incident`; its helpers are given the
    state, the journal, the guard, the status board, the Slack side."""
    wrong = {
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / "workflows" / "incident").glob("*.py"))
        if p.stem not in ("incident", "__init__")
        and _engine_imports(p) & {"workflows.incident.incident", "workflows.incident.Incident"}
    }
    assert not wrong, wrong


def test_playbooks_use_the_engine_through_its_api() -> None:
    """A playbook (and a scheduled check) imports the engine as `from workflows.incident import ...`,
    only names of its `__all__`."""
    import workflows.incident as engine

    api = {f"workflows.incident.{name}" for name in engine.__all__}
    wrong = {}
    for package in ("playbooks", "checks"):
        for path in sorted((ROOT / "workflows" / package).rglob("*.py")):
            if bad := sorted(_engine_imports(path) - api):
                wrong[str(path.relative_to(ROOT))] = bad
    assert not wrong, wrong
    assert all(hasattr(engine, name) for name in engine.__all__)
