"""The families people download today (Llama, SmolLM, Qwen2, Qwen3, Mistral, Pythia), written by
`transformers` itself: every directory loads to the logits of the `transformers` class that wrote it,
counts its parameters as that class does, reads both config styles the same, and the eps ablation
equals the class built with that eps. What the model cannot express is refused by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from cli_checks import assert_one_line_error
from families import FAMILIES, VOCAB, family_model, hub_style, random_ids, write_family
from transformers import AutoConfig, AutoModelForCausalLM
from typer.testing import CliRunner

from toolkit.cli import app
from toolkit.config import load_config
from toolkit.studies.ablation import eps_variant, variant_model
from toolkit.studies.params import count_report
from toolkit.weights import Example, load_checkpoint, read_config, write_examples

runner = CliRunner()
HUB_CONFIGS = Path(__file__).parent.parent / "data" / "hub_configs"
SPEC_COUNTS = {  # ../shared/SPEC.md, "The model families people have now" (tied head counted once)
    "smollm2-135m": 134_515_008,
    "qwen2.5-0.5b": 494_032_768,
    "tinyllama-1.1b": 1_100_048_384,
    "llama-3.2-1b": 1_235_814_400,
}
LONGEST = 64  # every family's max_position_embeddings; llama3-rope was trained at 16


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(ids)
    return out if isinstance(out, torch.Tensor) else out.logits


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_reproduces_transformers_logits(name: str, tmp_path: Path) -> None:
    """Each family's directory loads to the logits of the transformers class that wrote it."""
    reference, directory = write_family(name, tmp_path / name)
    model, report = load_checkpoint(directory)
    assert report.checkpoint_format == "hf"
    ids = random_ids(LONGEST)
    torch.testing.assert_close(_logits(model, ids), _logits(reference, ids), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_hub_style_config_reads_the_same(name: str, tmp_path: Path) -> None:
    """transformers 4.x's config keys (rope_theta, rope_scaling, rotary_pct, rotary_emb_base) give the
    same config and logits as transformers 5's rope_parameters."""
    reference, directory = write_family(name, tmp_path / name)
    modern = read_config(directory)
    hub_style(directory)
    assert "rope_parameters" not in json.loads((directory / "config.json").read_text())
    assert read_config(directory) == modern
    model, _ = load_checkpoint(directory)
    ids = random_ids(LONGEST, seed=1)
    torch.testing.assert_close(_logits(model, ids), _logits(reference, ids), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_storage_loads_into_float32(dtype: torch.dtype, tmp_path: Path) -> None:
    """Weights stored in bfloat16 (as on the Hub) or float16 load into a float32 model with those exact
    values."""
    reference, directory = write_family("llama-gqa-untied", tmp_path / "half", dtype=dtype)
    model, _ = load_checkpoint(directory)
    assert next(model.parameters()).dtype == torch.float32
    embedding = reference.get_input_embeddings().weight
    assert torch.equal(model.token_embedding.weight, embedding)
    assert torch.equal(embedding, embedding.to(dtype).float())  # really half-precision values
    ids = random_ids(LONGEST, seed=2)
    torch.testing.assert_close(_logits(model, ids), _logits(reference, ids), rtol=1e-5, atol=1e-5)


def test_sharded_directory_loads(tmp_path: Path) -> None:
    """A directory saved in shards (model.safetensors.index.json) loads like a single file."""
    reference = family_model("qwen2")
    directory = tmp_path / "sharded"
    reference.save_pretrained(directory, max_shard_size="20KB")
    assert (directory / "model.safetensors.index.json").is_file()
    model, _ = load_checkpoint(directory)
    ids = random_ids(LONGEST, seed=5)
    torch.testing.assert_close(_logits(model, ids), _logits(reference, ids), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_params_counts_as_transformers_does(name: str, tmp_path: Path) -> None:
    """`params --weights DIR` counts the parameters num_parameters() counts (a tied head once)."""
    reference, directory = write_family(name, tmp_path / name)
    assert count_report(read_config(directory)).total_params == reference.num_parameters()
    result = runner.invoke(app, ["params", "--weights", str(directory), "--json", "--no-measure"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["total_params"] == reference.num_parameters()
    config = reference.config
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    assert data["kv_cache_bytes_per_token"] == 2 * config.num_hidden_layers * kv_heads * head_dim * 4


@pytest.mark.parametrize("name", ["llama-gqa-untied", "qwen3", "pythia"])
def test_eps_variant_equals_transformers_with_that_eps(name: str, tmp_path: Path) -> None:
    """ablate's eps 1e-4 variant of a loaded family model equals the transformers class built with eps
    1e-4 and the same weights."""
    reference, directory = write_family(name, tmp_path / name)
    model, _ = load_checkpoint(directory)
    variant = variant_model(model, eps_variant(1e-4))
    key = "layer_norm_eps" if reference.config.model_type == "gpt_neox" else "rms_norm_eps"
    other = type(reference)(type(reference.config).from_dict({**reference.config.to_dict(), key: 1e-4}))
    other.load_state_dict(reference.state_dict())
    ids = random_ids(LONGEST, seed=3)
    theirs = _logits(other.eval(), ids)
    torch.testing.assert_close(_logits(variant, ids), theirs, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(_logits(model, ids), theirs, rtol=0, atol=1e-7)  # eps really moved them


@pytest.mark.parametrize("name", sorted(SPEC_COUNTS))
def test_hub_config_counts(name: str) -> None:
    """`params --config` on the Hub's config.json reproduces SPEC's count and transformers' own (built
    on the meta device), and the KV cache per token is 2 · layers · kv_heads · head_dim values."""
    path = HUB_CONFIGS / f"{name}.json"
    result = runner.invoke(app, ["params", "--config", str(path), "--json", "--no-measure"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["total_params"] == SPEC_COUNTS[name]
    with torch.device("meta"):
        theirs = AutoModelForCausalLM.from_config(AutoConfig.for_model(**json.loads(path.read_text())))
    assert data["total_params"] == theirs.num_parameters()
    config = theirs.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim
    assert data["kv_cache_bytes_per_token"] == 4 * per_token
    assert data["kv_cache_bytes_per_token_by_dtype"]["bfloat16/float16"] == 2 * per_token
    assert data["kv_cache_bytes_full_context"] == 4 * per_token * config.max_position_embeddings
    assert load_config(path).rope_scaling == ("llama3" if name == "llama-3.2-1b" else "none")


def test_llama_3_2_kv_cache_is_64_kib_per_token() -> None:
    """SPEC's figure people size their context by: Llama-3.2-1B holds 64 KiB per token in float32."""
    result = runner.invoke(
        app, ["params", "--config", str(HUB_CONFIGS / "llama-3.2-1b.json"), "--json", "--no-measure"]
    )
    assert json.loads(result.stdout)["kv_cache_bytes_per_token"] == 64 * 1024


def test_load_weights_proves_a_family_checkpoint(tmp_path: Path) -> None:
    """`load-weights` proves a Llama directory against examples that transformers computed, and fails
    (exit 1) on examples from other weights."""
    reference, directory = write_family("llama-gqa-untied", tmp_path / "llama")
    examples = [
        Example(ids, _logits(reference, ids[None])[0]) for ids in random_ids(LONGEST, batch=3, seed=4)
    ]
    good = tmp_path / "examples.safetensors"
    write_examples(examples, good)
    result = runner.invoke(
        app,
        ["load-weights", "--weights", str(directory), "--examples", str(good), "--json", "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["passed"]
    assert data["verified"]
    assert data["format"] == "hf"
    assert data["config"]["n_kv_heads"] == 2
    assert data["config"]["tied_head"] is False
    other = family_model("llama-gqa-untied", rms_norm_eps=1e-2)
    wrong = [Example(e.input_ids, _logits(other, e.input_ids[None])[0]) for e in examples]
    write_examples(wrong, tmp_path / "wrong.safetensors")
    result = runner.invoke(
        app, ["load-weights", "--weights", str(directory), "--examples", str(tmp_path / "wrong.safetensors"),
              "--json", "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 1


def test_checkpoint_tokenizer_scores_text(tmp_path: Path) -> None:
    """The checkpoint's own tokenizer.json scores text; the loss equals the transformers model's mean
    next-token cross-entropy over the same windows."""
    shipped = Path(__file__).parent.parent.parent / "weights"
    reference, directory = write_family("smollm-mqa-tied", tmp_path / "smol", vocab_size=512)
    shutil.copy(shipped / "tokenizer.json", directory / "tokenizer.json")
    text = tmp_path / "text.txt"
    text.write_text((shipped / "heldout.txt").read_text(encoding="utf-8")[:6000], encoding="utf-8")
    result = runner.invoke(
        app, ["load-weights", "--weights", str(directory), "--text", str(text), "--text-window", "32",
              "--json", "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)["text"]
    from tokenizers import Tokenizer

    ids = torch.tensor(Tokenizer.from_file(str(directory / "tokenizer.json")).encode(text.read_text()).ids)
    count = (len(ids) - 1) // 32  # windows of 32 inputs, each target the next token (the last: past it)
    inputs = ids[: count * 32].view(count, 32)
    targets = ids[1 : count * 32 + 1].view(count, 32)
    logits = _logits(reference, inputs)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 512), targets.reshape(-1))
    assert scored["loss_nats"] == pytest.approx(float(loss), abs=1e-4)


# --------------------------------------------------------------------------------------------------
# What the model cannot express: one line, exit 2


def _config_file(tmp_path: Path, name: str, **values: object) -> Path:
    path = tmp_path / f"{name}.json"
    base = json.loads((HUB_CONFIGS / "smollm2-135m.json").read_text())
    path.write_text(json.dumps({**base, **values}))
    return path


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "num_local_experts": 8},
         "mixture of experts (mixtral"),
        ({"model_type": "qwen2_moe", "architectures": ["Qwen2MoeForCausalLM"]},
         "mixture of experts (qwen2_moe"),
        ({"num_local_experts": 8}, "mixture of experts"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2048}},
         "rope_type 'yarn'"),
        ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "rope_type 'dynamic'"),
        ({"final_logit_softcapping": 30.0}, "logit soft-capping"),
        ({"model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"]}, "describes a gemma2 model"),
        ({"hidden_act": "gelu"}, "hidden_act 'gelu' in a gated MLP"),
        ({"num_key_value_heads": 4}, "n_kv_heads=4 does not divide n_heads=9"),
    ],
)  # fmt: skip
def test_refused_by_name(values: dict[str, object], fragment: str, tmp_path: Path) -> None:
    """A config the model cannot express is one line naming it, exit 2."""
    path = _config_file(tmp_path, "refused", **values)
    assert_one_line_error(runner.invoke(app, ["params", "--config", str(path), "--no-measure"]), fragment)


def test_sliding_window_narrower_than_the_sequence_is_refused(tmp_path: Path) -> None:
    """A Mistral window narrower than the sequence asked for is refused; within it the model is exact."""
    reference, directory = write_family("mistral", tmp_path / "mistral", sliding_window=16)
    assert_one_line_error(
        runner.invoke(app, ["params", "--weights", str(directory), "--seq-len", "32", "--device", "cpu"]),
        "sliding attention window of 16 tokens",
    )
    model, _ = load_checkpoint(directory)
    ids = random_ids(16)
    torch.testing.assert_close(_logits(model, ids), _logits(reference, ids), rtol=1e-5, atol=1e-5)
    examples = [
        Example(ids[0], _logits(reference, ids[:1])[0]),
        Example(random_ids(32)[0], torch.zeros(32, VOCAB)),
    ]
    write_examples(examples, tmp_path / "examples.safetensors")
    assert_one_line_error(
        runner.invoke(app, ["load-weights", "--weights", str(directory), "--examples",
                            str(tmp_path / "examples.safetensors"), "--device", "cpu"]),
        "sliding attention window",
    )  # fmt: skip


def test_model_that_does_not_fit_is_counted_not_built() -> None:
    """`params` on a model larger than RAM counts it on the meta device and says why memory is absent."""
    result = runner.invoke(app, ["params", "--vocab", "2000000000", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["memory"] is None
    d, mlp = 256, 1280  # the default model's sizes: one block holds attention, MLP and two LayerNorms
    block = (d * 3 * d + 3 * d) + (d * d + d) + (d * mlp + mlp) + (mlp * d + d) + 2 * 2 * d
    assert data["total_params"] == 2_000_000_000 * d + 1024 * d + 3 * block + 2 * d
    assert "available RAM" in data["memory_skipped"]
    assert "--vocab" in data["memory_skipped"]


def test_bare_family_state_dict_is_refused(tmp_path: Path) -> None:
    """A Llama state dict without its config.json is refused by name: no shape records the rest."""
    _, directory = write_family("llama-gqa-untied", tmp_path / "llama")
    bare = directory / "model.safetensors"
    assert_one_line_error(
        runner.invoke(app, ["load-weights", "--weights", str(bare), "--device", "cpu"]),
        "bare state dict with a model family's key names (model.layers.*)",
    )
