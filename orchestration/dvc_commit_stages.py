"""Commit dvc.yaml stages in one DVC session: dvc.lock is read once and written once. Run by DVC's own
Python (the .dvc-venv: DVC cannot share the project's virtualenv) from the DVC project's folder:

    .dvc-venv/bin/python orchestration/dvc_commit_stages.py STAGE [STAGE ...]

Why not `dvc commit --force STAGES`: it parses dvc.lock (a pure-Python YAML round trip) twice per stage
named and rewrites it once per stage; with the demo's 56 stages and their code dependencies that was about
4 s per stage, minutes per demo. The calls here are the ones that command makes per stage
(dvc/repo/commit.py), on stages loaded once, without the run cache. Committing links each output, a folder's files too, to the
cache (.dvc/config's link types). A stage missing from dvc.yaml ends it with a message naming the stage;
on any failure the caller (orchestration/dvc_record.py) falls back to the command.
"""

import sys
from itertools import groupby


def commit_stages(stage_names: list[str]) -> None:
    from dvc.repo import Repo

    repo = Repo(".")
    with repo.lock:
        stages = {stage.addressing: stage for stage in repo.index.stages}
        unknown = [name for name in stage_names if name not in stages]
        if unknown:
            raise SystemExit(f"dvc.yaml has no stage {unknown[0]!r}")
        chosen = [stages[name] for name in dict.fromkeys(stage_names)]
        for stage in chosen:
            # as `dvc commit --force`: the outputs on disk are the run's, whatever the lock said. Not saved to
            # DVC's run cache (`dvc repro` restoring outputs of an earlier run by its dependencies' hashes): that
            # hashed every stage's dependencies again, half of the record's time; dvc.lock and the cache hold
            # the outputs either way, and stages DVC itself runs still fill the run cache
            stage.save(run_cache=False)
            stage.commit(relink=True)
        by_file = lambda stage: stage.dvcfile.path  # noqa: E731
        for _, group in groupby(sorted(chosen, key=by_file), key=by_file):
            group = list(group)
            group[0].dvcfile.dump_stages(group, update_pipeline=False)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(f"usage: {sys.argv[0]} STAGE [STAGE ...]")
    commit_stages(sys.argv[1:])
