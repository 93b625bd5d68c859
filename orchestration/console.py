"""What a person sees in the terminal while the pipeline runs: one line per step, a live progress line.

Dagster's own event stream (every step start, output, check and log message) goes to the instance, where
the UI shows it, and to a log file per run (``write_run_log``); the terminal gets the steps' progress
messages on one line that is rewritten in place (on a terminal) or printed every few seconds (in a log).
"""

import io
import os
import sys
import time

from assets.atomic_files import write_bytes_atomically
from assets.locations import Location

_PRINT_EVERY_SECONDS = 10.0  # when the output is not a terminal: one progress line per step every so often


class _ProgressLine:
    def __init__(self):
        self._last_printed = 0.0
        self._shown = False

    def show(self, text: str) -> None:
        stream = sys.stderr
        if stream.isatty():
            width = max(20, _terminal_width() - 1)
            stream.write("\r\033[K" + text[:width])
            stream.flush()
            self._shown = True
        elif time.monotonic() - self._last_printed >= _PRINT_EVERY_SECONDS:
            stream.write(text + "\n")
            stream.flush()
            self._last_printed = time.monotonic()

    def clear(self) -> None:
        if self._shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self._shown = False
        self._last_printed = 0.0


PROGRESS = _ProgressLine()


def _terminal_width() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except OSError:
        return 100


def step_progress(context):
    """A ``progress`` callback for plain-Python code run by an asset: the Dagster log and the progress line."""
    label = context.asset_key.to_user_string() + (f"[{context.partition_key}]" if context.has_partition_key else "")

    def report(message) -> None:
        context.log.info(str(message))
        PROGRESS.show(f"  {label}: {message}")

    return report


def write_run_log(instance, run_id: str, path) -> Location:
    """The run's Dagster event log as text (the instance keeps it too, for the UI)."""
    out = io.StringIO()
    for entry in instance.all_logs(run_id):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.timestamp))
        event = entry.dagster_event
        kind = event.event_type_value if event else "LOG"
        message = (event.message if event is not None and event.message else None) or entry.user_message
        out.write(f"{stamp} {entry.level if isinstance(entry.level, str) else _level_name(entry.level):<7} "
                  f"{entry.step_key or '-'} {kind}: {message}\n")
        if entry.dagster_event and entry.dagster_event.event_type_value == "STEP_FAILURE":
            error = entry.dagster_event.step_failure_data.error
            while error is not None:
                out.write("".join(error.stack) + error.message + "\n")
                error = error.cause
    return write_bytes_atomically(path, out.getvalue().encode())


def _level_name(level: int) -> str:
    import logging

    return logging.getLevelName(level)
