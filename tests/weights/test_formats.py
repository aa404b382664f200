"""The checkpoints people have, written by `transformers` itself (save_pretrained: safetensors,
pytorch_model.bin, sharded) and in nanoGPT's ckpt.pt layout from the same weights: every one loads
to GPT2LMHeadModel's logits, with its config read from its own metadata; what the toolkit's model
cannot represent is refused by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from checkpoints import RunsCode, gpt2, gpt2_examples, to_supplied, write_pair
from cli_checks import assert_one_line_error
from safetensors.torch import save_file
from tiny import TINY
from transformers import GPT2LMHeadModel
from typer.testing import CliRunner

from toolkit import ModelConfig
from toolkit.cli import app
from toolkit.cli.options import FormatName
from toolkit.errors import ConfigError, WeightsError
from toolkit.studies.ablation import select_variants, variant_model
from toolkit.tables.weights import search_text
from toolkit.weights import FORMATS, load_checkpoint, open_checkpoint, read_config

runner = CliRunner()
NANO = TINY.replace(d_mlp=4 * TINY.d_model)  # nanoGPT's MLP is always 4·d
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
IDS = torch.tensor([[3, 17, 1, 59, 20, 8, 44, 2, 31]])


def nanogpt_state(hf: GPT2LMHeadModel, compiled: bool = True) -> dict[str, torch.Tensor]:
    """GPT-2's weights under nanoGPT's names: nn.Linear [out, in], so Conv1D's [in, out] transposed;
    the LM head kept (tied); the causal-mask buffer kept as nanoGPT does without flash attention."""
    state: dict[str, torch.Tensor] = {}
    for key, tensor in hf.state_dict().items():
        value = tensor.detach().clone()
        if key.endswith(CONV1D):
            value = value.T.contiguous()
        state[key] = value
    for i in range(hf.config.n_layer):
        size = hf.config.n_positions
        state[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(size, size)).view(1, 1, size, size)
    prefix = "_orig_mod." if compiled else ""
    return {prefix + key: value for key, value in state.items()}


def nanogpt_checkpoint(hf: GPT2LMHeadModel, path: Path, **changes: Any) -> Path:
    """A ckpt.pt as nanoGPT's train.py writes it: model, model_args, optimizer and iteration entries."""
    config = hf.config
    model_args = {
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_embd": config.n_embd,
        "block_size": config.n_positions,
        "bias": True,
        "vocab_size": config.vocab_size,
        "dropout": 0.0,
    } | changes
    optimizer = torch.optim.AdamW(hf.parameters(), lr=1e-3).state_dict()
    checkpoint = {
        "model": nanogpt_state(hf),
        "optimizer": optimizer,
        "model_args": model_args,
        "iter_num": 5,
        "best_val_loss": torch.tensor(3.2),
        "config": {"dataset": "shakespeare_char", "compile": True},
    }
    torch.save(checkpoint, path)
    return path


def old_hf_state(hf: GPT2LMHeadModel) -> dict[str, torch.Tensor]:
    """The state dict of transformers 4's pytorch_model.bin: the tied head, and the attention-mask
    buffers (attn.bias, attn.masked_bias) that older versions saved."""
    state = {k: v.detach().clone() for k, v in hf.state_dict().items()}
    size = hf.config.n_positions
    for i in range(hf.config.n_layer):
        state[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(size, size, dtype=torch.bool)).view(
            1, 1, size, size
        )
        state[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    return state


@pytest.fixture(scope="module")
def hf() -> GPT2LMHeadModel:
    return gpt2(TINY)


@pytest.fixture(scope="module")
def nano_hf() -> GPT2LMHeadModel:
    return gpt2(NANO, seed=3)


@pytest.fixture(scope="module")
def files(
    hf: GPT2LMHeadModel, nano_hf: GPT2LMHeadModel, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("formats")
    hf.save_pretrained(root / "hf")
    hf.save_pretrained(root / "hf_bin")  # then as transformers 4 wrote it (5 writes safetensors only)
    (root / "hf_bin" / "model.safetensors").unlink()
    torch.save(old_hf_state(hf), root / "hf_bin" / "pytorch_model.bin")
    hf.save_pretrained(root / "hf_sharded", max_shard_size="20KB")
    bare = {k: v.detach().clone() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    save_file(bare, str(root / "bare_hf.safetensors"))
    nanogpt_checkpoint(nano_hf, root / "ckpt.pt")
    return {
        "hf safetensors": root / "hf",
        "hf pytorch_model.bin": root / "hf_bin",
        "hf sharded": root / "hf_sharded",
        "hf bare state dict": root / "bare_hf.safetensors",
        "nanogpt ckpt.pt": root / "ckpt.pt",
    }


EXPECTED_FORMAT = {
    "hf safetensors": "hf-gpt2",
    "hf pytorch_model.bin": "hf-gpt2",
    "hf sharded": "hf-gpt2",
    "hf bare state dict": "hf-gpt2",
    "nanogpt ckpt.pt": "nanogpt",
}


def test_the_files_are_what_their_names_say(files: dict[str, Path]) -> None:
    assert (files["hf safetensors"] / "model.safetensors").is_file()
    assert (files["hf pytorch_model.bin"] / "pytorch_model.bin").is_file()
    assert (files["hf sharded"] / "model.safetensors.index.json").is_file()
    assert len(list(files["hf sharded"].glob("model-*.safetensors"))) > 1


@pytest.mark.parametrize("kind", list(EXPECTED_FORMAT))
def test_every_format_reproduces_gpt2(
    kind: str, files: dict[str, Path], hf: GPT2LMHeadModel, nano_hf: GPT2LMHeadModel
) -> None:
    """Logits equal GPT2LMHeadModel's to 1e-5; the parameter count equals num_parameters()."""
    reference = nano_hf if kind.startswith("nanogpt") else hf
    bare = "bare" in kind
    model, report = load_checkpoint(files[kind], n_heads=reference.config.n_head if bare else None)
    assert report.checkpoint_format == EXPECTED_FORMAT[kind]
    assert report.to_dict()["format"] == EXPECTED_FORMAT[kind]
    assert report.n_heads_source == ("flag" if bare else "config")
    assert model.config.n_heads == reference.config.n_head
    with torch.no_grad():
        ours = model(IDS)
        theirs = reference(IDS).logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert report.n_params == reference.num_parameters()


@pytest.mark.parametrize("kind", ["hf safetensors", "nanogpt ckpt.pt"])
def test_eps_ablation_equals_gpt2_with_that_eps(
    kind: str, files: dict[str, Path], hf: GPT2LMHeadModel, nano_hf: GPT2LMHeadModel
) -> None:
    """`ablate --eps 1e-4` on the loaded weights computes what GPT-2 does with layer_norm_epsilon=1e-4."""
    reference = nano_hf if kind.startswith("nanogpt") else hf
    model, _ = load_checkpoint(files[kind])
    (eps,) = select_variants(model.config, eps=1e-4)
    variant = variant_model(model, eps)  # what `toolkit ablate --eps 1e-4` runs
    config = reference.config.to_dict() | {"layer_norm_epsilon": 1e-4}
    other = GPT2LMHeadModel(type(reference.config).from_dict(config)).eval()
    other.load_state_dict(reference.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(variant(IDS), other(IDS).logits, rtol=0, atol=1e-5)


def test_config_fields_come_from_config_json(tmp_path: Path) -> None:
    """eps 1e-6 and the tanh GELU (gelu_new) are read from config.json, and the logits agree."""
    config = TINY.replace(norm_eps=1e-6, gelu="tanh")
    reference = gpt2(config, seed=5)
    reference.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["activation_function"] == "gelu_new"
    model, report = load_checkpoint(tmp_path / "m")
    assert model.config == config
    assert report.config_sources["norm_eps"] == "config.json: layer_norm_epsilon"
    assert report.config_sources["n_heads"] == "config.json: n_head"
    assert read_config(tmp_path / "m") == config  # the same config, with no model built
    with torch.no_grad():
        torch.testing.assert_close(model(IDS), reference(IDS).logits, rtol=0, atol=1e-5)


def test_format_choices_match_the_library() -> None:
    assert FormatName.__args__ == FORMATS  # type: ignore[attr-defined]


def _cli(*args: str) -> Any:
    return runner.invoke(app, list(args))


def test_commands_take_every_format(files: dict[str, Path], hf: GPT2LMHeadModel, tmp_path: Path) -> None:
    """params, load-weights (and its export, read back) work on an HF directory and a nanoGPT file."""
    params = _cli("params", "--weights", str(files["hf safetensors"]), "--no-measure", "--json")
    assert params.exit_code == 0, params.output
    assert json.loads(params.stdout)["total_params"] == hf.num_parameters()
    loaded = _cli(
        "load-weights",
        "--weights",
        str(files["nanogpt ckpt.pt"]),
        "--json",
        "--export",
        str(tmp_path / "x.safetensors"),
    )
    assert loaded.exit_code == 0, loaded.output
    data = json.loads(loaded.stdout)
    assert (data["format"], data["n_heads_source"]) == ("nanogpt", "config")
    again = _cli("load-weights", "--weights", str(tmp_path / "x.safetensors"), "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["config"] == data["config"]


def _hf_dir(hf: GPT2LMHeadModel, folder: Path, **config_changes: Any) -> Path:
    hf.save_pretrained(folder)
    if config_changes:
        path = folder / "config.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | config_changes), encoding="utf-8")
    return folder


def test_bad_checkpoints_are_one_line_each(
    hf: GPT2LMHeadModel, nano_hf: GPT2LMHeadModel, files: dict[str, Path], tmp_path: Path
) -> None:
    no_weights = _hf_dir(hf, tmp_path / "no_weights")
    (no_weights / "model.safetensors").unlink()
    malformed = _hf_dir(hf, tmp_path / "malformed")
    (malformed / "config.json").write_text("{", encoding="utf-8")
    sharded = tmp_path / "sharded"
    hf.save_pretrained(sharded, max_shard_size="20KB")
    next(iter(sorted(sharded.glob("model-*.safetensors")))).unlink()
    evil = _hf_dir(hf, tmp_path / "evil")
    (evil / "model.safetensors").unlink()
    marker = tmp_path / "ran"
    torch.save({"x": RunsCode(marker)}, evil / "pytorch_model.bin")
    untied = nanogpt_state(nano_hf)
    untied["_orig_mod.lm_head.weight"] = untied["_orig_mod.lm_head.weight"] + 1.0
    torch.save({"model": untied, "model_args": {"n_layer": 2, "n_head": 3, "n_embd": 24, "block_size": 32,
                "bias": True, "vocab_size": 61}}, tmp_path / "untied.pt")  # fmt: skip
    torch.save({"model": nanogpt_state(nano_hf)}, tmp_path / "no_args.pt")
    cases = [
        (["--weights", str(no_weights)], "has config.json but no weights"),
        (["--weights", str(malformed)], "is not valid JSON"),
        (
            [
                "--weights",
                str(
                    _hf_dir(hf, tmp_path / "moe", model_type="mixtral", architectures=["MixtralForCausalLM"])
                ),
            ],
            "describes a mixture of experts (mixtral, MixtralForCausalLM)",
        ),
        (["--weights", str(_hf_dir(hf, tmp_path / "heads", n_head=5))], "not divisible by n_heads=5"),
        (["--weights", str(sharded)], "names the shard"),
        (["--weights", str(evil)], "refusing"),
        (["--weights", str(tmp_path / "no_args.pt")], "no 'model_args'"),
        (
            ["--weights", str(files["hf safetensors"]), "--format", "nanogpt"],
            "is a Hugging Face GPT-2 checkpoint, not a nanoGPT checkpoint",
        ),
        (
            ["--weights", str(_hf_dir(hf, tmp_path / "layer_idx", scale_attn_by_inverse_layer_idx=True))],
            "scale_attn_by_inverse_layer_idx",
        ),
        (
            ["--weights", str(_hf_dir(hf, tmp_path / "upcast", reorder_and_upcast_attn=True))],
            "reorder_and_upcast_attn",
        ),
        (["--weights", str(tmp_path / "untied.pt")], "differs from transformer.wte.weight"),
        (
            ["--weights", str(files["hf safetensors"]), "--heads", "2"],
            "contradicts the checkpoint's own config",
        ),
        (["--weights", str(files["hf safetensors"]), "--format", "gguf"], "--format"),
    ]
    for args, fragment in cases:
        assert_one_line_error(_cli("load-weights", *args), fragment)
    assert not marker.exists()
    nano_no_bias = tmp_path / "no_bias.pt"
    nanogpt_checkpoint(nano_hf, nano_no_bias, bias=False)
    assert_one_line_error(_cli("params", "--weights", str(nano_no_bias)), "bias=False")


def test_open_checkpoint_detects_by_content_not_name(files: dict[str, Path], tmp_path: Path) -> None:
    """A nanoGPT checkpoint renamed to .safetensors is still read as what it is."""
    renamed = tmp_path / "ckpt.safetensors"
    renamed.write_bytes(files["nanogpt ckpt.pt"].read_bytes())
    assert open_checkpoint(renamed).checkpoint_format == "nanogpt"
    with pytest.raises(WeightsError, match="not a toolkit export"):
        open_checkpoint(renamed, "toolkit")


def test_n_head_must_divide_n_embd_in_the_library(hf: GPT2LMHeadModel, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not divisible"):
        read_config(_hf_dir(hf, tmp_path / "m", n_head=5))
    assert read_config(_hf_dir(hf, tmp_path / "ok")) == ModelConfig(**{**TINY.to_dict()})


def test_search_finds_eps_and_gelu_where_no_config_is_recorded(tmp_path: Path) -> None:
    """A supplied-format checkpoint of a GPT-2 with eps 1e-6 and the tanh GELU: the search over
    head count × GELU × eps, run against GPT-2's own logits, finds all three, and names a runner-up
    that is measurably worse on every example."""
    config = TINY.replace(norm_eps=1e-6, gelu="tanh")
    reference = gpt2(config, seed=7)
    weights, examples = write_pair(tmp_path, to_supplied(reference), gpt2_examples(reference))
    model, report = load_checkpoint(weights, examples=examples, atol=2e-5)  # float32 is good to ~1e-6
    assert report.n_heads_source == "search"
    assert report.search is not None
    chosen = report.search.chosen
    assert (chosen.n_heads, chosen.gelu, chosen.norm_eps) == (3, "tanh", 1e-6)
    assert model.config == config
    assert report.passed
    runner = report.search.runner_up
    assert runner is not None
    assert runner.examples_run == len(report.results)  # compared on every example, as the chosen one
    assert runner.max_abs_diff > report.atol >= chosen.max_abs_diff
    assert report.search.margin == pytest.approx(runner.max_abs_diff / chosen.max_abs_diff)
    divisors = [h for h in range(1, 25) if 24 % h == 0]
    assert len(report.search.trials) == len(divisors) * 2 * 4  # head counts × GELU forms × eps values
    data = report.to_dict()["search"]
    assert data["chosen"]["label"] == "n_heads=3, GELU tanh, eps 1e-06"
    assert data["indistinguishable"] == []

    # At a looser tolerance eps 1e-12 fits as well: the report says the examples cannot tell them apart.
    _, loose = load_checkpoint(weights, examples=examples, atol=1e-4)
    assert loose.search is not None
    assert (3, "tanh", 1e-12) in [(t.n_heads, t.gelu, t.norm_eps) for t in loose.search.indistinguishable]
    assert "cannot tell" in search_text(loose.search)


def test_a_model_wrapper_of_the_supplied_format_is_not_taken_for_nanogpt(tmp_path: Path) -> None:
    """{"model": state} with the supplied format's names stays the supplied format (no model_args needed)."""
    reference = gpt2(TINY)
    torch.save({"model": to_supplied(reference), "epoch": 3}, tmp_path / "wrapped.pt")
    model, report = load_checkpoint(tmp_path / "wrapped.pt", n_heads=3)
    assert report.checkpoint_format == "supplied"
    with torch.no_grad():
        torch.testing.assert_close(model(IDS), reference(IDS).logits, rtol=0, atol=1e-5)
