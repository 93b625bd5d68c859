"""Conversion at scale: worker processes, bounded batches, and a killed conversion that goes on where it stopped."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from assets.converters import CONVERTERS, common, get_converter
from assets.converters.common import convert
from assets.converters.interface import OptionError, resolve_options
from assets.store import open_store
from assets.versions import WRITING_MARK

SMALL_BATCH = 4  # examples per batch in these tests (a real conversion writes one image shard per batch)


def _arrays(path):
    store = open_store(path)
    return {name: store.load(name) for name in store.array_names}


def _assert_same_store(a, b):
    first, second = _arrays(a), _arrays(b)
    assert sorted(first) == sorted(second)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def test_worker_processes_write_the_same_store(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setattr(common, "IMAGES_PER_SHARD", SMALL_BATCH)
    converter = get_converter("demo_3dhp")
    alone = convert(converter, tiny_world / "demo_3dhp", tmp_path / "alone", image_size=32)
    assert alone.num_examples > 2 * SMALL_BATCH  # several batches in flight at once
    with_workers = convert(converter, tiny_world / "demo_3dhp", tmp_path / "workers", image_size=32, workers=2)
    _assert_same_store(alone.path, with_workers.path)


def test_a_conversion_stopped_early_ends_its_workers_where_sigterm_is_ignored(tiny_world):
    # e.g. a background job: SIGINT ignored, and Dagster gives SIGTERM the SIGINT handler
    script = textwrap.dedent(f"""
        import signal
        from pathlib import Path
        from assets.converters import common, get_converter
        from assets.converters.interface import resolve_options
        from assets.skeletons import get_skeleton
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        converter = get_converter("demo_3dhp")
        examples = common._examples(converter, Path({str(tiny_world / "demo_3dhp")!r}),
                                    resolve_options(converter, {{}}), get_skeleton(converter.SKELETON))
        cropped = common._cropped(common._batches(examples, 2, skip=0), 32, workers=2)
        next(cropped)
        cropped.close()  # the consumer stops (a failed write): the pool's workers must be ended
        print("ended", flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0 and "ended" in done.stdout, done.stderr


def test_a_killed_conversion_goes_on_from_the_batches_already_written(tiny_world, tmp_path, monkeypatch):
    location = tmp_path / "store"
    killer = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from assets.converters import common, get_converter
        from assets.store import StoreWriter
        common.IMAGES_PER_SHARD = {SMALL_BATCH}
        real_mark = StoreWriter.mark_written

        def mark_then_die(self, count):
            real_mark(self, count)
            if count >= 2 * {SMALL_BATCH}:
                os._exit(9)  # as abrupt as kill -9: no clean-up runs

        StoreWriter.mark_written = mark_then_die
        common.convert(get_converter("demo_h36m"), {str(tiny_world / "demo_h36m")!r}, {str(location)!r},
                       image_size=32, data_version="inputs-v1")
    """)
    assert subprocess.run([sys.executable, "-c", killer]).returncode == 9
    assert len(list(location.glob(f"*{WRITING_MARK}"))) == 1 and not (location / "current.json").exists()

    monkeypatch.setattr(common, "IMAGES_PER_SHARD", SMALL_BATCH)
    cropped = []
    real_crop = common._crop_batch
    monkeypatch.setattr(common, "_crop_batch", lambda batch, size: cropped.extend(batch) or real_crop(batch, size))
    messages = []
    resumed = convert(get_converter("demo_h36m"), tiny_world / "demo_h36m", location, image_size=32,
                      data_version="inputs-v1", progress=messages.append)
    assert any(f"going on from example {2 * SMALL_BATCH} of {resumed.num_examples}" in m for m in messages)
    assert len(cropped) == resumed.num_examples - 2 * SMALL_BATCH  # the written batches were not redone
    fresh = convert(get_converter("demo_h36m"), tiny_world / "demo_h36m", tmp_path / "fresh", image_size=32)
    _assert_same_store(resumed.path, fresh.path)
    assert not list(location.glob(f"*{WRITING_MARK}")) and not (resumed.path / "writer_progress.json").exists()


def test_a_conversion_of_other_inputs_does_not_take_over_a_dead_one(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setattr(common, "IMAGES_PER_SHARD", SMALL_BATCH)
    location = tmp_path / "store"
    dead = location / "20200101T000000-inputs-v1-00000000.zarr"
    dead.mkdir(parents=True)
    (location / f"{dead.name}{WRITING_MARK}").write_text('{"host": "x", "pid": 1, "data_version": "inputs-v1"}')
    messages = []
    convert(get_converter("demo_h36m"), tiny_world / "demo_h36m", location, image_size=32,
            data_version="inputs-v2", progress=messages.append)
    assert not any("going on from" in m for m in messages)


def test_frame_step_and_cameras_options_select_examples(tiny_world, tmp_path):
    converter = get_converter("demo_h36m")
    everything = open_store(convert(converter, tiny_world / "demo_h36m", tmp_path / "all", image_size=32).path)
    cameras = everything.attrs["codes"]["camera"]
    chosen = open_store(convert(converter, tiny_world / "demo_h36m", tmp_path / "some", image_size=32,
                                options={"frame_step": 2}).path)
    assert (chosen.load("frame") % 2 == 0).all()
    assert len(chosen) == int((everything.load("frame") % 2 == 0).sum())
    assert chosen.attrs["converter_options"]["frame_step"] == 2


def test_every_registered_converter_declares_the_interface():
    for name in CONVERTERS:
        converter = get_converter(name)
        assert converter.NAME == name
        options = resolve_options(converter, None)
        assert options.frame_step >= 1
        assert set(options.cameras) <= set(getattr(converter, "CAMERAS", ()))


@pytest.mark.parametrize("given, message", [
    ({"frame_stp": 2}, "'frame_stp' is not an option of converter 'demo_h36m'; its options: frame_step, cameras"),
    ({"frame_step": 0}, "'frame_step' must be a whole number >= 1"),
    ({"cameras": ["c9"]}, "'cameras' does not apply"),
])
def test_bad_options_say_which_and_what_is_known(given, message):
    with pytest.raises(OptionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_options(get_converter("demo_h36m"), given)
