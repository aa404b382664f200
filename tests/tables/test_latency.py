"""The latency tables and their text."""

from __future__ import annotations

from toolkit.studies.latency import LatencyResult
from toolkit.tables.latency import latency_table, trend_text


def test_table_and_trend_text(tiny_sweep: LatencyResult) -> None:
    """The table has a row per value; the trend text states the fit and the exponent."""
    table = latency_table(tiny_sweep)
    assert table.row_count == 3
    text = trend_text(tiny_sweep)
    assert "ms × layers" in text
    assert "log-log" in text
