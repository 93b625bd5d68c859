import os
import shutil
import sqlite3

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@event.listens_for(Engine, "connect")
def _sqlite_without_fsync(connection, _record):
    """The Dagster instances of the tests are thrown away: their SQLite event logs need not survive a power
    cut, and an fsync per event is a large share of a tiny pipeline's time. Tests whose runs stay in one
    process use ``DagsterInstance.ephemeral()`` instead: SQLite storage opens a connection per query and a
    database per run, about a second per tiny run; worker processes and the CLI need the SQLite one."""
    if isinstance(connection, sqlite3.Connection):
        connection.execute("PRAGMA synchronous=OFF")

# The longest test files, longest first. `make test` hands whole files to two workers in collection order;
# started first, these run beside the many short files instead of one of them running alone at the end.
LONGEST_FILES = ("test_dvc.py", "test_automation.py", "test_pipeline.py", "test_parallel.py",
                 "test_real_pipeline.py", "test_distributed.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: position for position, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept otherwise


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """Raw folders of a tiny demo world, generated once per test session (treat as read-only)."""
    from assets.synthetic import generate_world

    root = tmp_path_factory.mktemp("tiny_world") / "raw"
    generate_world(root, size="tiny", seed=0)
    return root


@pytest.fixture
def project_copy(tmp_path, monkeypatch):
    """The project's packages in a scratch folder that code versions are read from, to edit freely."""
    from orchestration import code_versions

    copy = tmp_path / "project"
    for package in code_versions.PROJECT_PACKAGES:
        shutil.copytree(code_versions.PROJECT_ROOT / package, copy / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(code_versions, "PROJECT_ROOT", copy)
    code_versions.module_closure.cache_clear()
    yield copy
    code_versions.module_closure.cache_clear()


@pytest.fixture
def raw(pristine, tmp_path):
    """A private copy of the requesting test module's raw release tree (its ``pristine`` fixture), safe to damage."""
    from pathlib import Path

    return Path(shutil.copytree(pristine, tmp_path / "raw"))


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """An S3 API on 127.0.0.1 (moto), found through the AWS environment variables; see tests/object_store.py."""
    from object_store import loopback_s3

    with loopback_s3(tmp_path_factory.mktemp("object_cache")) as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
def artifact_root(request, tmp_path):
    """Where a test's artifacts go: a local folder, then a fresh prefix on the loopback S3."""
    if request.param == "local":
        return tmp_path
    from assets.locations import location
    from object_store import fresh_prefix

    request.getfixturevalue("s3_endpoint")
    return location(fresh_prefix(request.node.name.split("[")[0][:40]))


@pytest.fixture(scope="module")
def single_torch_thread():
    """Small autoencoder fits: extra intra-op threads only add synchronisation (and stall on a busy machine)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
