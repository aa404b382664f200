"""The text the training runs learn: bytes of the standard library's source, or of any file."""

from __future__ import annotations

import random
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from toolkit.errors import DataError, setting
from toolkit.files import check_input_file
from toolkit.text.corpus import stdlib_files


@dataclass
class Corpus:
    """Bytes of text split into training and validation parts."""

    train: torch.Tensor  # uint8
    validation: torch.Tensor  # uint8
    source: str
    files: int

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "files": self.files,
            "train_bytes": int(self.train.numel()),
            "validation_bytes": int(self.validation.numel()),
        }


def stdlib_corpus(max_bytes: int = 4_000_000, validation_every: int = 10, seed: int = 0) -> Corpus:
    """Source files of the standard library: a seeded shuffle of the sorted list, read up to ``max_bytes``.

    Every ``validation_every``-th file read goes to validation, the others to training, so the two
    never share a file. The same Python installation always gives the same bytes.
    """
    files = stdlib_files()
    if not files:
        raise DataError(
            f"no standard-library .py files under {sysconfig.get_paths()['stdlib']}; "
            f"pass {setting('data')} PATH"
        )
    random.Random(seed).shuffle(files)
    train: list[bytes] = []
    validation: list[bytes] = []
    used = total = 0
    for path in files:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        (validation if used % validation_every == validation_every - 1 else train).append(data)
        used += 1
        total += len(data)
        if total >= max_bytes:
            break
    root = sysconfig.get_paths()["stdlib"]
    return Corpus(_bytes_tensor(b"".join(train)), _bytes_tensor(b"".join(validation)), f"stdlib {root}", used)


def text_corpus(path: str | Path, validation_fraction: float = 0.1) -> Corpus:
    """Any file as bytes: the last ``validation_fraction`` is validation, the rest training."""
    path = check_input_file(path, "data file", f"pass an existing text file to {setting('data')}", DataError)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"data file {path} cannot be read ({exc.strerror}); check its permissions") from None
    split = int(len(data) * (1.0 - validation_fraction))
    return Corpus(_bytes_tensor(data[:split]), _bytes_tensor(data[split:]), str(path), 1)


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
