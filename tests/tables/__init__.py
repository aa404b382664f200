"""Tests of toolkit.tables."""
