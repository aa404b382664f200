"""Tests of toolkit.timing."""
