"""What a converter module declares, and the options a dataset entry may give it.

A converter is a module (``assets/converters/<module>.py``, registered in ``assets.converters``) with:

    NAME: str                  the ``converter:`` value in params.yaml
    VERSION: str               bump when its output changes (re-converts every dataset that uses it)
    SKELETON: str | None       the skeleton format of its examples (assets/skeleton_formats.json), or None for
                               a converter of many formats (one generic layout), which then also has
    skeleton_of(raw_root: Path) -> str
                               the format of the examples in that raw folder (e.g. named by a file in it)
    DEFAULT_FRAME_STEP: int    keep every n-th annotated frame unless the entry says otherwise
    CAMERAS: tuple[str, ...]   every camera name of the release (empty: no camera choice)
    DEFAULT_CAMERAS: tuple     the cameras used unless the entry says otherwise (the paper's choice)
    EXTRA_OPTIONS: dict        converter-specific options -> their defaults (optional)
    read_examples(raw_root: Path, options: ConverterOptions) -> Iterable[RawExample]

``read_examples`` parses annotation files only; images are loaded later by ``convert`` (from image files,
or decoded from videos), so it should yield examples lazily, and, for videos, the frames of one video
one after another in ascending order (the decoder then never seeks back). ``convert`` calls it twice
(to count, then to write): it must yield the same examples in the same order each time. Importing a
converter module must have no side effects and import no heavy or optional package at module level.
Ask ``converter_skeleton`` for a converter's format rather than reading ``SKELETON``.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Protocol, runtime_checkable

COMMON_OPTIONS = ("frame_step", "cameras")


class OptionError(ValueError):
    """A dataset entry gives its converter an option it does not know, or a bad value for ``option``."""

    def __init__(self, option: str, problem: str):
        super().__init__(f"option {option!r} {problem}")
        self.option, self.problem = option, problem


@dataclass(frozen=True)
class ConverterOptions:
    frame_step: int = 1
    cameras: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)

    def keeps_frame(self, frame: int) -> bool:
        return frame % self.frame_step == 0

    def as_dict(self) -> dict:
        """JSON-able, for signatures and store attributes."""
        return {"frame_step": self.frame_step, "cameras": list(self.cameras), **self.extra}


@runtime_checkable
class Converter(Protocol):
    NAME: str
    VERSION: str
    SKELETON: str | None

    def read_examples(self, raw_root: Path, options: ConverterOptions) -> Iterable: ...


def known_options(converter: ModuleType) -> list[str]:
    return [*COMMON_OPTIONS, *getattr(converter, "EXTRA_OPTIONS", {})]


def resolve_options(converter: ModuleType, given: dict | None) -> ConverterOptions:
    """The options for ``converter`` from a dataset entry's settings (``given``), with its defaults."""
    given = dict(given or {})
    known = known_options(converter)
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise OptionError(unknown[0], f"is not an option of converter {converter.NAME!r}; its options: "
                                      f"{', '.join(known)}")
    frame_step = given.pop("frame_step", getattr(converter, "DEFAULT_FRAME_STEP", 1))
    if isinstance(frame_step, bool) or not isinstance(frame_step, int) or frame_step < 1:
        raise OptionError("frame_step", f"must be a whole number >= 1 (1 keeps every frame), got {frame_step!r}")
    all_cameras = tuple(getattr(converter, "CAMERAS", ()))
    cameras = given.pop("cameras", None)
    if cameras is None:
        cameras = tuple(getattr(converter, "DEFAULT_CAMERAS", all_cameras))
    else:
        if isinstance(cameras, (str, int)):
            cameras = [cameras]
        if not isinstance(cameras, (list, tuple)) or not cameras:
            raise OptionError("cameras", f"must be a non-empty list of camera names, got {cameras!r}")
        cameras = tuple(str(c) for c in cameras)
        if not all_cameras:
            raise OptionError("cameras", f"does not apply: converter {converter.NAME!r} has no camera choice")
        unknown_cameras = [c for c in cameras if c not in all_cameras]
        if unknown_cameras:
            raise OptionError("cameras", f"names {unknown_cameras}, which {converter.NAME!r} does not have; "
                                         f"its cameras: {', '.join(all_cameras)}")
    extra = {**getattr(converter, "EXTRA_OPTIONS", {}), **given}
    return ConverterOptions(frame_step=frame_step, cameras=cameras, extra=extra)


def converter_skeleton(converter: ModuleType, raw_root) -> str:
    """The skeleton format of the examples ``converter`` reads from ``raw_root``."""
    if isinstance(converter.SKELETON, str):
        return converter.SKELETON
    return converter.skeleton_of(Path(raw_root))


def check_converter(converter: ModuleType) -> ModuleType:
    """Refuse a module that does not declare what every converter must."""
    missing = [name for name in ("NAME", "VERSION", "SKELETON", "read_examples") if not hasattr(converter, name)]
    per_dataset = not missing and not isinstance(converter.SKELETON, str)
    if per_dataset and not callable(getattr(converter, "skeleton_of", None)):
        missing = ["skeleton_of (SKELETON is not a format name)"]
    if missing:
        raise TypeError(f"converter module {converter.__name__} lacks {missing} (see assets/converters/interface.py)")
    return converter
