"""Tests of toolkit.text: tokenizers, real text, next-token loss."""
