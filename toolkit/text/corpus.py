"""Real text: the standard library's source split into training and held-out modules, and the user's text."""

from __future__ import annotations

import os
import random
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import DataError, setting
from toolkit.files import check_input_file

HELDOUT_FILE = "heldout.txt"
HELDOUT_BYTES = 256 * 1024
"""About this much held-out text is shipped (whole files, the last one cut at a line end)."""


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[Path]:
    """The standard library's own ``.py`` files on this machine, sorted (no site-packages, no tests)."""
    root = stdlib_root()
    skip = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in skip]  # prune: never walk into them
        files += [Path(folder) / name for name in names if name.endswith(".py")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


@dataclass(frozen=True)
class Document:
    """One source file's text and its path relative to the standard library."""

    name: str
    text: str


@dataclass(frozen=True)
class StdlibSplit:
    """Held-out and training documents: no module is in both."""

    heldout: list[Document]
    train: list[Document]


def split_stdlib(seed: int = 0, heldout_bytes: int = HELDOUT_BYTES) -> StdlibSplit:
    """A seeded shuffle of the standard library's UTF-8 files: the first ``heldout_bytes`` held out.

    The held-out documents are whole files but the last, which is cut at a line end so that the
    held-out text is at most ``heldout_bytes`` long.
    """
    root = stdlib_root()
    files = stdlib_files()
    if not files:
        raise DataError(f"no standard-library .py files under {root}; pass {setting('text')} FILE")
    random.Random(seed).shuffle(files)
    heldout: list[Document] = []
    train: list[Document] = []
    size = 0
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        document = Document(path.relative_to(root).as_posix(), text)
        if size < heldout_bytes:
            room = heldout_bytes - size
            if len(text.encode()) > room:
                cut = text.encode()[:room].decode("utf-8", errors="ignore")
                document = Document(document.name, cut[: cut.rfind("\n") + 1])
            heldout.append(document)
            size += len(document.text.encode())
        else:
            train.append(document)
    return StdlibSplit(heldout, train)


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """A text file's content, refused when it is missing, a directory, empty or not in ``encoding``."""
    path = check_input_file(path, "text file", f"pass an existing text file to {setting('text')}", DataError)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"text file {path} cannot be read ({exc.strerror}); check its permissions") from None
    try:
        text = data.decode(encoding)
    except LookupError:
        raise DataError(
            f"unknown text encoding {encoding!r}; pass {setting('text_encoding')} a Python codec name "
            "such as utf-8 or latin-1"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"text file {path} is not {encoding} (byte {exc.start} cannot be decoded); pass "
            f"{setting('text_encoding')} with its encoding (e.g. latin-1)"
        ) from None
    if not text.strip():
        raise DataError(f"text file {path} is empty; pass {setting('text')} a file with text to score")
    return text
