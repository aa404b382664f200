"""Tests of toolkit.plots."""
