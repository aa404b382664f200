"""Reading tensor files safely (safetensors, or torch pickles through ``weights_only=True``), and
finding the shipped checkpoint.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from toolkit.errors import WeightsError, setting
from toolkit.files import check_input_file

TENSOR_SUFFIXES = (".safetensors", ".pt", ".pth")

SHIPPED_DIR = Path("weights")
SHIPPED_WEIGHTS = "reference_model.safetensors"
SHIPPED_EXAMPLES = "reference_examples.safetensors"


def read_tensors(
    path: str | Path, what: str = "checkpoint", allow_bin: bool = False
) -> tuple[dict[str, Any], dict[str, str]]:
    """The tensors in a ``.safetensors`` / ``.pt`` / ``.pth`` file (``allow_bin``: also ``.bin``,
    as Hugging Face's ``pytorch_model.bin``), and its safetensors metadata.

    Which reader runs is decided by the file's first bytes, not its name. Torch files are read with
    ``torch.load(weights_only=True)`` only: a file holding anything but tensors and plain containers
    (a pickled callable, a class) is refused without running it.
    """
    path = check_input_file(
        path, f"{what} file", "pass an existing .safetensors, .pt or .pth file", WeightsError
    )
    suffix = path.suffix.lower()
    if suffix not in (*TENSOR_SUFFIXES, *((".bin",) if allow_bin else ())):
        raise WeightsError(
            f"{what} file {path} must end in .safetensors, .pt or .pth, not {suffix or '(none)'}"
        )
    if _looks_like_safetensors(path) or (suffix == ".safetensors" and not _looks_like_torch(path)):
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                return {key: handle.get_tensor(key) for key in handle.keys()}, metadata  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(
                f"{what} file {path} is not a readable safetensors file (truncated?): {exc}"
            ) from None
    try:
        with open(path, "rb") as handle:  # a file object: torch.load decides nothing by the name
            content = torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # torch's message carries terminal colours
        found = re.search(r"WeightsUnpickler error: (.*?)(?: Please use|$)", text, flags=re.MULTILINE)
        reason = found.group(1).strip() if found else (text.splitlines() or [type(exc).__name__])[0]
        raise WeightsError(
            f"refusing {what} file {path}: it holds objects other than tensors, which would run code when "
            f"unpickled ({reason}); save plain tensors (state_dict / safetensors) instead"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise WeightsError(
            f"{what} file {path} is not a readable torch file (truncated?): {exc or type(exc).__name__}"
        ) from None
    return content, {}


def _head(path: Path, size: int = 9) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(size)


def _looks_like_safetensors(path: Path) -> bool:
    """safetensors: an 8-byte little-endian header length, then the JSON header."""
    head = _head(path)
    return len(head) == 9 and head[8:9] == b"{"


def _looks_like_torch(path: Path) -> bool:
    """torch.save: a zip archive (PK), or the legacy pickle protocol (0x80)."""
    return _head(path, 4) in (b"PK\x03\x04",) or _head(path, 1) == b"\x80"


def as_state_dict(content: Any, path: Path) -> dict[str, torch.Tensor]:
    for wrapper in ("state_dict", "model"):  # the usual {"state_dict": {...}} / {"model": {...}} wrappers
        if isinstance(content, dict) and isinstance(content.get(wrapper), dict):
            content = content[wrapper]
    if not isinstance(content, dict) or not content:
        raise WeightsError(f"checkpoint {path} must hold a non-empty dict of named tensors (a state dict)")
    not_tensors = sorted(str(k) for k, v in content.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise WeightsError(f"checkpoint {path}: entries that are not tensors: {', '.join(not_tensors)}")
    return {str(k): v for k, v in content.items()}


def refuse_non_float(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Weights are floating point: an integer, boolean or complex tensor means a wrong file."""
    odd = [
        f"{key} ({str(t.dtype).removeprefix('torch.')})"
        for key, t in tensors.items()
        if not t.is_floating_point()
    ]
    if odd:
        shown = "; ".join(odd[:4]) + (f"; and {len(odd) - 4} more" if len(odd) > 4 else "")
        raise WeightsError(
            f"checkpoint {path} holds weights that are not floating point: {shown}; "
            "save the model's float parameters (float32, float16 or bfloat16)"
        )


def shape_text(tensor: torch.Tensor) -> str:
    return str(list(tensor.shape))


def state_problems(
    expected: dict[str, torch.Size], state: dict[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """Missing, unexpected and misshapen keys of ``state`` against the shapes a model expects."""
    missing = [f"{k} (expected {list(shape)})" for k, shape in expected.items() if k not in state]
    unexpected = [f"{k} {shape_text(v)}" for k, v in state.items() if k not in expected]
    mismatched = [
        f"{k} expected {list(expected[k])}, found {shape_text(v)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k]
    ]
    return missing, unexpected, mismatched


def fmt_shape(dims: Sequence[int | str]) -> str:
    return "[" + ", ".join(map(str, dims)) + "]"


def shipped_folder() -> Path | None:
    """``weights/`` in the current directory, else the ``weights/`` of the source tree the package
    lives in (a checkout or an editable install): the first that holds the shipped checkpoint."""
    for folder in (SHIPPED_DIR, Path(__file__).resolve().parents[2] / SHIPPED_DIR):
        if (folder / SHIPPED_WEIGHTS).is_file():
            return folder
    return None


def shipped_files() -> tuple[Path, Path]:
    """The shipped checkpoint and examples (in :func:`shipped_folder`)."""
    folder = shipped_folder()
    if folder is not None:
        return folder / SHIPPED_WEIGHTS, folder / SHIPPED_EXAMPLES
    raise WeightsError(
        f"no {setting('weights')} given and the shipped {SHIPPED_DIR / SHIPPED_WEIGHTS} is neither in the "
        "current directory nor beside the installed package; run from the repository root or pass "
        f"{setting('weights')} PATH"
    )
