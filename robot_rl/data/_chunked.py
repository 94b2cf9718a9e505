"""A growable FIFO column of fixed-shape rows in numpy chunks, addressed by global row index.

Rows get consecutive global indices (0, 1, 2, ...) as they are appended and keep them until they
are released from the front; nothing is ever moved. Memory grows with use: a new chunk holds
``max(min_rows, allocated_rows // GROWTH_DIVISOR)`` rows, so the unfilled part of the newest chunk
is at most 1/32 of what is allocated once data is there, and the number of chunks stays small
(about 32 once the FIFO is at its capacity). Chunks whose rows are all released are freed.
"""

from __future__ import annotations

import numpy as np

GROWTH_DIVISOR = 32  # a new chunk is 1/32 of the allocated rows: <= ~3 % unused tail
MIN_CHUNK_BYTES = 256 * 1024  # small rows (scalars, states) come in chunks of at least 256 KiB
MIN_CHUNK_ROWS = 16  # large rows (images) come at least 16 to a chunk


class ChunkedColumn:
    """Rows of one shape and dtype, appended at the back and released from the front.

    shape: the shape of one row (e.g. (H, W, 3) for a camera, (D,) for a state, () for a scalar);
    dtype: any numpy dtype without objects (structured dtypes included).
    start: the global index of the first row appended (a column kept beside another one that
    has already released rows, e.g. a feature cache attached to a filled replay buffer).
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, start: int = 0) -> None:
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        row_bytes = max(1, self.dtype.itemsize * int(np.prod(self.shape, dtype=np.int64)))
        self._min_rows = max(MIN_CHUNK_ROWS, MIN_CHUNK_BYTES // row_bytes)
        self.clear(start)

    def clear(self, start: int = 0) -> None:
        """Free every chunk; global indices restart at ``start``."""
        self._chunks: list[np.ndarray] = []
        self._starts: list[int] = []  # global index of each chunk's first row
        self._starts_np = np.zeros(0, dtype=np.int64)
        self._allocated_rows = 0
        self.end = start  # global index the next append gets

    @property
    def nbytes(self) -> int:
        """Bytes held by all chunks (allocated, not only filled)."""
        return sum(c.nbytes for c in self._chunks)

    @property
    def num_chunks(self) -> int:
        return len(self._chunks)

    def append(self, row: np.ndarray | tuple) -> int:
        """Copy one row to the back; returns its global index."""
        if not self._chunks or self.end >= self._starts[-1] + len(self._chunks[-1]):
            rows = max(self._min_rows, self._allocated_rows // GROWTH_DIVISOR)
            self._chunks.append(np.empty((rows, *self.shape), dtype=self.dtype))
            self._starts.append(self.end)
            self._starts_np = np.asarray(self._starts, dtype=np.int64)
            self._allocated_rows += rows
        self._chunks[-1][self.end - self._starts[-1]] = row
        self.end += 1
        return self.end - 1

    def row(self, index: int) -> np.ndarray:
        """A view of one stored row (do not keep it: the chunk may be freed later)."""
        c = int(np.searchsorted(self._starts_np, index, side="right")) - 1
        return self._chunks[c][index - self._starts[c]]

    def release_before(self, index: int) -> None:
        """Free the front chunks whose rows all have global index < ``index``."""
        while len(self._chunks) > 1 and self._starts[1] <= index:
            self._allocated_rows -= len(self._chunks[0])
            del self._chunks[0], self._starts[0]
            self._starts_np = self._starts_np[1:]

    def scatter(self, indices: np.ndarray, rows: np.ndarray) -> None:
        """Overwrite rows ``indices`` (int64 (N,), sorted, all live) with ``rows`` (N, *shape)."""
        if len(indices) == 0:
            return
        chunk_of = np.searchsorted(self._starts_np, indices, side="right") - 1
        for c in np.unique(chunk_of).tolist():
            mine = chunk_of == c
            self._chunks[c][indices[mine] - self._starts[c]] = rows[mine]

    def gather(self, indices: np.ndarray, out: np.ndarray) -> None:
        """Copy rows ``indices`` (int64 (N,), all live) into ``out`` (N, *shape).

        One numpy ``take`` per chunk touched, none per row: sorted indices make each chunk's rows
        one contiguous slice of ``out``; unsorted ones are sorted first and scattered back.
        """
        if len(indices) > 1 and not bool(np.all(indices[1:] >= indices[:-1])):
            order = np.argsort(indices, kind="stable")
            tmp = np.empty_like(out)
            self.gather(indices[order], tmp)
            out[order] = tmp
            return
        if len(indices) == 0:
            return
        chunk_of = np.searchsorted(self._starts_np, indices, side="right") - 1
        first, last = int(chunk_of[0]), int(chunk_of[-1])
        bounds = np.searchsorted(chunk_of, np.arange(first, last + 2))
        for c in range(first, last + 1):
            lo, hi = int(bounds[c - first]), int(bounds[c - first + 1])
            if lo < hi:
                offsets = indices[lo:hi] - self._starts[c]
                np.take(self._chunks[c], offsets, axis=0, out=out[lo:hi], mode="clip")
