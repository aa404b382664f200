"""Tests of toolkit.matmul."""
