"""`params` study: per-component counts against closed forms, bytes per dtype, measured memory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from toolkit import ModelConfig
from toolkit.studies.params import count_report


def test_default_total_is_3_156_992() -> None:
    """The reference model has 3,156,992 parameters with the LM head tied (SPEC.md: about 3.16 M)."""
    assert count_report(ModelConfig()).total_params == 3_156_992


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(),
        ModelConfig(vocab_size=1000, d_model=96, n_heads=4, n_layers=5, d_mlp=200, max_seq_len=77),
    ],
)
def test_components_follow_closed_forms(config: ModelConfig) -> None:
    """Each component's count equals its formula; the tied head adds nothing."""
    d, m = config.d_model, config.d_mlp
    report = count_report(config)
    counts = {c.component: c.params for c in report.by_component}
    assert counts["token embedding"] == config.vocab_size * d
    assert counts["position embedding"] == config.max_seq_len * d
    for i in range(config.n_layers):
        assert counts[f"block {i} attention"] == 4 * d * d + 4 * d
        assert counts[f"block {i} MLP"] == 2 * d * m + m + d
        assert counts[f"block {i} norms"] == 4 * d
    assert counts["final norm"] == 2 * d
    assert counts["LM head"] == 0
    assert sum(counts.values()) == report.total_params


def test_bytes_by_dtype() -> None:
    """Weight bytes are parameters × 4, 2 and 1 bytes."""
    report = count_report(ModelConfig())
    n = report.total_params
    assert report.bytes_by_dtype == {"float32": 4 * n, "bfloat16/float16": 2 * n, "int8": n}


def test_measured_memory_in_a_fresh_process() -> None:
    """In a fresh process, building the model grows RSS by about its weight bytes; a forward needs more."""
    command = [
        sys.executable,
        "-m",
        "toolkit",
        "params",
        "--json",
        "--device",
        "cpu",
        "--vocab",
        "4096",
        "--d-model",
        "512",
        "--heads",
        "4",
        "--mlp",
        "2048",
        "--max-seq-len",
        "256",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    report = json.loads(result.stdout)
    memory = report["memory"]
    weights = report["bytes_by_dtype"]["float32"]
    assert memory["weights_bytes_expected"] == weights
    assert 0.8 * weights <= memory["build_bytes"] <= 3 * weights
    assert memory["activation_bytes"] > 0
    assert memory["forward_peak_bytes"] >= memory["build_bytes"]
