"""What affects the forward latency of the reference model, and how: one-parameter sweeps.

``measure_latency_sweep`` varies one of sequence length, vocabulary, width, heads, layers, MLP
width or batch around a fixed config, times every value interleaved with the others (and with a
square matmul, the machine's rate) through :func:`toolkit.timing.compare`, and fits the trend
(latency = a + b·x; for sequence length also + c·x²) and the log-log exponent.
``measure_latency_all`` runs every sweep and summarises which parameters matter.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from toolkit.config import ModelConfig, divisors
from toolkit.device import rate_dtype, synchronize
from toolkit.errors import ConfigError, SweepError, setting
from toolkit.flops import FLOP_CONVENTION, forward_flops, matmul_operands
from toolkit.memory import check_fits
from toolkit.model import Transformer
from toolkit.progress import ProgressCallback, no_progress
from toolkit.signals import stop_requested
from toolkit.studies.settings import DEFAULT_VALUES as DEFAULT_VALUES  # re-exported
from toolkit.studies.settings import SWEEP_CHOICES, VARY_CHOICES, ForwardTiming, default_values
from toolkit.studies.trends import Influence, Trend, fit_trend, influence_of
from toolkit.timing.engine import compare
from toolkit.timing.machine import capture_context
from toolkit.timing.stats import (
    Caution,
    Difference,
    Measurement,
    TimingContext,
    busy_cautions,
    holm_adjusted,
    paired_difference,
)

UNITS: dict[str, str] = {
    "seq-len": "tokens",
    "vocab": "tokens in the vocabulary",
    "d-model": "d_model",
    "heads": "heads",
    "kv-heads": "key/value heads",
    "layers": "blocks",
    "mlp": "d_mlp",
    "batch": "sequences",
}

_CONFIG_FIELD = {
    "vocab": "vocab_size",
    "d-model": "d_model",
    "heads": "n_heads",
    "kv-heads": "n_kv_heads",
    "layers": "n_layers",
    "mlp": "d_mlp",
}


@dataclass
class LatencyPoint:
    """One value of the swept parameter: the config it ran, its timing and derived rates."""

    value: int
    config: ModelConfig
    batch: int
    seq_len: int
    measurement: Measurement
    flops: int
    matmul_gflops: float  # the machine's matmul rate, timed interleaved with this point
    compile_s: float | None = None
    vs_default: Difference | None = None  # paired against the fixed config's value (None: that value)

    @property
    def median_ms(self) -> float:
        return self.measurement.median_ms

    @property
    def tokens_per_s(self) -> float:
        return self.batch * self.seq_len / (self.measurement.median_ms * 1e-3)

    @property
    def gflops(self) -> float:
        """Achieved matmul rate: the analytic FLOP count over the median latency."""
        return self.flops / (self.measurement.median_ms * 1e-3) / 1e9

    def row(self) -> dict[str, Any]:
        m = self.measurement
        return {
            "value": self.value,
            "batch": self.batch,
            "seq_len": self.seq_len,
            "vocab_size": self.config.vocab_size,
            "d_model": self.config.d_model,
            "n_heads": self.config.n_heads,
            "n_kv_heads": self.config.kv_heads,
            "n_layers": self.config.n_layers,
            "d_mlp": self.config.d_mlp,
            **m.statistics(),
            "tokens_per_s": self.tokens_per_s,
            "flops": self.flops,
            "gflops": self.gflops,
            "matmul_gflops": self.matmul_gflops,
            "pct_of_matmul": 100.0 * self.gflops / self.matmul_gflops,
            "compile_s": self.compile_s,
            **_vs_default_columns(self.vs_default),
            "others_cpu_share": m.others_cpu_share,
            "warnings": [c.to_dict() for c in m.cautions(subject=f"value={self.value}")],
        }


def _vs_default_columns(difference: Difference | None) -> dict[str, Any]:
    keys = ("diff_pct", "ci_low_pct", "ci_high_pct", "p_value", "p_adjusted", "detectable_pct")
    if difference is None:
        return {f"vs_default_{key}": None for key in (*keys, "significant", "significant_raw")}
    return {
        **{f"vs_default_{key}": getattr(difference, key) for key in keys},
        "vs_default_significant": difference.significant,
        "vs_default_significant_raw": difference.significant_raw,
    }


def against_default(samples: Mapping[str, Sequence[float]], default_arm: str | None) -> dict[str, Difference]:
    """Each arm's paired difference to the fixed config's arm, Holm-adjusted as one family."""
    if default_arm is None:
        return {}
    base = samples[default_arm]
    differences = {
        name: paired_difference(name, base, values) for name, values in samples.items() if name != default_arm
    }
    return holm_adjusted(differences)


@dataclass
class LatencyResult:
    """A sweep of one parameter: rows per value, the trend, and the context of the measurement."""

    vary: str
    base_config: ModelConfig
    batch: int
    seq_len: int
    default_value: int  # the swept parameter's value in the fixed config
    points: list[LatencyPoint]
    trend: Trend
    matmul_gflops: float  # a square matmul's rate, timed interleaved with the sweep
    matmul: Measurement
    matmul_size: int
    context: TimingContext
    matmul_dtype: str = "float32"  # the reference matmul's dtype (float32 for half dtypes on a CPU)
    compiled: bool = False
    budget_s: float = 0.0
    target_rel_ci: float = 0.02
    rounds: int = 0
    stop_reason: str = ""
    elapsed_s: float = 0.0
    others_cpu_share: float = math.nan

    @property
    def unit(self) -> str:
        return UNITS[self.vary]

    def rows(self) -> list[dict[str, Any]]:
        return [point.row() for point in self.points]

    def to_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows()).drop(columns="warnings")
        frame.insert(0, "vary", self.vary)
        for key, value in self.context.to_dict().items():
            if key not in ("batch", "seq_len", "extras"):
                frame[key] = value
        frame["compiled"] = self.compiled
        return frame

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
        return {
            "vary": self.vary,
            "unit": self.unit,
            "base_config": self.base_config.to_dict(),
            "batch": self.batch,
            "seq_len": self.seq_len,
            "default_value": self.default_value,
            "rows": self.rows(),
            "samples_ms": [p.measurement.samples_ms for p in self.points] if samples else None,
            "trend": self.trend.to_dict(),
            "matmul_gflops": self.matmul_gflops,
            "matmul_size": self.matmul_size,
            "matmul_dtype": self.matmul_dtype,
            "matmul": self.matmul.to_dict(samples=samples),
            "flop_convention": FLOP_CONVENTION,
            "compiled": self.compiled,
            "budget_s_per_point": self.budget_s,
            "target_rel_ci": self.target_rel_ci,
            "stop_rule": {"target_rel_ci": self.target_rel_ci, "budget_s_per_point": self.budget_s},
            "stop_reason": self.stop_reason,
            "rounds": self.rounds,
            "interleaved": True,
            "elapsed_s": self.elapsed_s,
            "context": self.context.to_dict(),
            "warnings": [c.to_dict() for c in self.cautions()],
        }

    def cautions(self) -> list[Caution]:
        """Every swept value's spread and CI cautions (subject ``vary=value``), and a busy machine."""
        point_cautions = [
            c for p in self.points for c in p.measurement.cautions(subject=f"{self.vary}={p.value}")
        ]
        return point_cautions + busy_cautions(self.others_cpu_share)


@dataclass
class LatencyReport:
    """Every sweep (every parameter of VARY_CHOICES) and a summary of which parameters matter."""

    sweeps: list[LatencyResult]
    influences: list[Influence]

    def to_frame(self) -> pd.DataFrame:
        return pd.concat([sweep.to_frame() for sweep in self.sweeps], ignore_index=True)

    def summary_frame(self) -> pd.DataFrame:
        return pd.DataFrame([i.to_dict() for i in self.influences])

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
        return {
            "summary": [i.to_dict() for i in self.influences],
            "sweeps": [sweep.to_dict(samples=samples) for sweep in self.sweeps],
        }


def default_value(vary: str, config: ModelConfig, batch: int, seq_len: int) -> int:
    """The swept parameter's value in the fixed config."""
    if vary == "seq-len":
        return seq_len
    if vary == "batch":
        return batch
    if vary == "kv-heads":
        return config.kv_heads
    return int(getattr(config, _CONFIG_FIELD[vary]))


def sweep_configs(
    vary: str, values: Sequence[int], config: ModelConfig, batch: int, seq_len: int
) -> list[tuple[ModelConfig, int, int]]:
    """(config, batch, seq_len) for every value; refuses values the model cannot take, with the fix."""
    if vary not in SWEEP_CHOICES:
        raise SweepError(f"unknown {setting('vary')} {vary!r}; valid values: {', '.join(SWEEP_CHOICES)}, all")
    if vary == "kv-heads":
        bad = [h for h in values if config.n_heads % h]
        if bad:
            raise SweepError(
                f"{setting('values')} {','.join(map(str, bad))} do not divide heads={config.n_heads} (each "
                f"key/value head serves a whole group of query heads); use "
                f"{', '.join(map(str, divisors(config.n_heads)))}"
            )
    if vary == "heads" and config.head_size is None:
        bad = [h for h in values if config.d_model % h]
        if bad:
            raise SweepError(
                f"{setting('values')} {','.join(map(str, bad))} do not divide d_model={config.d_model} "
                "(head size = d_model / heads); use divisors of d_model: "
                f"{', '.join(map(str, divisors(config.d_model)[:16]))}"
            )
    if vary == "d-model":
        bad = [d for d in values if d % config.n_heads]
        if bad:
            raise SweepError(
                f"{setting('values')} {','.join(map(str, bad))} are not multiples of heads={config.n_heads}; "
                f"use multiples of {config.n_heads} or change {setting('n_heads')}"
            )
    if vary == "seq-len":
        too_long = [v for v in values if v > config.max_seq_len]
        if too_long:
            raise SweepError(
                f"{setting('values')} {','.join(map(str, too_long))} exceed "
                f"max_seq_len={config.max_seq_len}, "
                f"the longest sequence the model has positions for; raise {setting('max_seq_len')} to "
                f"{max(too_long)} or drop those values"
            )
    out = []
    for value in values:
        if vary == "seq-len":
            out.append((config, batch, value))
        elif vary == "batch":
            out.append((config, value, seq_len))
        else:
            try:
                out.append((config.replace(**{_CONFIG_FIELD[vary]: value}), batch, seq_len))
            except ConfigError as exc:
                raise SweepError(f"{setting('vary')} {vary} value {value}: {exc}") from None
    return out


MATMUL_ARM = "matmul"


@contextlib.contextmanager
def _room_for_recompiles(n_models: int) -> Iterator[None]:
    """Each swept model is its own compiled graph: let dynamo keep one per value."""
    limit = torch._dynamo.config.recompile_limit
    torch._dynamo.config.recompile_limit = max(limit, 4 * n_models)
    try:
        yield
    finally:
        torch._dynamo.config.recompile_limit = limit


def build_forward(
    config: ModelConfig,
    batch: int,
    seq_len: int,
    *,
    device: torch.device,
    dtype: torch.dtype,
    compile: bool = False,
    seed: int = 0,
) -> tuple[Callable[[], torch.Tensor], float | None]:
    """A callable running one forward pass of ``Transformer(config)`` on random ids [batch, seq_len].

    With ``compile`` the model goes through torch.compile first (on CUDA with
    ``mode="reduce-overhead"``: CUDA graphs, since this small model's GPU latency is launch-bound);
    the compile time, i.e. the first call, is returned apart from the latency.
    """
    torch.manual_seed(seed)
    model = Transformer(config).to(device=device, dtype=dtype).eval()
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.vocab_size, (batch, seq_len), generator=generator).to(device)
    forward: Callable[[torch.Tensor], torch.Tensor] = model
    compile_s = None
    if compile:
        mode = "reduce-overhead" if device.type == "cuda" else None
        forward = torch.compile(model, mode=mode, dynamic=False)
        start = time.perf_counter()
        try:
            with torch.inference_mode():
                forward(ids)
                synchronize(device)
        except Exception as exc:  # inductor needs a working C++ compiler (CPU) or Triton (CUDA)
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SweepError(
                f"torch.compile failed on {device.type}: {first_line}; run without {setting('compile')}"
            ) from None
        compile_s = time.perf_counter() - start
    return (lambda: forward(ids)), compile_s


def measure_latency_sweep(
    vary: str,
    config: ModelConfig,
    timing: ForwardTiming,
    *,
    values: Sequence[int] | None = None,
    matmul_size: int | None = None,
    progress: ProgressCallback | None = None,
) -> LatencyResult:
    """Sweep one parameter around ``config``; see the module docstring.

    Every value's model and a square matmul (the machine's matmul rate) are timed **interleaved**,
    round by round, so the load of a shared machine hits every value alike and the trend stays
    true. Timing stops when every median's 95% CI is within ±``timing.target_rel_ci`` or after
    ``timing.budget_s`` seconds per value (at least 10 rounds).
    """
    # A seq-len sweep sets the length itself (each at most max_seq_len); the others time at one.
    S = config.max_seq_len if timing.seq_len is None else timing.seq_len
    if vary != "seq-len":
        S = timing.seq_len_for(config)
    batch, device, dtype, compile = timing.batch, timing.device, timing.dtype, timing.compile
    budget_s, target_rel_ci, warmup = timing.budget_s, timing.target_rel_ci, timing.warmup
    chosen = (
        list(values) if values is not None else list(default_values(vary, config.max_seq_len, config.n_heads))
    )
    points_configs = sweep_configs(vary, chosen, config, batch, S)
    check_fits(points_configs, device, torch.empty((), dtype=dtype).element_size())  # all held at once
    report = progress or no_progress
    start = time.perf_counter()
    arms: dict[str, Callable[[], object]] = {}
    compile_times: list[float | None] = []
    with _room_for_recompiles(len(chosen)):
        for i, (point_config, point_batch, point_seq) in enumerate(points_configs):
            report(i, len(chosen), f"{'compiling' if compile else 'building'} {vary} = {chosen[i]}")
            forward, compile_s = build_forward(
                point_config, point_batch, point_seq, device=device, dtype=dtype, compile=compile
            )
            arms[f"{vary}={chosen[i]}"] = forward
            compile_times.append(compile_s)
        a, b = matmul_operands(device, rate_dtype(device, dtype), matmul_size)
        product = torch.empty_like(a)
        arms[MATMUL_ARM] = lambda: torch.mm(a, b, out=product)
        context = capture_context(device, dtype, batch=batch, seq_len=S, compiled=compile)
        comparison = compare(
            arms,
            baseline=MATMUL_ARM,
            device=device,
            aa_control=False,
            warmup=warmup,
            target_rel_ci=target_rel_ci,
            budget_s=budget_s * len(chosen),
            context=context,
            progress=lambda done, total, _: report(done, total, f"timing {vary}: round {done}"),
            converge_differences=False,
        )
    matmul = comparison.measurements[MATMUL_ARM]
    matmul_gflops = 2.0 * a.shape[0] ** 3 / (matmul.median_ms * 1e-3) / 1e9
    base_value = default_value(vary, config, batch, S)
    default_arm = f"{vary}={base_value}" if base_value in chosen else None
    point_samples = {
        f"{vary}={value}": comparison.measurements[f"{vary}={value}"].samples_ms for value in chosen
    }
    vs_default = against_default(point_samples, default_arm)
    points = [
        LatencyPoint(
            value,
            point_config,
            point_batch,
            point_seq,
            comparison.measurements[f"{vary}={value}"],
            forward_flops(point_config, point_batch, point_seq).total,
            matmul_gflops,
            compile_s,
            vs_default.get(f"{vary}={value}"),
        )
        for value, (point_config, point_batch, point_seq), compile_s in zip(
            chosen, points_configs, compile_times, strict=True
        )
    ]
    trend = fit_trend(
        chosen, [p.median_ms for p in points], quadratic_at=float(base_value) if vary == "seq-len" else None
    )
    return LatencyResult(
        vary=vary,
        base_config=config,
        batch=batch,
        seq_len=S,
        default_value=base_value,
        points=points,
        trend=trend,
        matmul_gflops=matmul_gflops,
        matmul=matmul,
        matmul_size=a.shape[0],
        matmul_dtype=str(a.dtype).removeprefix("torch."),
        context=context,
        compiled=compile,
        budget_s=budget_s,
        target_rel_ci=target_rel_ci,
        rounds=comparison.rounds,
        stop_reason=comparison.stop_reason,
        elapsed_s=time.perf_counter() - start,
        others_cpu_share=comparison.others_cpu_share,
    )


def influence(result: LatencyResult) -> Influence:
    """How much the swept parameter drives the default config's latency, from the sweep's fit."""
    return influence_of(result.vary, result.default_value, result.trend)


def measure_latency_all(
    config: ModelConfig, timing: ForwardTiming, *, progress: ProgressCallback | None = None
) -> LatencyReport:
    """Every sweep of VARY_CHOICES with its default values, and the summary of what matters."""
    timing.seq_len_for(config)  # refuse a length the fixed config cannot take before any sweep runs
    report = progress or no_progress
    sweeps: list[LatencyResult] = []
    for index, vary in enumerate(VARY_CHOICES):
        if stop_requested() is not None:  # SIGINT / SIGTERM: keep the sweeps done so far
            break
        if sweeps and sweeps[-1].stop_reason == "out_of_memory":  # the next would fail as well
            break

        def sweep_progress(_done: int, _total: int, description: str, index: int = index) -> None:
            report(index, len(VARY_CHOICES), description)

        sweeps.append(measure_latency_sweep(vary, config, timing, progress=sweep_progress))
    report(len(VARY_CHOICES), len(VARY_CHOICES), "done")
    return LatencyReport(sweeps=sweeps, influences=[influence(s) for s in sweeps])
