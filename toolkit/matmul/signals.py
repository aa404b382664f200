"""The signal handling of the parallel product; it lives in :mod:`toolkit.signals`, shared with the
studies, and is re-exported here where it started."""

from toolkit.signals import HANDLED, Terminated, deferred, interruptible

__all__ = ["HANDLED", "Terminated", "deferred", "interruptible"]
