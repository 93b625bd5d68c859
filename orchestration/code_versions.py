"""Code versions from the source itself: a stage's version is a hash of the project modules it runs.

A stage names the modules whose functions it calls (orchestration/stages.py); their imports are followed,
through the project's own packages only, and the files found (plus the data files the code reads) are
hashed byte for byte. So any edit of that code, even of a comment, makes the stage stale, in
``dozens demo`` and in ``dvc repro`` alike (dvc.yaml lists the same files as the stage's dependencies).
"""

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("assets", "model", "evaluation", "orchestration")
# data files that code reads at run time, by the package that reads them
DATA_FILES = {"assets": ("assets/skeleton_formats.json",)}


def module_file(module: str) -> Path | None:
    """The source file of a project module (a package's __init__.py), or None outside the project."""
    if module.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = PROJECT_ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(file: Path, module: str) -> frozenset[str]:
    """Project modules imported anywhere in ``file`` (also inside functions: lazy imports run too)."""
    stat = file.stat()
    return _parsed_imports(file, module, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=None)
def _parsed_imports(file: Path, module: str, mtime_ns: int, size: int) -> frozenset[str]:
    """``_imports`` of one version of a file: each file is parsed once per process, not once per stage."""
    tree = ast.parse(file.read_text(), str(file))
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return frozenset(name for name in found if module_file(name) is not None)


@lru_cache(maxsize=None)
def module_closure(roots: tuple[str, ...]) -> tuple[Path, ...]:
    """Source files of ``roots`` and of every project module they import, directly or not.

    A package's __init__.py counts only where it is imported as a module itself: the packages' own files
    hold registries (e.g. of converters), and adding a converter must not re-convert every dataset.
    """
    seen: dict[str, Path] = {}
    pending = list(roots)
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        file = module_file(module)
        if file is None:
            raise ModuleNotFoundError(f"{module!r} is not a module of this project ({', '.join(PROJECT_PACKAGES)})")
        seen[module] = file
        pending.extend(name for name in _imports(file, module) if name not in seen)
    files = set(seen.values())
    for package, data in DATA_FILES.items():
        if any(module.split(".")[0] == package for module in seen):
            files.update(PROJECT_ROOT / name for name in data)
    return tuple(sorted(files))


def hash_files(relative_paths) -> str:
    """sha256 (first 16 hex digits) over the paths (relative to the project) and bytes of the files."""
    digest = hashlib.sha256()
    for name in sorted(set(relative_paths)):
        digest.update(name.encode() + b"\0" + (PROJECT_ROOT / name).read_bytes() + b"\1")
    return digest.hexdigest()[:16]


def relative_files(roots) -> list[str]:
    return [file.relative_to(PROJECT_ROOT).as_posix() for file in module_closure(tuple(sorted(roots)))]


def code_version(roots) -> str:
    return hash_files(relative_files(roots))
