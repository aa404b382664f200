"""The ablation study: each variant is SPEC.md's function, and every metric matches NumPy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from reference import copy_hf_into_toolkit, hf_gpt2, randomize_

from toolkit import ModelConfig, Transformer
from toolkit.errors import ConfigError, InputError
from toolkit.studies.ablation import (
    AblationRow,
    LatencyChange,
    OutputChange,
    classic_variants,
    eps_variant,
    gelu_variant,
    measure_output_changes,
    no_scale_variant,
    output_change,
    residual_variant,
    run_ablation,
    select_variants,
    sharing_forwards,
    variant_model,
)
from toolkit.tables.ablation import verdict_text
from toolkit.tables.weights import load_summary
from toolkit.timing import Comparison
from toolkit.timing.decision import holm
from toolkit.weights import load_checkpoint, read_examples, shipped_files

TINY = ModelConfig(vocab_size=64, max_seq_len=24, d_model=32, n_heads=4, n_layers=2, d_mlp=80)


def _ids(config: ModelConfig, seq_len: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, config.vocab_size, (2, seq_len), generator=torch.Generator().manual_seed(seed))


def _base_with_gpt2_weights(config: ModelConfig) -> tuple[Transformer, dict[str, torch.Tensor]]:
    """A float64 toolkit model with randomised GPT-2 weights (norm gains and biases too)."""
    hf = hf_gpt2(config).double()
    randomize_(hf, seed=3)
    model = Transformer(config).double().eval()
    copy_hf_into_toolkit(hf, model)
    return model, hf.state_dict()


def _gpt2_variant_logits(
    config: ModelConfig, hf_state: dict[str, torch.Tensor], ids: torch.Tensor
) -> torch.Tensor:
    hf = hf_gpt2(config).double()
    hf.load_state_dict(hf_state)
    with torch.no_grad():
        return hf(ids).logits


# ------------------------------------------------------------------------------------------------
# Metrics against NumPy
# ------------------------------------------------------------------------------------------------


def _numpy_metrics(base: np.ndarray, variant: np.ndarray) -> dict[str, float]:
    base = base.reshape(-1, base.shape[-1]).astype(np.float64)
    variant = variant.reshape(-1, variant.shape[-1]).astype(np.float64)
    diff = base - variant

    def log_softmax(x: np.ndarray) -> np.ndarray:
        shifted = x - x.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))

    log_p, log_q = log_softmax(base), log_softmax(variant)
    return {
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "mean_abs_diff": float(np.mean(np.abs(diff))),
        "std_abs_diff": float(np.std(np.abs(diff))),
        "pct_base_greater": float(100 * np.mean(base > variant)),
        "max_abs_diff": float(np.max(np.abs(diff))),
        "kl": float(np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=1))),
        "top1_agreement": float(100 * np.mean(base.argmax(axis=1) == variant.argmax(axis=1))),
        "base_std": float(np.std(base)),
    }


@pytest.mark.parametrize("shape", [(1, 2), (5, 7), (3, 4, 11)])
def test_metrics_match_numpy(shape: tuple[int, ...]) -> None:
    """Every output metric equals its NumPy float64 formula on small random arrays."""
    rng = np.random.default_rng(sum(shape))
    base = rng.normal(size=shape).astype(np.float32)
    variant = (base + rng.normal(scale=0.3, size=shape)).astype(np.float32)
    variant.reshape(-1)[::3] = base.reshape(-1)[::3]  # some ties, so > and >= differ
    result = output_change(torch.from_numpy(base), torch.from_numpy(variant))
    expected = _numpy_metrics(base, variant)
    for name, value in expected.items():
        assert getattr(result, name) == pytest.approx(value, rel=1e-12, abs=1e-15), name
    assert result.rmse_over_base_std == pytest.approx(expected["rmse"] / expected["base_std"], rel=1e-12)
    assert result.n_logits == base.size
    assert result.n_positions == base.size // shape[-1]


def test_metrics_hand_computed() -> None:
    """A 2x2 case worked by hand: signs, the top-1 flip and the KL of a known pair."""
    base = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    variant = torch.tensor([[1.0, 0.0], [2.0, 0.0]])  # first row swapped, second identical
    result = output_change(base, variant)
    assert result.rmse == pytest.approx(math.sqrt(2 / 4))
    assert result.mean_abs_diff == pytest.approx(0.5)
    assert result.std_abs_diff == pytest.approx(0.5)
    assert result.pct_base_greater == pytest.approx(25.0)
    assert result.max_abs_diff == pytest.approx(1.0)
    assert result.top1_agreement == pytest.approx(50.0)
    p = 1 / (1 + math.exp(-1))  # softmax([0, 1])[1]
    assert result.kl == pytest.approx(((1 - p) * math.log((1 - p) / p) + p * math.log(p / (1 - p))) / 2)


def test_identical_logits_give_zero() -> None:
    """The model compared with itself changes nothing."""
    logits = torch.randn(4, 9, generator=torch.Generator().manual_seed(0))
    result = output_change(logits, logits.clone())
    assert (result.rmse, result.max_abs_diff, result.kl, result.pct_base_greater) == (0, 0, 0, 0)
    assert result.top1_agreement == 100.0


def test_metrics_refuse_mismatched_shapes() -> None:
    """Logits of different shapes are an input error, not a broadcast."""
    with pytest.raises(InputError, match="differ in shape"):
        output_change(torch.zeros(3, 4), torch.zeros(3, 5))


# ------------------------------------------------------------------------------------------------
# Variants against transformers' GPT2
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "gpt2_config"),
    [
        (no_scale_variant(), TINY.replace(scale_attention=False)),
        (gelu_variant("tanh"), TINY.replace(gelu="tanh")),
        (eps_variant(1e-1), TINY.replace(norm_eps=1e-1)),
    ],
    ids=["no-scale", "gelu-tanh", "eps"],
)
def test_variant_equals_gpt2(variant: object, gpt2_config: ModelConfig) -> None:
    """no-scale = scale_attn_weights=False, tanh GELU = gelu_new, eps = layer_norm_epsilon."""
    assert hasattr(variant, "config")
    base, hf_state = _base_with_gpt2_weights(TINY)
    ids = _ids(TINY, TINY.max_seq_len)
    ablated = variant_model(base, variant)  # type: ignore[arg-type]
    assert ablated.config == gpt2_config
    with torch.no_grad():
        ours, base_logits = ablated(ids), base(ids)
    reference = _gpt2_variant_logits(gpt2_config, hf_state, ids)
    torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-9)
    assert (ours - base_logits).abs().max() > 1e-6  # the change is real, not a no-op


def test_variant_model_holds_base_weights() -> None:
    """A variant model has exactly the base model's parameters and is in eval mode."""
    base = Transformer(TINY).eval()
    for variant in classic_variants():
        ablated = variant_model(base, variant)
        assert not ablated.training
        for (name, ours), (_, theirs) in zip(
            ablated.state_dict().items(), base.state_dict().items(), strict=True
        ):
            assert torch.equal(ours, theirs), (variant.name, name)


def test_timed_arms_share_one_copy_of_the_weights_and_compute_each_variant() -> None:
    """Every timed arm reads the same fresh copy of the weights (not the base model's own tensors)
    and computes what variant_model's copy of that variant computes."""
    torch.manual_seed(0)
    base = Transformer(TINY).eval()
    variants = classic_variants()
    configs = {"baseline": TINY, "baseline (A/A)": TINY} | {v.name: v.config(TINY) for v in variants}
    ids = _ids(TINY, 12)[0].reshape(1, -1)
    arms = sharing_forwards(base, configs, ids)
    assert list(arms) == list(configs)
    models = [arm.func for arm in arms.values()]  # type: ignore[attr-defined]
    for key, tensor in base.state_dict().items():
        pointers = {model.state_dict()[key].data_ptr() for model in models}
        assert len(pointers) == 1, key
        assert tensor.data_ptr() not in pointers, key
    with torch.no_grad():
        assert torch.equal(arms["baseline (A/A)"](), base(ids))
        for variant in variants:
            torch.testing.assert_close(
                arms[variant.name](), variant_model(base, variant)(ids), rtol=0, atol=0
            )


# ------------------------------------------------------------------------------------------------
# Residual variants against a hand-written float64 forward (independent of toolkit/model.py)
# ------------------------------------------------------------------------------------------------


def _reference_forward(
    state: dict[str, torch.Tensor], config: ModelConfig, ids: torch.Tensor, residual: str
) -> torch.Tensor:
    """SPEC.md's model written out in float64 from the weights, with the given residual wiring."""
    w = {name: tensor.to(torch.float64) for name, tensor in state.items()}
    n_heads, eps = config.n_heads, config.norm_eps

    def layer_norm(x: torch.Tensor, prefix: str) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # biased, as torch.nn.LayerNorm
        return (x - mean) / torch.sqrt(var + eps) * w[f"{prefix}.weight"] + w[f"{prefix}.bias"]

    def linear(x: torch.Tensor, prefix: str) -> torch.Tensor:
        return x @ w[f"{prefix}.weight"].T + w[f"{prefix}.bias"]

    def attention(x: torch.Tensor, prefix: str) -> torch.Tensor:
        B, S, d = x.shape
        hs = d // n_heads
        qkv = linear(x, f"{prefix}.qkv")
        heads = [
            qkv[..., i * d : (i + 1) * d].reshape(B, S, n_heads, hs).permute(0, 2, 1, 3) for i in range(3)
        ]
        q, k, v = heads  # (B, nh, S, hs)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hs)  # (B, nh, S, S)
        future = torch.triu(torch.ones(S, S, dtype=torch.bool), diagonal=1)
        scores = scores.masked_fill(future, -math.inf)
        weights = torch.exp(scores - scores.max(dim=-1, keepdim=True).values)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        y = (weights @ v).permute(0, 2, 1, 3).reshape(B, S, d)
        return linear(y, f"{prefix}.out_proj")

    def mlp(x: torch.Tensor, prefix: str) -> torch.Tensor:
        u = linear(x, f"{prefix}.up")
        return linear(0.5 * u * (1 + torch.erf(u / math.sqrt(2))), f"{prefix}.down")

    S = ids.shape[1]
    h = w["token_embedding.weight"][ids] + w["position_embedding.weight"][:S]
    for i in range(config.n_layers):
        p = f"blocks.{i}"
        if residual == "parallel":
            h = (
                h
                + attention(layer_norm(h, f"{p}.ln1"), f"{p}.attn")
                + mlp(layer_norm(h, f"{p}.ln2"), f"{p}.mlp")
            )
            continue
        t = h + attention(layer_norm(h, f"{p}.ln1"), f"{p}.attn")
        m = mlp(layer_norm(t, f"{p}.ln2"), f"{p}.mlp")
        h = {"standard": t + m, "input-skip": h + m, "no-mlp-skip": m}[residual]
    return layer_norm(h, "ln_final") @ w["token_embedding.weight"].T


@pytest.mark.parametrize("residual", ["standard", "input-skip", "no-mlp-skip", "parallel"])
def test_residual_variants_equal_reference_forward(residual: str) -> None:
    """Each residual wiring computes SPEC.md's formula (float64 reference written in this test)."""
    base, _ = _base_with_gpt2_weights(TINY)
    ids = _ids(TINY, 17)
    model = base if residual == "standard" else variant_model(base, residual_variant(residual))
    with torch.no_grad():
        ours = model(ids)
    reference = _reference_forward(base.state_dict(), TINY, ids, residual)
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------------------------
# Variant selection and the output study
# ------------------------------------------------------------------------------------------------


def test_classic_suite() -> None:
    """No flag means SPEC.md's six classic variants, in order."""
    names = [v.name for v in select_variants(ModelConfig())]
    assert names == [
        "eps 1e-4",
        "no-scale",
        "gelu tanh",
        "residual input-skip",
        "residual no-mlp-skip",
        "residual parallel",
    ]


def test_flags_select_variants() -> None:
    """Flags combine, each its own row; repeated residuals collapse."""
    variants = select_variants(ModelConfig(), eps=3e-5, gelu="tanh", residuals=["parallel", "parallel"])
    assert [v.name for v in variants] == ["eps 3e-5", "gelu tanh", "residual parallel"]
    assert variants[0].config(ModelConfig()).norm_eps == 3e-5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eps": 1e-5}, "leaves the model unchanged"),
        ({"gelu": "none"}, "leaves the model unchanged"),
        ({"residuals": ["standard"]}, "leaves the model unchanged"),
        ({"residuals": ["sideways"]}, "unknown residual"),
        ({"gelu": "relu"}, "unknown gelu"),
        ({"norm": "bogus"}, "unknown norm"),
        ({"norm": "rms"}, "cannot run with the same weights"),
        ({"norm": "none"}, "cannot run with the same weights"),
        ({"eps": -1.0}, "norm_eps must be a positive"),
    ],
)
def test_bad_variants_refused(kwargs: dict[str, object], message: str) -> None:
    """A variant that is no change, or no valid change, is a ConfigError naming it."""
    with pytest.raises(ConfigError, match=message):
        select_variants(ModelConfig(), **kwargs)  # type: ignore[arg-type]


def test_custom_norm_is_the_same_function() -> None:
    """--norm custom runs the toolkit's LayerNorm on the same weights: logits equal to float64 rounding."""
    base, _ = _base_with_gpt2_weights(TINY)
    (variant,) = select_variants(TINY, norm="custom")
    assert variant.name == "norm custom"
    _, (change,) = measure_output_changes(base, [torch.arange(TINY.max_seq_len) % TINY.vocab_size], [variant])
    assert change.rmse_over_base_std < 1e-12
    assert change.top1_agreement == 100.0


def test_measure_output_changes_concatenates_examples() -> None:
    """Metrics run over all positions of all examples (lengths 1, 5 and max) in float64."""
    base, _ = _base_with_gpt2_weights(TINY)
    base = base.float()
    inputs = [torch.tensor([3]), torch.arange(5), torch.arange(TINY.max_seq_len) % TINY.vocab_size]
    base_logits, changes = measure_output_changes(base, inputs, [eps_variant(1e-4), no_scale_variant()])
    assert base_logits.dtype == torch.float64
    assert base_logits.shape == (1 + 5 + TINY.max_seq_len, TINY.vocab_size)
    assert [c.n_positions for c in changes] == [1 + 5 + TINY.max_seq_len] * 2
    eps_change, no_scale_change = changes
    assert 0 < eps_change.rmse < no_scale_change.rmse
    with torch.no_grad():
        expected = torch.cat([base.double()(ids)[0] for ids in inputs]) - torch.cat(
            [variant_model(base.double(), eps_variant(1e-4))(ids)[0] for ids in inputs]
        )
    assert eps_change.rmse == pytest.approx(float(expected.square().mean().sqrt()), rel=1e-9)


def test_eps_moves_shipped_logits() -> None:
    """eps 1e-5 -> 1e-4 on the shipped checkpoint gives a non-zero, measurable RMSE (the old bug gave 0)."""
    weights, examples = shipped_files()
    model, report = load_checkpoint(weights, examples=examples, n_heads=2)
    assert report.passed, load_summary(report)
    inputs = [example.input_ids for example in read_examples(examples)]
    _, (change,) = measure_output_changes(model, inputs, [eps_variant(1e-4)])
    assert change.rmse > 0
    assert change.rmse_over_base_std > 1e-4  # far above float64 rounding (~1e-15)
    assert change.max_abs_diff > change.rmse > 0


def test_latency_change_from_interleaved_samples() -> None:
    """Latency rows come from the timing engine's paired comparison: a planted +10% is significant."""
    rng = np.random.default_rng(0)
    base = 10.0 * (1 + 0.01 * rng.standard_normal(200))
    samples = {
        "baseline": list(base),
        "baseline (A/A)": list(base * (1 + 0.01 * rng.standard_normal(200))),
        "slow": list(base * 1.10 * (1 + 0.01 * rng.standard_normal(200))),
        "same": list(base * (1 + 0.01 * rng.standard_normal(200))),
    }
    comparison = Comparison.from_samples(samples, "baseline")
    slow, same = (LatencyChange.from_comparison(comparison, name) for name in ("slow", "same"))
    assert slow.significant
    assert slow.diff_pct == pytest.approx(10.0, abs=0.5)
    assert slow.ci_low_pct < slow.diff_pct < slow.ci_high_pct
    assert slow.diff_ms == pytest.approx(slow.base_ms * slow.diff_pct / 100)
    assert slow.base_ms == pytest.approx(float(np.median(base)))
    assert not same.significant


def test_run_ablation_without_latency_rows_and_frame() -> None:
    """run_ablation without timing: one row per variant, a verdict each, JSON rows and a DataFrame."""
    model = Transformer(TINY).eval()
    variants = select_variants(TINY, no_scale=True, residuals=["parallel"])
    result = run_ablation(model, [torch.arange(9)], variants, timing=None)
    assert result.latency is None
    rows = result.to_dict()
    assert [row["change"] for row in rows] == ["no-scale", "residual parallel"]
    verdicts = [verdict_text(row) for row in result.rows]
    pairs = zip(rows, verdicts, strict=True)
    assert all(row["latency"] is None and "of their spread" in verdict for row, verdict in pairs)
    frame = result.to_frame()
    assert list(frame["change"]) == ["no-scale", "residual parallel"]
    assert frame["rmse"].tolist() == [row["rmse"] for row in rows]


def test_an_output_change_below_float32_noise_is_flagged() -> None:
    """eps 1e-5 -> 1.000001e-5 moves the float64 logits less than float32 rounding of the base does
    (measured here: the base in float32 against float64); no-mlp-skip moves them far more."""
    torch.manual_seed(0)
    model = Transformer(TINY).eval()
    inputs = list(_ids(TINY, 16))
    _, (tiny, large) = measure_output_changes(
        model, inputs, [eps_variant(1.000001e-5), residual_variant("no-mlp-skip")]
    )
    with torch.no_grad():
        logits = [model.double()(ids.reshape(1, -1))[0] for ids in inputs]
        rounded = [model.float()(ids.reshape(1, -1))[0].double() for ids in inputs]
    expected = float(torch.cat([a - b for a, b in zip(logits, rounded, strict=True)]).square().mean().sqrt())
    assert tiny.float32_noise_rmse == pytest.approx(expected, rel=1e-6)
    assert tiny.below_float32_noise
    assert not large.below_float32_noise
    assert "below float32 noise" in verdict_text(_row(tiny))
    assert "below float32 noise" not in verdict_text(_row(large))


def _row(change: OutputChange) -> AblationRow:
    return AblationRow(change="v", config_changes={}, output=change, latency=None)


def test_latency_verdicts_are_holm_adjusted_over_the_variants_with_a_detectable_effect() -> None:
    rng = np.random.default_rng(2)
    base = 10.0 * (1 + 0.01 * rng.standard_normal(300))
    samples = {"baseline": list(base), "baseline (A/A)": list(base * (1 + 0.01 * rng.standard_normal(300)))}
    samples |= {f"v{i}": list(base * (1 + 0.01 * rng.standard_normal(300))) for i in range(5)}
    samples["slow"] = list(base * 1.02 * (1 + 0.01 * rng.standard_normal(300)))
    comparison = Comparison.from_samples(samples, "baseline")
    changes = {name: LatencyChange.from_comparison(comparison, name) for name in samples if name[0] in "vs"}
    assert changes["slow"].significant
    assert all(change.family_size == 6 for change in changes.values())
    assert holm([c.p_value for c in changes.values()]) == pytest.approx(
        [c.p_adjusted for c in changes.values()]
    )
    assert 0.1 < changes["slow"].detectable_pct < 1.0  # 300 rounds of ~1.4% paired noise
    quiet = next(change for change in changes.values() if not change.significant)
    assert f"below ±{quiet.detectable_pct:.1f}%" in verdict_text(_latency_row(quiet))


def _latency_row(latency: LatencyChange) -> AblationRow:
    output = output_change(torch.zeros(2, 3), torch.zeros(2, 3))
    return AblationRow(change="v", config_changes={}, output=output, latency=latency)
