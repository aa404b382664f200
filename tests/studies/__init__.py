"""Tests of toolkit.studies."""
