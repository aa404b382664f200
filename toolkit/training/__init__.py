"""The one trainer: the recipe, the seeded batches, the step loop and the held-out evaluation that
``ablate --train``, the LayerNorm study's training comparison and ``scripts/train_reference.py`` share."""

from toolkit.training.recipe import Recipe

__all__ = ["Recipe"]
