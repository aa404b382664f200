"""The one trainer and ``ablate --train``'s comparison over seeds, on tiny models trained a few steps.

References: the same computation run twice (determinism), a variant that is the base itself (Δ exactly
0), a planted harmful change, and the t-interval's coverage on synthetic per-seed numbers drawn from a
known law (NumPy), independently of the code under test.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from toolkit import ModelConfig
from toolkit.errors import ConfigError, DataError
from toolkit.model import Transformer
from toolkit.studies.ablation import select_variants
from toolkit.studies.ablation.training import Arm, compare_arms, run_training_ablation, steps_to_reach
from toolkit.studies.ablation.variants import Variant, ffn_variant
from toolkit.timing.decision import paired_t
from toolkit.training import Recipe
from toolkit.training.loop import (
    Batches,
    Trainer,
    TrainRun,
    build_model,
    extend_positions_,
    heldout_windows,
    train_run,
)

VOCAB = 40
BASE = ModelConfig(vocab_size=VOCAB, max_seq_len=16, d_model=16, n_heads=2, n_layers=1, d_mlp=32)
RECIPE = Recipe(steps=12, batch=4, seq_len=16, lr=1e-2, eval_every=4)
CPU = torch.device("cpu")


def _text(tokens: int, seed: int) -> torch.Tensor:
    """A learnable token stream: a noisy repeating pattern over the vocabulary."""
    generator = torch.Generator().manual_seed(seed)
    pattern = torch.arange(tokens) % 7 * 5 % VOCAB
    noise = torch.randint(0, VOCAB, (tokens,), generator=generator)
    keep = torch.rand(tokens, generator=generator) < 0.8
    return torch.where(keep, pattern, noise)


TRAIN, HELDOUT = _text(4000, 0), _text(600, 1)


def _run(config: ModelConfig, seed: int, recipe: Recipe = RECIPE) -> TrainRun:
    model = build_model(config, seed, CPU)
    windows = heldout_windows(HELDOUT, recipe.seq_len, 8)
    return train_run(model, Batches(TRAIN, recipe, seed), recipe, windows, name="x")


def test_the_same_seed_gives_the_same_losses() -> None:
    first, second = _run(BASE, 3), _run(BASE, 3)
    assert first.train_losses == second.train_losses
    assert first.eval_losses == second.eval_losses
    assert first.complete
    assert math.isfinite(first.final_loss)
    assert first.eval_steps == [0, 4, 8, 12]
    assert first.final_loss < first.eval_losses[0], "training lowers the held-out loss"
    other = _run(BASE, 4)
    assert other.train_losses != first.train_losses


def test_batches_depend_on_seed_and_step_only() -> None:
    batches = Batches(TRAIN, RECIPE, 5)
    late = batches(7)
    for step in range(7):
        batches(step)
    assert torch.equal(batches(7)[0], late[0])
    inputs, targets = late
    assert inputs.shape == (RECIPE.batch, RECIPE.seq_len)
    assert torch.equal(inputs[:, 1:], targets[:, :-1]), "targets are the inputs one token later"


def test_long_windows_keep_the_tokens_per_step() -> None:
    recipe = Recipe(steps=10, batch=4, seq_len=8, long_every=2, long_len=32)
    batches = Batches(TRAIN, recipe, 0)
    assert batches(0)[0].shape == (4, 8)
    assert batches(1)[0].shape == (1, 32)


def test_long_windows_start_at_long_from() -> None:
    recipe = Recipe(steps=10, batch=4, seq_len=8, long_every=2, long_len=32, long_from=6)
    batches = Batches(TRAIN, recipe, 0)
    shapes = [batches(step)[0].shape for step in range(10)]
    assert shapes == [(4, 8)] * 7 + [(1, 32), (4, 8), (1, 32)]
    with pytest.raises(ConfigError, match="start within"):
        Recipe(steps=10, long_every=2, long_len=256, long_from=10)


def test_context_extension_copies_the_trained_positions_before_the_first_long_step() -> None:
    config = BASE.replace(max_seq_len=20)
    recipe = Recipe(
        steps=6,
        batch=4,
        seq_len=8,
        lr=1e-2,
        weight_decay=0.0,
        eval_every=3,
        long_every=1,
        long_len=20,
        long_from=4,
    )
    model = build_model(config, 0, CPU)
    seen: dict[int, torch.Tensor] = {}

    def table_at(step: int, trained: Transformer) -> None:
        seen[step] = trained.position_embedding.weight.detach().clone()

    trainer = Trainer(
        model, Batches(TRAIN, recipe, 0), recipe, heldout_windows(HELDOUT, 8, 4), after_backward=table_at
    )
    initial = model.position_embedding.weight.detach().clone()
    for step in range(recipe.steps):
        trainer.step(step)
    assert torch.equal(seen[3][8:], initial[8:]), "rows past seq_len get no gradient before the extension"
    at_extension = seen[4]
    assert torch.equal(at_extension[8:16], at_extension[:8])
    assert torch.equal(at_extension[16:20], at_extension[:4])
    assert not torch.equal(model.position_embedding.weight[8:16], model.position_embedding.weight[:8])


def test_extending_a_rotary_model_changes_nothing() -> None:
    model = build_model(BASE.replace(positions="rope"), 0, CPU)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    extend_positions_(model, 8)
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())


def test_learning_rate_warms_up_then_decays_to_a_tenth() -> None:
    recipe = Recipe(steps=100, lr=1.0, warmup=0.1)
    rates = [recipe.learning_rate(step) for step in range(100)]
    assert rates[0] == pytest.approx(0.1)
    assert rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(rates[9:]))
    assert rates[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))


def test_a_diverging_run_is_reported_not_raised() -> None:
    run = _run(BASE, 0, Recipe(steps=30, batch=4, seq_len=16, lr=1e30, eval_every=10))
    assert run.diverged
    assert math.isnan(run.final_loss)
    assert not run.complete


def test_a_variant_identical_to_the_base_differs_by_exactly_zero() -> None:
    same = Variant("norm torch", {"norm": BASE.norm})
    result = run_training_ablation(BASE, [same], RECIPE, TRAIN, HELDOUT, [0, 1, 2], device=CPU)
    assert result is not None
    change = result.changes[0]
    assert change.delta_nats == 0.0
    assert change.ci_low == 0.0
    assert change.ci_high == 0.0
    assert not change.significant
    assert result.variants[0].finals() == result.base.finals()


def test_a_planted_harmful_change_is_found() -> None:
    crippled = Variant("crippled", {"d_model": 2, "n_heads": 1, "d_mlp": 2})
    harmless = Variant("eps 1e-4", {"norm_eps": 1e-4})
    recipe = Recipe(steps=40, batch=8, seq_len=16, lr=1e-2, eval_every=10)
    result = run_training_ablation(
        BASE, [crippled, harmless], recipe, TRAIN, HELDOUT, [0, 1, 2, 3], device=CPU
    )
    assert result is not None
    harmful = result.changes[0]
    assert harmful.significant
    assert harmful.delta_nats > 0.1
    assert harmful.ci_low > 0
    assert math.isnan(harmful.steps_to_base_loss), "it never reaches the base's final loss"
    data = result.row_dict(0)
    assert set(data["seeds"]) == {"0", "1", "2", "3"}
    assert data["final_loss_mean"] == pytest.approx(np.mean(list(data["seeds"].values())))
    assert result.changes[1].p_adjusted >= result.changes[1].p_value, "Holm never lowers a p-value"


def test_the_t_interval_covers_the_true_mean_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    trials, covered, rejected = 2000, 0, 0
    for _ in range(trials):
        stats = paired_t(rng.normal(0.3, 0.05, size=3))
        covered += stats["ci_low"] <= 0.3 <= stats["ci_high"]
        rejected += paired_t(rng.normal(0.0, 0.05, size=3))["p_value"] <= 0.05
    assert 0.93 <= covered / trials <= 0.97
    assert 0.03 <= rejected / trials <= 0.07, "a true null is called real about 5% of the time"


def test_the_interval_is_the_float64_t_interval() -> None:
    values = np.array([0.011, 0.032, 0.018, 0.025])
    stats = paired_t(values)
    t_975_3 = 3.182446305284263  # Student's t, 3 degrees of freedom, 97.5% quantile (tables)
    half = t_975_3 * values.std(ddof=1) / 2.0
    assert stats["mean"] == pytest.approx(values.mean(), rel=1e-12)
    assert stats["ci_high"] - stats["mean"] == pytest.approx(half, rel=1e-9)
    assert math.isnan(paired_t([0.1])["ci_low"]), "one seed has no interval"


def _arm(name: str, finals: list[float]) -> Arm:
    """Runs with evaluations at steps 0, 5 and 10 (3.0, 2.0, then ``finals[seed]``), 1000 tokens/s."""
    runs = [
        TrainRun(
            name=name,
            seed=seed,
            steps=10,
            steps_done=10,
            eval_steps=[0, 5, 10],
            eval_losses=[3.0, 2.0, final],
            tokens=1000,
            train_s=1.0,
        )
        for seed, final in enumerate(finals)
    ]
    return Arm(name, BASE, {}, runs)


def test_compare_arms_pairs_by_seed_and_reads_steps_from_the_mean_curve() -> None:
    base = _arm("base", [2.0, 2.1, 1.9])
    better = _arm("better", [1.5, 1.6, 1.4])
    change = compare_arms(base, [better])[0]
    assert change.delta_nats == pytest.approx(-0.5)
    assert change.ci_low == pytest.approx(-0.5)  # no spread
    assert change.ci_high == pytest.approx(-0.5)
    assert change.significant
    # mean curve 3.0, 2.0, 1.5: reaches the base's 2.0 at the second evaluation, step 5
    assert change.steps_to_base_loss == pytest.approx(5.0)
    assert change.tokens_per_s_delta_pct == pytest.approx(0.0)


def test_steps_to_reach_interpolates_between_evaluations() -> None:
    steps = np.array([0.0, 10.0, 20.0])
    assert steps_to_reach(steps, np.array([4.0, 3.0, 2.0]), 2.5) == pytest.approx(15.0)
    assert math.isnan(steps_to_reach(steps, np.array([4.0, 3.0, 2.0]), 1.0))


def test_training_variants_are_refused_without_train_and_built_with_it() -> None:
    with pytest.raises(ConfigError, match="train"):
        select_variants(BASE, positions="rope")
    with pytest.raises(ConfigError, match="train"):
        select_variants(BASE, norm="rms")
    variants = select_variants(BASE, norm="rms", positions="rope", ffn="swiglu", kv_heads=1, train=True)
    assert [v.name for v in variants] == ["norm rms", "position rope", "ffn swiglu (d_mlp 21)", "kv-heads 1"]
    with pytest.raises(ConfigError, match="n_kv_heads"):
        select_variants(BASE, kv_heads=3, train=True)


def test_the_gated_mlp_variant_matches_the_parameter_count() -> None:
    base = ModelConfig(vocab_size=VOCAB, max_seq_len=16, d_model=48, n_heads=2, n_layers=1, d_mlp=192)
    variant = ffn_variant(base, "swiglu").config(base)

    def mlp_parameters(config: ModelConfig) -> int:
        block = build_model(config, 0, CPU).blocks[0]
        return sum(p.numel() for p in block.mlp.parameters())

    assert abs(mlp_parameters(variant) - mlp_parameters(base)) / mlp_parameters(base) < 0.01


def test_too_little_text_or_too_few_seeds_is_refused() -> None:
    with pytest.raises(DataError, match="tokens"):
        Batches(TRAIN[:10], RECIPE, 0)
    with pytest.raises(ConfigError, match="2 seeds"):
        run_training_ablation(BASE, [Variant("eps", {"norm_eps": 1e-4})], RECIPE, TRAIN, HELDOUT, [0])
