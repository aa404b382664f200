"""Checkpoint loading against transformers' GPT-2: transforms, head search, strictness, unsafe files."""

from __future__ import annotations

import filecmp
import signal
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import torch
from checkpoints import RunsCode, from_supplied, gpt2, gpt2_examples, mapping_file, to_supplied, write_pair
from safetensors.torch import load_file, save_file
from tiny import TINY
from transformers import GPT2LMHeadModel

from toolkit import ModelConfig, signals
from toolkit.errors import CheckpointKeysError, ConfigError, WeightsError
from toolkit.tables.weights import load_summary
from toolkit.weights import (
    SHIPPED_EXAMPLES,
    SHIPPED_WEIGHTS,
    Example,
    export_checkpoint,
    load_checkpoint,
    read_examples,
    write_examples,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[GPT2LMHeadModel, Path, Path]:
    """A tiny GPT-2 (3 heads) in the supplied format with its examples (lengths 1, 5, 32)."""
    hf = gpt2()
    folder = tmp_path_factory.mktemp("tiny")
    weights, examples = write_pair(folder, to_supplied(hf), gpt2_examples(hf))
    return hf, weights, examples


# --------------------------------------------------------------------------------------------------
# The shipped files


def test_shipped_checkpoint_reproduces_its_examples() -> None:
    """weights/: default config read off the shapes, 2 heads found by search, every example within 1e-4."""
    _, report = load_checkpoint(
        ROOT / "weights" / SHIPPED_WEIGHTS, examples=ROOT / "weights" / SHIPPED_EXAMPLES
    )
    assert report.passed
    assert report.verified
    assert report.config == ModelConfig()
    assert report.n_heads_source == "search"
    assert report.heads_matching == [2]
    assert [r.seq_len for r in report.results] == [1, 2, 16, 128, 1024]
    # float32 against float64 logits of a trained model (|logit| up to ~20): no worse than transformers'
    # own GPT-2 holding the same weights in float32 (6.8e-5 on the 1024-token example of this model)
    gpt2_float32 = from_supplied(load_file(str(ROOT / "weights" / SHIPPED_WEIGHTS)), ModelConfig()).eval()
    with torch.no_grad():
        theirs = max(
            float((gpt2_float32(e.input_ids[None]).logits[0] - e.logits).abs().max())
            for e in read_examples(ROOT / "weights" / SHIPPED_EXAMPLES)
        )
    assert report.max_abs_diff <= 1.25 * theirs


def test_random_reference_script_reruns_to_the_same_bytes_and_loads(tmp_path: Path) -> None:
    """scripts/make_reference_weights.py (random weights, GPT-2's logits) writes the same bytes twice,
    and the toolkit reproduces its examples; the shipped mapping copy is the built-in one."""
    for out in (tmp_path / "a", tmp_path / "b"):
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "make_reference_weights.py"), "--out-dir", str(out)],
            check=True,
            capture_output=True,
        )
    for name in (SHIPPED_WEIGHTS, SHIPPED_EXAMPLES, "keys_mapping.json"):
        assert filecmp.cmp(tmp_path / "a" / name, tmp_path / "b" / name, shallow=False), name
    _, report = load_checkpoint(tmp_path / "a" / SHIPPED_WEIGHTS, examples=tmp_path / "a" / SHIPPED_EXAMPLES)
    assert report.passed
    assert report.heads_matching == [2]
    builtin = resources.files("toolkit").joinpath("data/keys_mapping.json").read_bytes()
    assert (ROOT / "weights" / "keys_mapping.json").read_bytes() == builtin


# --------------------------------------------------------------------------------------------------
# Transforms against GPT-2


@pytest.mark.parametrize("layout", ["qkv-major", "head-major"])
@pytest.mark.parametrize("n_heads", range(1, 9))
def test_qkv_split_per_head_matches_gpt2(tmp_path: Path, n_heads: int, layout: str) -> None:
    """Fused q|k|v in either layout, 1..8 heads: the loaded model gives GPT-2's logits."""
    config = ModelConfig(
        vocab_size=37, max_seq_len=12, d_model=4 * n_heads, n_heads=n_heads, n_layers=2, d_mlp=20
    )
    hf = gpt2(config, seed=n_heads)
    weights, examples = write_pair(tmp_path, to_supplied(hf, layout), gpt2_examples(hf, (1, 12)))

    def set_layout(data: dict[str, Any]) -> None:
        for rule in data["rules"]:
            if "qkv_layout" in rule:
                rule["qkv_layout"] = layout

    mapping = mapping_file(tmp_path, set_layout)
    _, report = load_checkpoint(weights, examples=examples, mapping=mapping, n_heads=n_heads)
    assert report.passed, load_summary(report)
    assert report.max_abs_diff < 1e-5


def test_head_major_read_as_qkv_major_does_not_match(tmp_path: Path) -> None:
    """The layout matters: a head-major checkpoint read with the default mapping fails its examples."""
    config = TINY.replace(n_heads=4)
    hf = gpt2(config)
    weights, examples = write_pair(tmp_path, to_supplied(hf, "head-major"), gpt2_examples(hf))
    _, report = load_checkpoint(weights, examples=examples, n_heads=4)
    assert not report.passed
    assert report.max_abs_diff > 1e-2


def test_untransposed_square_matrix_detected(
    tmp_path: Path, tiny: tuple[GPT2LMHeadModel, Path, Path]
) -> None:
    """out_proj stored [out, in]: right shape, wrong outputs; so is a mapping that forgets the transpose."""
    hf, weights, examples = tiny
    state = to_supplied(hf)
    state["transformer.h.1.attn.out_proj.weight"] = state[
        "transformer.h.1.attn.out_proj.weight"
    ].T.contiguous()
    save_file(state, str(tmp_path / "flipped.safetensors"))
    _, report = load_checkpoint(tmp_path / "flipped.safetensors", examples=examples, n_heads=3)
    assert not report.passed

    def no_transpose(data: dict[str, Any]) -> None:
        for rule in data["rules"]:
            if rule["from"].endswith("out_proj.weight"):
                rule["transform"] = "rename"

    _, report = load_checkpoint(
        weights, examples=examples, n_heads=3, mapping=mapping_file(tmp_path, no_transpose)
    )
    assert not report.passed


def test_two_dimensional_biases_load(tmp_path: Path) -> None:
    """Every linear bias stored as [1, n] loads and reproduces GPT-2."""
    hf = gpt2()
    weights, examples = write_pair(tmp_path, to_supplied(hf, bias_2d=True), gpt2_examples(hf))
    _, report = load_checkpoint(weights, examples=examples, n_heads=3)
    assert report.passed, load_summary(report)


# --------------------------------------------------------------------------------------------------
# Config inference and the head-count search


def test_config_inferred_and_heads_found(tiny: tuple[GPT2LMHeadModel, Path, Path]) -> None:
    """Sizes come from shapes; of the divisors of 24 only 3 heads reproduce the examples."""
    _, weights, examples = tiny
    model, report = load_checkpoint(weights, examples=examples)
    assert report.config == TINY
    assert report.n_heads_source == "search"
    assert [t.n_heads for t in report.head_trials] == [1, 2, 3, 4, 6, 8, 12, 24]
    assert report.heads_matching == [3]
    assert report.passed
    assert "n_heads=3 found by search" in load_summary(report)
    assert model.config.n_heads == 3


def test_a_search_cut_short_by_a_stop_request_says_so(
    tiny: tuple[GPT2LMHeadModel, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGINT / SIGTERM under graceful() (here its stop request, without the real signal) ends
    the search after the hypothesis under way: the result is marked incomplete, and the full search
    of the same files is complete and finds 3 heads."""
    _, weights, examples = tiny

    def stop_at_third(done: int, total: int, description: str) -> None:
        if description.startswith("trying") and done == 2:
            monkeypatch.setattr(signals._State, "requested", signal.SIGINT)  # undone after the test

    _, full = load_checkpoint(weights, examples=examples)
    _, cut = load_checkpoint(weights, examples=examples, progress=stop_at_third)
    assert full.search is not None
    assert full.search.complete
    assert cut.search is not None
    assert not cut.search.complete
    assert len(cut.search.trials) == 3 < len(full.search.trials)


def test_wrong_head_count_fails(tiny: tuple[GPT2LMHeadModel, Path, Path]) -> None:
    """--heads 4 loads (shapes fit) but the outputs do not match: reported, not raised."""
    _, weights, examples = tiny
    _, report = load_checkpoint(weights, examples=examples, n_heads=4)
    assert report.n_heads_source == "flag"
    assert not report.passed
    assert all(not r.passed for r in report.results if r.seq_len > 1)


def test_length_one_examples_cannot_tell_heads_apart(tmp_path: Path) -> None:
    """With only one-token examples every divisor matches; the report says so and keeps the default."""
    hf = gpt2(TINY.replace(n_heads=6))
    weights, examples = write_pair(tmp_path, to_supplied(hf), gpt2_examples(hf, (1, 1)))
    _, report = load_checkpoint(weights, examples=examples)
    assert report.heads_matching == [1, 2, 3, 4, 6, 8, 12, 24]
    assert report.config.n_heads == 2
    assert "cannot tell them apart" in load_summary(report)


def test_no_examples_uses_default_heads(tiny: tuple[GPT2LMHeadModel, Path, Path]) -> None:
    """Without examples the head count is the default, 2, and nothing is verified."""
    _, weights, _ = tiny
    _, report = load_checkpoint(weights)
    assert report.n_heads_source == "default"
    assert report.config.n_heads == 2
    assert not report.verified
    assert report.passed


def test_heads_not_dividing_d_model(tiny: tuple[GPT2LMHeadModel, Path, Path]) -> None:
    """A head count that does not divide d_model is a ConfigError."""
    _, weights, _ = tiny
    with pytest.raises(ConfigError, match="not divisible by n_heads=5"):
        load_checkpoint(weights, n_heads=5)


# --------------------------------------------------------------------------------------------------
# Formats: .pt, export round trip


def test_pt_checkpoint_and_pt_examples(tmp_path: Path, tiny: tuple[GPT2LMHeadModel, Path, Path]) -> None:
    """A torch.save'd state dict and a list of {'input_ids', 'logits'} dicts load like safetensors."""
    hf, _, examples = tiny
    torch.save(to_supplied(hf), tmp_path / "ckpt.pt")
    listed = [{"input_ids": e.input_ids, "logits": e.logits} for e in read_examples(examples)]
    torch.save(listed, tmp_path / "examples.pth")
    _, report = load_checkpoint(tmp_path / "ckpt.pt", examples=tmp_path / "examples.pth")
    assert report.passed
    assert report.config == TINY


def test_export_round_trip(tmp_path: Path, tiny: tuple[GPT2LMHeadModel, Path, Path]) -> None:
    """Export in toolkit names, read back: same config (heads from the file), identical logits."""
    _, weights, examples = tiny
    model, _ = load_checkpoint(weights, examples=examples)
    export_checkpoint(model, tmp_path / "export.safetensors")
    again, report = load_checkpoint(tmp_path / "export.safetensors", examples=examples)
    assert report.checkpoint_format == "toolkit"
    assert report.n_heads_source == "checkpoint"
    assert again.config == model.config
    assert report.passed
    ids = torch.arange(TINY.max_seq_len) % TINY.vocab_size
    with torch.no_grad():
        assert torch.equal(again(ids), model(ids))


def test_export_keeps_non_shape_fields(tmp_path: Path) -> None:
    """An export carries eps, GELU form and the rest of the config, which no shape shows."""
    from toolkit import Transformer

    config = TINY.replace(norm_eps=1e-4, gelu="tanh", residual="parallel")
    export_checkpoint(Transformer(config), tmp_path / "variant.safetensors")
    model, _ = load_checkpoint(tmp_path / "variant.safetensors")
    assert model.config == config


# --------------------------------------------------------------------------------------------------
# Bad input: every problem named


def test_missing_extra_and_misshapen_keys_all_listed(
    tmp_path: Path, tiny: tuple[GPT2LMHeadModel, Path, Path]
) -> None:
    """Every missing, unexpected and misshapen key is listed in one error."""
    hf, _, _ = tiny
    state = to_supplied(hf)
    del state["transformer.h.1.pre_mlp_ln.bias"]
    state["transformer.h.0.attn.rotary.weight"] = torch.zeros(3)
    state["transformer.h.0.mlp.up_proj.weight"] = torch.zeros(24, 41)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointKeysError) as caught:
        load_checkpoint(tmp_path / "bad.safetensors")
    error = caught.value
    assert error.missing == ["transformer.h.1.pre_mlp_ln.bias (expected [24])"]
    assert error.unexpected == ["transformer.h.0.attn.rotary.weight [3]"]
    assert error.mismatched == ["transformer.h.0.mlp.up_proj.weight expected [24, 40], found [24, 41]"]
    assert "\n" not in str(error)


def test_lm_head_must_equal_embeddings(tmp_path: Path, tiny: tuple[GPT2LMHeadModel, Path, Path]) -> None:
    """An LM head that differs from the word embeddings is refused: the model ties them."""
    hf, _, _ = tiny
    state = to_supplied(hf)
    state["lm_head.weight"] = state["lm_head.weight"] + 1.0
    save_file(state, str(tmp_path / "untied.safetensors"))
    with pytest.raises(
        WeightsError, match=r"lm_head\.weight differs from transformer\.word_embeddings\.weight"
    ):
        load_checkpoint(tmp_path / "untied.safetensors")


def test_pickled_callable_refused_not_run(tmp_path: Path) -> None:
    """A .pt file holding a callable is refused without running it."""
    marker = tmp_path / "ran"
    torch.save({"transformer.word_embeddings.weight": RunsCode(marker)}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match="refusing"):
        load_checkpoint(tmp_path / "evil.pt")
    torch.save([{"input_ids": RunsCode(marker), "logits": torch.zeros(1, 2)}], tmp_path / "evil_examples.pt")
    with pytest.raises(WeightsError, match="refusing"):
        read_examples(tmp_path / "evil_examples.pt")
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_truncated_file(tmp_path: Path, suffix: str, tiny: tuple[GPT2LMHeadModel, Path, Path]) -> None:
    """A truncated checkpoint is one clear WeightsError, for safetensors and torch files."""
    hf, _, _ = tiny
    full = tmp_path / f"full{suffix}"
    if suffix == ".pt":
        torch.save(to_supplied(hf), full)
    else:
        save_file(to_supplied(hf), str(full))
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(WeightsError, match="truncated"):
        load_checkpoint(cut)


def test_examples_with_wrong_vocabulary(tmp_path: Path, tiny: tuple[GPT2LMHeadModel, Path, Path]) -> None:
    """Examples whose logits have another vocabulary belong to another model."""
    _, weights, _ = tiny
    write_examples([Example(torch.tensor([1, 2]), torch.zeros(2, 60))], tmp_path / "other.safetensors")
    with pytest.raises(WeightsError, match="vocabulary 60 but the checkpoint's is 61"):
        load_checkpoint(weights, examples=tmp_path / "other.safetensors")


def test_examples_too_long_or_out_of_range(tmp_path: Path, tiny: tuple[GPT2LMHeadModel, Path, Path]) -> None:
    """Examples longer than max_seq_len or with ids outside the vocabulary are refused."""
    _, weights, _ = tiny
    write_examples(
        [Example(torch.zeros(33, dtype=torch.long), torch.zeros(33, 61))], tmp_path / "long.safetensors"
    )
    with pytest.raises(WeightsError, match="exceeds the checkpoint's max_seq_len=32"):
        load_checkpoint(weights, examples=tmp_path / "long.safetensors")
    write_examples([Example(torch.tensor([0, 61]), torch.zeros(2, 61))], tmp_path / "ids.safetensors")
    with pytest.raises(WeightsError, match="outside"):
        load_checkpoint(weights, examples=tmp_path / "ids.safetensors")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["rules"][0].update(transform="rotate"), "unknown transform 'rotate'"),
        (lambda d: d["rules"][4].update(qkv_layout="zigzag"), "unknown qkv_layout"),
        (lambda d: d["rules"][2].update(to="blocks.{i}.ln9.weight"), "does not fill the toolkit model"),
        (lambda d: d["rules"][10].update(transform="bias"), "wrong shape after transforms"),
        (lambda d: d["rules"][1].update(shape=["max_seq_len", "width"]), "is not a size"),
        (lambda d: d["rules"][2].update(transform="transpose"), "needs a 2-D shape"),
    ],
)
def test_bad_mapping(
    tmp_path: Path, tiny: tuple[GPT2LMHeadModel, Path, Path], edit: Any, message: str
) -> None:
    """A malformed key mapping is refused with what is wrong in it."""
    _, weights, _ = tiny
    with pytest.raises(WeightsError, match=message):
        load_checkpoint(weights, mapping=mapping_file(tmp_path, edit))


def test_files_that_cannot_be_read(tmp_path: Path, tiny: tuple[GPT2LMHeadModel, Path, Path]) -> None:
    """Missing files, wrong suffixes and non-tensor content are one clear error each."""
    _, weights, _ = tiny
    with pytest.raises(WeightsError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.safetensors")
    (tmp_path / "weights.txt").write_bytes(b"\0")
    with pytest.raises(WeightsError, match=r"must end in \.safetensors, \.pt or \.pth"):
        load_checkpoint(tmp_path / "weights.txt")
    (tmp_path / "mapping.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(WeightsError, match="not valid JSON"):
        load_checkpoint(weights, mapping=tmp_path / "mapping.json")
    torch.save({"input_ids": torch.zeros(3)}, tmp_path / "examples.pt")
    with pytest.raises(WeightsError, match="non-empty list"):
        read_examples(tmp_path / "examples.pt")


@pytest.mark.cuda
def test_shipped_checkpoint_on_cuda() -> None:
    """The same verification with the model on the GPU (float32; TF32 matmuls are off by default)."""
    model, report = load_checkpoint(
        ROOT / "weights" / SHIPPED_WEIGHTS,
        examples=ROOT / "weights" / SHIPPED_EXAMPLES,
        n_heads=2,
        device="cuda",
    )
    assert next(model.parameters()).is_cuda
    assert report.passed, load_summary(report)
