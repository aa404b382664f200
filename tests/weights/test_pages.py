"""Converting memory-mapped checkpoint tensors: the values are those of ``Tensor.to``, a copied source
leaves the resident set (and reads back unchanged from the file), and memory that is not a file
mapping is never touched."""

from __future__ import annotations

import mmap
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from toolkit.weights.pages import convert_state, file_backed_ranges, release_pages

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page release reads /proc (Linux)")
BIG = (2048, 4096)  # 16 MiB in bfloat16: many whole pages


def _resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * mmap.PAGESIZE


def _mapped(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors written to a safetensors file and read back as views of its memory mapping."""
    path = tmp_path / "weights.safetensors"
    save_file(tensors, str(path))
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118


@linux
def test_convert_state_equals_to_and_sources_read_back_unchanged(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    original = {
        "big": torch.randn(BIG, generator=generator).to(torch.bfloat16),
        "small": torch.randn(7, 3, generator=generator).to(torch.bfloat16),
        "odd": torch.randn(1001, 37, generator=generator).to(torch.bfloat16),
    }
    mapped = _mapped(tmp_path, original)
    converted = convert_state(mapped, torch.float32)
    for key, tensor in original.items():
        assert converted[key].dtype == torch.float32
        assert torch.equal(converted[key], tensor.to(torch.float32))
        assert torch.equal(mapped[key], tensor)  # released pages come back from the file
    same = convert_state(mapped, torch.bfloat16)  # nothing to convert: the mapped tensors themselves
    assert all(same[key].data_ptr() == mapped[key].data_ptr() for key in mapped)


@linux
def test_released_pages_leave_the_resident_set(tmp_path: Path) -> None:
    source = torch.randn(BIG, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    mapped = _mapped(tmp_path, {"big": source})["big"]
    checksum = mapped.float().sum()  # touch every page of the mapping
    before = _resident_bytes()
    released = release_pages([mapped], file_backed_ranges())
    after = _resident_bytes()
    size = source.numel() * source.element_size()
    assert released >= size - 2 * mmap.PAGESIZE  # every whole page inside the tensor
    assert before - after >= 0.9 * size
    assert mapped.float().sum() == checksum


def test_memory_that_is_not_a_file_mapping_is_left_alone(tmp_path: Path) -> None:
    tensor = torch.randn(BIG)
    copy = tensor.clone()
    assert release_pages([tensor, tensor.T, tensor[:, ::2]], file_backed_ranges()) == 0
    assert torch.equal(tensor, copy)
