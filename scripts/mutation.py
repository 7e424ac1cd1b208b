"""Mutation-test one core module against its own unit tests with mutmut.

    pip install mutmut                         # a developer tool, not a dependency of acechat
    python scripts/mutation.py splitting       # core/splitting.py against tests/test_splitting.py
    python scripts/mutation.py pacing.limits 'acechat.core.pacing.limits.xǁTokenBucketǁ*'   # only these mutants

mutmut reads its settings from the pyproject.toml of the directory it runs in and keeps its state
there, and its settings name one set of tests for every mutant. So each module gets its own directory,
.mutmut/MODULE, with links to the sources and a pyproject.toml that is this project's plus a
[tool.mutmut] section for that module. Every run starts afresh, because mutmut keeps a surviving
mutant's verdict when the tests change. The script prints the survivors; see one with
`cd .mutmut/MODULE && mutmut show NAME`.
"""

from __future__ import annotations

import argparse
import fnmatch
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("acechat", "tests")


def settings(module: str) -> str:
    return f"""
[tool.mutmut]
source_paths = ["acechat"]
only_mutate = ["acechat/core/{module.replace(".", "/")}.py"]
pytest_add_cli_args = ["-p", "no:cacheprovider"]
pytest_add_cli_args_test_selection = ["tests/test_{module.replace(".", "_")}.py"]
use_git_change_detection = false
"""


def prepare(module: str) -> Path:
    workdir = ROOT / ".mutmut" / module
    shutil.rmtree(workdir / "mutants", ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    for name in PACKAGES:
        link = workdir / name
        if not link.is_symlink():
            link.symlink_to(ROOT / name, target_is_directory=True)
    project = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    (workdir / "pyproject.toml").write_text(project + settings(module), encoding="utf-8")
    return workdir


def results(mutmut: str, workdir: Path, patterns: list[str]) -> Counter[str]:
    """Count mutants by status, printing every one that was not killed."""
    out = subprocess.run(
        [mutmut, "results", "--all", "true"], cwd=workdir, capture_output=True, text=True, check=True
    ).stdout
    counts: Counter[str] = Counter()
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if not sep or (patterns and not any(fnmatch.fnmatch(name, p) for p in patterns)):
            continue
        counts[status] += 1
        if status not in ("killed", "timeout"):
            print(f"  {status}: {name}")
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("module", help="a module of acechat/core/ with its own tests/test_MODULE.py")
    parser.add_argument("patterns", nargs="*", help="only the mutants whose names match these globs")
    args = parser.parse_args()
    module: str = args.module
    patterns: list[str] = args.patterns
    source = f"acechat/core/{module.replace('.', '/')}.py"
    for path in (ROOT / source, ROOT / "tests" / f"test_{module.replace('.', '_')}.py"):
        if not path.is_file():
            parser.error(f"{path.relative_to(ROOT)} does not exist")
    mutmut = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or shutil.which("mutmut")
    if mutmut is None:
        parser.error("mutmut is not installed: pip install mutmut")
    workdir = prepare(module)
    run = subprocess.run([mutmut, "run", *patterns], cwd=workdir, check=False)
    if run.returncode != 0:
        return run.returncode
    counts = results(mutmut, workdir, patterns)
    total = sum(counts.values())
    killed = counts["killed"] + counts["timeout"]
    scope = source + (f" ({', '.join(patterns)})" if patterns else "")
    print(f"{scope}: {killed} of {total} mutants killed ({killed / max(total, 1):.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
