"""Tests of toolkit.cli."""
