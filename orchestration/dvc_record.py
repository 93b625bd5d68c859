"""DVC's record of what Dagster runs made: after `dozens demo` (or `dozens convert`) materialises steps in a
DVC project, the matching dvc.yaml stages are committed (`dvc commit`), so dvc.lock names the outputs now
on disk, DVC's cache holds them (`dvc push`, `dvc checkout` of this revision later), and `dvc status` agrees
with the runner that nothing is stale.

DVC lives in its own virtualenv (its antlr4 pin breaks Dagster's selection parser: docs in the Makefile),
so it is called as a program: ``$DOZENS_DVC``, else the project's ``.dvc-venv/bin/dvc``, else ``dvc`` on PATH.
``DOZENS_DVC=off`` turns the recording off (DVC hashes a stage's dependencies, a whole raw release too).
"""

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from assets.locations import is_remote

DVC_ENV = "DOZENS_DVC"
BATCH_COMMIT_SCRIPT = Path(__file__).with_name("dvc_commit_stages.py")  # run by DVC's own Python


def dvc_stage_name(asset: str, partition: str | None) -> str:
    """The dvc.yaml stage of a step: a partition is a ``foreach`` item (orchestration/dvc_file.py)."""
    return f"{asset}@{partition}" if partition else asset


def dvc_executable(project: Path) -> str | None:
    for candidate in (os.environ.get(DVC_ENV), project / ".dvc-venv" / "bin" / "dvc",
                      Path(__file__).resolve().parent.parent / ".dvc-venv" / "bin" / "dvc"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return shutil.which("dvc")


def is_dvc_project(config) -> bool:
    project = config.path.parent
    return not is_remote(config.store_root) and (project / ".dvc").is_dir() and (project / "dvc.yaml").is_file()


def commit_to_dvc(config, steps, report: Callable[[str], None] = print) -> bool:
    """``dvc commit`` the stages of ``steps`` ((asset, partition) pairs that ran) when the config's folder is a
    DVC project; a problem is reported, never raised (the run itself succeeded). True when committed."""
    if not steps or not is_dvc_project(config) or os.environ.get(DVC_ENV) == "off":
        return False
    project = config.path.parent
    dvc = dvc_executable(project)
    if dvc is None:
        report(f"DVC is not installed here, so dvc.lock was not updated: run `dvc commit` in {project} "
               f"(or set {DVC_ENV})")
        return False
    names = list(dict.fromkeys(dvc_stage_name(asset, partition) for asset, partition in steps))
    dvc_python = Path(dvc).parent / "python"
    # DVC installed with pip: one session reads and writes dvc.lock once. The command is the fallback (another
    # DVC version may have moved the calls the script makes): the same record, slower
    commands = [[str(dvc_python), str(BATCH_COMMIT_SCRIPT)]] if dvc_python.is_file() else []
    commands.append([dvc, "commit", "--force", "--quiet"])
    for command in commands:
        done = subprocess.run([*command, *names], cwd=project, capture_output=True, text=True,
                              env={**os.environ, "DVC_NO_ANALYTICS": "1"})
        if done.returncode == 0:
            report(f"dvc: recorded {len(names)} stage(s) in dvc.lock and the DVC cache")
            return True
    report(f"dvc commit of {', '.join(names)} failed, so dvc.lock and the DVC cache may not record this run "
           f"(`dvc status` then calls those stages changed):\n    "
           + (done.stderr or done.stdout).strip().replace("\n", "\n    "))
    return False
