"""Tests of toolkit.weights."""
