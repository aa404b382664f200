"""Tests of toolkit.layernorm."""
