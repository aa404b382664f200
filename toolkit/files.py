"""Writing output files so that a failure never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from toolkit.errors import OutputError, ToolkitError, setting

PLOT_SUFFIXES = (".png", ".pdf", ".svg")
"""The figure formats the plots may be written in (matplotlib's Agg backend writes all three)."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name keeps ``path``'s suffix, so writers that look at the extension (matplotlib,
    NumPy) still pick the right format.
    """
    import tempfile  # not at start-up: help and argument errors write nothing

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def check_input_file(
    path: str | Path, what: str, hint: str, error: type[ToolkitError], allow_empty: bool = False
) -> Path:
    """``path`` as an existing, non-empty, regular file, or ``error`` saying which of those it is not.

    ``what`` names the file in the message ("config file"), ``hint`` says what to pass instead.
    """
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {path} is a directory, not a file; {hint}")
    if not path.exists():
        raise error(f"{what} {path} does not exist; {hint}")
    if not path.is_file():
        raise error(f"{what} {path} is not a regular file; {hint}")
    if not allow_empty and path.stat().st_size == 0:
        raise error(f"{what} {path} is empty (0 bytes); {hint}")
    return path


def check_output_file(path: str | Path, quantity: str, suffixes: tuple[str, ...] = ()) -> Path:
    """Refuse, before any work, an output file that could not be written: a directory, a suffix
    not in ``suffixes`` (any suffix when empty), or a place where no file can be created.

    ``quantity`` names the setting in the message (``"plot"`` -> ``--plot`` on the command line).
    """
    target = Path(path)
    name = setting(quantity)
    if target.is_dir():
        raise OutputError(f"{name} {target} is a directory; give a file name inside it instead")
    if suffixes and target.suffix.lower() not in suffixes:
        raise OutputError(
            f"{name} {target}: cannot write a {target.suffix or 'suffix-less'} file; "
            f"give a name ending in {' or '.join(suffixes)}"
        )
    _check_can_create_in(target.parent, name, target)
    return target


def check_output_dir(path: str | Path, quantity: str) -> Path:
    """Refuse, before any work, an output directory that is a file or where nothing can be written."""
    target = Path(path)
    name = setting(quantity)
    if target.exists() and not target.is_dir():
        raise OutputError(f"{name} {target} is a file, not a directory; give a directory for the files")
    _check_can_create_in(target, name, target)
    return target


def _check_can_create_in(directory: Path, name: str, target: Path) -> None:
    """The nearest existing folder of ``directory`` must be a folder in which a file can be made."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{name} {target}: {existing} is a file, not a directory; choose another place")
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputError(
            f"{name} {target}: cannot write into {existing} ({reason}); choose a writable place"
        ) from None


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
