import os

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """Raw folders of a tiny demo world, generated once per test session (treat as read-only)."""
    from assets.synthetic import generate_world

    root = tmp_path_factory.mktemp("tiny_world") / "raw"
    generate_world(root, size="tiny", seed=0)
    return root
