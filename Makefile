# One-command entry points (see README). Two virtualenvs: DVC pins antlr4 4.9 which breaks Dagster's
# asset-selection parser, so DVC lives in its own (.dvc-venv) and calls the project's `dagster`.
PYTHON ?= python3
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export GX_ANALYTICS_ENABLED := false
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup real-recording-cache demo test repro dagster-ui clean-data

# the two environments and the download cache are independent: built side by side. --no-compile: modules
# are byte-compiled when first imported, not all of torch's and DVC's at install time
PIP_INSTALL = pip install -q --disable-pip-version-check --no-compile

setup:
	$(MAKE) -j3 .venv/.installed .dvc-venv/.installed real-recording-cache

.venv/.installed: pyproject.toml
	$(PYTHON) -m venv .venv
	.venv/bin/$(PIP_INSTALL) -e ".[test]"
	touch $@

# [s3]: `dvc push`/`pull` to an S3 (or S3-compatible) remote
DVC_REQUIREMENT = dvc[s3]>=3.60,<4

.dvc-venv/.installed: Makefile
	$(PYTHON) -m venv .dvc-venv
	.dvc-venv/bin/$(PIP_INSTALL) "$(DVC_REQUIREMENT)"
	touch $@

# the real recording's inputs from PyPI (the Pose2Sim wheel, MediaPipe's virtualenv; in data/cache or
# $DOZENS_CACHE), fetched beside the installs (standard library only): the demo and the tests read them
real-recording-cache:
	$(PYTHON) -m assets.real.cache

# the demo records what it built with DVC (orchestration/dvc_record.py): both venvs
demo: setup
	.venv/bin/dozens demo

# two workers, each taking whole test files (module fixtures are built once): the suite is mostly
# single-threaded Python. Files go out in collection order, longest first (tests/conftest.py), so the
# longest (test_dvc.py, DVC subprocesses) runs beside the rest instead of alone at the end
test: setup
	.venv/bin/pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15

# dvc.yaml's demo_world stage writes the demo world
repro: setup
	.dvc-venv/bin/dvc repro

dagster-ui: setup
	.venv/bin/dagster dev -m orchestration.definitions -h 127.0.0.1 -p 3070

clean-data:
	rm -rf data/stores .dagster_home
