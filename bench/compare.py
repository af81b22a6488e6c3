"""Before and after, in one run: a benchmark at an older commit and at the working tree, back to back.

    .venv/bin/python -m bench.compare REV incident_cost --incidents 200 --rate 10

checks REV out into a throwaway git worktree, runs `python -m bench.<name> ARGS --tag before`
there (its own worker and triggers, so the old code runs end to end), then `--tag after` here,
and writes bench/results/<name>_before_after.json: both figures side by side, each with its
commit, plus the load average between them. The bench must accept `--tag`, write
bench/results/<name>_<tag>.json, and exist at REV.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def run_bench(root: Path, name: str, args: list[str], tag: str) -> dict:
    # `python -m` imports from the working directory first: the checkout's own packages win
    # over the editable install of this one.
    # The checkout has no venv of its own: this one's tools (temporal, py-spy) go on its PATH.
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run([sys.executable, "-m", f"bench.{name}", *args, "--tag", tag], cwd=root, env=env, check=True)
    return json.loads((root / "bench" / "results" / f"{name}_{tag}.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", help="the 'before' commit (any git revision)")
    parser.add_argument("bench", help="the benchmark module's name under bench/, e.g. incident_cost")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    ns = parser.parse_args()
    before_commit = git("rev-parse", ns.rev)
    after_commit = git("rev-parse", "HEAD") + (
        "+changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    )
    folder = Path(tempfile.mkdtemp(prefix="bench-compare-")) / "before"
    git("worktree", "add", "--detach", str(folder), before_commit)
    try:
        before = run_bench(folder, ns.bench, ns.args, "before")
        load_between = [round(x, 2) for x in os.getloadavg()]
        after = run_bench(ROOT, ns.bench, ns.args, "after")
    finally:
        git("worktree", "remove", "--force", str(folder))
    out = ROOT / "bench" / "results" / f"{ns.bench}_before_after.json"
    figures = {
        "before": {"commit": before_commit, **before},
        "after": {"commit": after_commit, **after},
        "load_average_between": load_between,
    }
    out.write_text(json.dumps(figures, indent=2) + "\n")
    (ROOT / "bench" / "results" / f"{ns.bench}_after.json").unlink(missing_ok=True)
    print(json.dumps({k: figures[k] for k in ("load_average_between",)}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
