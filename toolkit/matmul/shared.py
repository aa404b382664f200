"""A, B, C and the partial products in POSIX shared memory (``multiprocessing.shared_memory``).

The parent creates every segment and is the only one to unlink them; workers attach by name and
keep the mapping for the next task. Tasks therefore carry only names, shapes and index ranges:
nothing of a block is ever pickled. Segment names start with ``toolkit_mm_<parent pid>_`` so that a
leftover in /dev/shm can be traced to the process that made it.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets
from dataclasses import dataclass, field
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from toolkit.errors import MatmulError
from toolkit.matmul.plans import BlockPlan

SHM_PREFIX = "toolkit_mm"
SHM_DIR = "/dev/shm"


def segment_prefix(pid: int) -> str:
    """The name prefix of every segment that process ``pid`` creates."""
    return f"{SHM_PREFIX}_{pid}_"


class _Segment(SharedMemory):
    """A segment that does not complain at garbage collection about exported buffers.

    ``SharedMemory.close`` raises ``BufferError`` while memoryview slices of ``buf`` exist; the
    mapping then lives until they go, which is fine when an exception unwinds through frames
    holding them.
    """

    def __del__(self) -> None:
        with contextlib.suppress(BufferError):
            self.close()


@dataclass(frozen=True)
class ArraySpec:
    """What a worker needs to map an array: the segment's name, the shape and the dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str


class SharedArray:
    """A NumPy array in a named shared-memory segment created (and later unlinked) by this process."""

    def __init__(self, role: str, shape: tuple[int, ...], dtype: np.dtype | str) -> None:
        self.dtype = np.dtype(dtype)
        self.shape = tuple(shape)
        nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        name = f"{segment_prefix(os.getpid())}{role}_{secrets.token_hex(4)}"
        self._segment: _Segment | None = _Segment(name=name, create=True, size=max(nbytes, 1))
        self.spec = ArraySpec(self._segment.name, self.shape, self.dtype.str)

    @property
    def array(self) -> np.ndarray:
        if self._segment is None:
            raise RuntimeError(f"shared array {self.spec.name} was released")
        return np.ndarray(self.shape, dtype=self.dtype, buffer=self._segment.buf)

    def release(self) -> None:
        """Unlink the segment (its name leaves /dev/shm at once) and unmap it.

        NumPy views of it must not be used afterwards (``SharedMemory.close`` cannot see them).
        """
        segment, self._segment = self._segment, None
        if segment is None:
            return
        with contextlib.suppress(BufferError):
            segment.close()
        with contextlib.suppress(FileNotFoundError):
            segment.unlink()


@dataclass(frozen=True)
class WorkspaceSpecs:
    """The names of a workspace's arrays, sent with every task."""

    a: ArraySpec
    b: ArraySpec
    c: ArraySpec
    scratch: ArraySpec
    reference: ArraySpec
    absolute: ArraySpec | None
    partials: ArraySpec | None

    def names(self) -> set[str]:
        specs = (self.a, self.b, self.c, self.scratch, self.reference, self.absolute, self.partials)
        return {spec.name for spec in specs if spec is not None}


def free_shared_bytes() -> int | None:
    """Free space in /dev/shm, or None where there is no /dev/shm to ask."""
    try:
        stats = os.statvfs(SHM_DIR)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def _check_space(nbytes: int, what: str) -> None:
    free = free_shared_bytes()
    if free is not None and nbytes > free:
        raise MatmulError(
            f"{what} needs {nbytes / 2**20:,.0f} MiB of shared memory but {SHM_DIR} has "
            f"{free / 2**20:,.0f} MiB free; use smaller matrices or fewer workers for the k and "
            "recursive splits, "
            "or enlarge /dev/shm (e.g. the shm-size setting of docker run)"
        )


@dataclass
class Workspace:
    """Every shared array of one study: A, B, C, a scratch C, the reference C, |A|·|B|, partials.

    ``absolute`` (float64 |A|·|B|, for the rounding bound) exists for float inputs only. Use as a
    context manager: every segment is unlinked on the way out, whatever happens.
    """

    n: int
    k: int
    m: int
    dtype: np.dtype
    arrays: dict[str, SharedArray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        item = self.dtype.itemsize
        exact = self.dtype.kind in "iu"
        needed = (self.n * self.k + self.k * self.m + 3 * self.n * self.m) * item
        needed += 0 if exact else self.n * self.m * 8
        _check_space(needed, f"a {self.n}×{self.k} @ {self.k}×{self.m} {self.dtype} product")
        try:
            self.arrays["a"] = SharedArray("a", (self.n, self.k), self.dtype)
            self.arrays["b"] = SharedArray("b", (self.k, self.m), self.dtype)
            for role in ("c", "scratch", "reference"):
                self.arrays[role] = SharedArray(role, (self.n, self.m), self.dtype)
            if not exact:
                self.arrays["absolute"] = SharedArray("absolute", (self.n, self.m), np.dtype(np.float64))
        except BaseException:
            self.release()
            raise

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def release(self) -> None:
        for array in self.arrays.values():
            array.release()
        self.arrays.clear()

    def __getitem__(self, role: str) -> np.ndarray:
        return self.arrays[role].array

    def load(self, a: np.ndarray, b: np.ndarray) -> None:
        """Copy the inputs into shared memory (the one copy of the data the design pays)."""
        np.copyto(self["a"], a, casting="same_kind")
        np.copyto(self["b"], b, casting="same_kind")

    def use_plan(self, plan: BlockPlan) -> None:
        """Fresh zeroed partial buffers for ``plan`` (its untouched regions must stay zero)."""
        old = self.arrays.pop("partials", None)
        if old is not None:
            old.release()
        if plan.n_partials:
            shape = (plan.n_partials, self.n, self.m)
            _check_space(int(np.prod(shape)) * self.dtype.itemsize, f"{plan.n_partials} K-partial buffers")
            self.arrays["partials"] = SharedArray("partials", shape, self.dtype)

    def specs(self) -> WorkspaceSpecs:
        def spec(role: str) -> ArraySpec | None:
            array = self.arrays.get(role)
            return array.spec if array is not None else None

        a, b, c, scratch, reference = (
            self.arrays[role].spec for role in ("a", "b", "c", "scratch", "reference")
        )
        return WorkspaceSpecs(a, b, c, scratch, reference, spec("absolute"), spec("partials"))


# --------------------------------------------------------------------------------------------------
# The worker side: map by name, keep the mapping while the parent keeps the segment

_attached: dict[str, tuple[SharedMemory, np.ndarray]] = {}


def attach(spec: ArraySpec) -> np.ndarray:
    """The array ``spec`` names, mapped into this process (once; later calls reuse the mapping)."""
    if spec.name not in _attached:
        segment = _Segment(name=spec.name, create=False)
        array = np.ndarray(spec.shape, dtype=np.dtype(spec.dtype), buffer=segment.buf)
        prefault(array)
        _attached[spec.name] = (segment, array)
    return _attached[spec.name][1]


def prefault(array: np.ndarray) -> None:
    """Map every page of a newly attached segment into this process now, not inside a timed task.

    Tasks land on whichever worker is free, so a worker keeps meeting shared pages it has not
    mapped yet, round after round; each first write to one is a page fault (measured: 1.5 µs per
    4 KiB page, 0.2 s per 512 MiB written). A read of one byte per page maps them all at a fraction
    of that (the kernel maps a read fault's neighbours too), and shared pages are mapped writable.
    """
    if array.size:
        array.reshape(-1).view(np.uint8)[:: mmap.PAGESIZE].max()


def keep_only(names: set[str]) -> None:
    """Unmap every attached segment not in ``names`` (the parent has moved on to other arrays)."""
    for name in list(_attached):
        if name not in names:
            segment, _ = _attached.pop(name)
            with contextlib.suppress(BufferError):
                segment.close()


@dataclass(frozen=True)
class MappedArrays:
    """A workspace's arrays as mapped in a worker."""

    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    scratch: np.ndarray
    reference: np.ndarray
    absolute: np.ndarray | None
    partials: np.ndarray | None


def map_workspace(specs: WorkspaceSpecs) -> MappedArrays:
    """Map the workspace ``specs`` names, dropping mappings of arrays the parent has released."""
    keep_only(specs.names())
    return MappedArrays(
        a=attach(specs.a),
        b=attach(specs.b),
        c=attach(specs.c),
        scratch=attach(specs.scratch),
        reference=attach(specs.reference),
        absolute=attach(specs.absolute) if specs.absolute is not None else None,
        partials=attach(specs.partials) if specs.partials is not None else None,
    )
