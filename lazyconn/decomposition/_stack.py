"""The decomposition's scratch files: the stacked reductions on disk, read in bounded blocks.

A fit writes every subject's reduction (k, V) to a :class:`ScratchStack` while the subjects
run. Above ``memory_budget`` the group step never holds the (N, V) stack: it reads it back
in column (voxel) blocks of at most :data:`STACK_BLOCK_BYTES`, and DictLearning's online
learning reads its mini-batches of voxels through :class:`TrainingRows` (gathered from the
blocks, or from a voxel-major :class:`RowFile` for long fits). The files are read and
written with ``os.preadv``/``os.pwrite``: their pages are the system's cache, not the
process's memory (a memory map's pages would count in its RSS, and mapping a block at a
time was no faster than copying it), and nothing but the block in use and the next one
is resident.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

#: Bytes of one column block of the scratch stack (all its rows, a band of voxels): the
#: group step's reads hold two at a time (the one in use, the next one being read).
STACK_BLOCK_BYTES = 4 * 2**20

#: :class:`TrainingRows` gathers its rows pass by pass over the stack up to this many
#: passes, then writes them all to a voxel-major file once (see there).
GATHER_PASSES = 8


class _RawFile:
    """A scratch file at ``path`` (created, never overwritten), written and read by offset."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)

    def _write(self, array: np.ndarray, offset: int) -> None:
        array = np.ascontiguousarray(array)
        done = os.pwrite(self._fd, array, offset)  # whole, but for a full disk or a signal
        if done == array.nbytes:
            return
        view, offset = memoryview(array).cast("B")[done:], offset + done
        while len(view):
            done = os.pwrite(self._fd, view, offset)
            if done == 0:
                raise OSError(f"could not write the scratch file {self.path}")
            view, offset = view[done:], offset + done

    def _read_into(self, out: np.ndarray, offset: int) -> np.ndarray:
        view = memoryview(out).cast("B")
        while len(view):
            done = os.preadv(self._fd, [view], offset)
            if done == 0:
                raise OSError(f"the scratch file {self.path} was cut short")
            view, offset = view[done:], offset + done
        return out

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        """Close and delete the file."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ScratchStack(_RawFile):
    """The stacked reductions (N, V) in a scratch file, tiled in column blocks.

    The file holds the V columns as consecutive blocks of ``width`` columns (the last may be
    narrower), each block its N rows in C order, so that a block is one contiguous read:
    ``width`` is as many columns as fit :data:`STACK_BLOCK_BYTES` (a multiple of
    ``lazyconn.decomposition._multi_pca.SQUARES_COLUMNS`` when one fits, so that the CCA
    norms add the same squares in the same order as in memory). A subject's rows are
    written into every block (:meth:`write_rows`).
    """

    def __init__(self, path, shape, dtype, block_bytes=None):
        from lazyconn.decomposition._multi_pca import SQUARES_COLUMNS

        super().__init__(path)
        n, v = (int(s) for s in shape)
        self.shape, self.dtype = (n, v), np.dtype(dtype)
        per_column = max(1, n) * self.dtype.itemsize
        budget = STACK_BLOCK_BYTES if block_bytes is None else block_bytes
        width = max(1, budget // per_column)
        if width >= SQUARES_COLUMNS:
            width -= width % SQUARES_COLUMNS
        self.width = int(min(width, max(1, v)))
        os.ftruncate(self._fd, n * v * self.dtype.itemsize)

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * self.dtype.itemsize

    def _bands(self):
        v = self.shape[1]
        return [(c0, min(c0 + self.width, v)) for c0 in range(0, v, self.width)]

    def write_rows(self, start: int, rows: np.ndarray) -> None:
        """Write ``rows`` (r, V) as the stack's rows ``start`` to ``start + r``."""
        n, item = self.shape[0], self.dtype.itemsize
        rows = np.asarray(rows, dtype=self.dtype)
        for c0, c1 in self._bands():
            self._write(rows[:, c0:c1], (n * c0 + start * (c1 - c0)) * item)

    def block_buffer(self) -> np.ndarray:
        """A buffer for :meth:`blocks` (one block's bytes)."""
        return np.empty(self.shape[0] * self.width, dtype=self.dtype)

    def blocks(self, buffer=None):
        """``(c0, c1, block)`` for each column block, in order: ``block`` (N, c1 - c0), C
        order, is the stack's ``[:, c0:c1]``, valid until the next block.

        A thread reads the next block into a second buffer while the caller uses this one
        (the reads are a third of a pass over a seed stack's blocks: the seeds' 100-subject
        group step 1.45-1.56 -> 1.24-1.35 s), so two blocks are held (``buffer``, from
        :meth:`block_buffer`, is one of them if given). The blocks come in order whatever
        the threads do."""
        from concurrent.futures import ThreadPoolExecutor

        n = self.shape[0]
        bands = self._bands()
        if not bands:
            return
        buffers = [self.block_buffer() if buffer is None else buffer]
        if len(bands) > 1:
            buffers.append(self.block_buffer())

        def read(i):
            c0, c1 = bands[i]
            block = buffers[i % len(buffers)][: n * (c1 - c0)].reshape(n, c1 - c0)
            return self._read_into(block, n * c0 * self.dtype.itemsize)

        if len(bands) == 1:
            yield (*bands[0], read(0))
            return
        with ThreadPoolExecutor(1, thread_name_prefix="lazyconn-stack") as pool:
            pending = pool.submit(read, 0)
            for i, (c0, c1) in enumerate(bands):
                block = pending.result()
                if i + 1 < len(bands):
                    pending = pool.submit(read, i + 1)
                yield c0, c1, block

    def read(self) -> np.ndarray:
        """The whole stack, Fortran-ordered (as nilearn stacks it)."""
        out = np.empty(self.shape, dtype=self.dtype, order="F")
        for c0, c1, block in self.blocks():
            out[:, c0:c1] = block
        return out

    @property
    def T(self) -> StackColumns:
        return StackColumns(self)


class StackColumns:
    """The transpose of a :class:`ScratchStack` (V, N) for sequential row slices: ``x[a:b]``
    has the values of the same slice of an in-memory ``stack.T``, the stack's columns
    ``a:b``: a Fortran-ordered view of the column block held (valid until a slice in
    another block is read), or a copy across blocks. Holds one column block."""

    def __init__(self, stack: ScratchStack):
        self.stack = stack
        self.shape = stack.shape[::-1]
        self.dtype = stack.dtype
        self._held = (0, 0, None)
        self._buffer = None

    def __len__(self) -> int:
        return self.shape[0]

    def _block(self, c0: int) -> tuple[int, int, np.ndarray]:
        held = self._held
        if not held[0] <= c0 < held[1]:
            n, width = self.stack.shape[0], self.stack.width
            start = c0 - c0 % width
            stop = min(start + width, self.shape[0])
            if self._buffer is None:
                self._buffer = self.stack.block_buffer()
            block = self._buffer[: n * (stop - start)].reshape(n, stop - start)
            held = self._held = (
                start,
                stop,
                self.stack._read_into(block, n * start * self.dtype.itemsize),
            )
        return held

    def __getitem__(self, index):
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("a scratch stack's transpose is read by contiguous row slices")
        lo, hi, _ = index.indices(self.shape[0])
        hi = max(lo, hi)
        if lo == hi:
            return np.empty((0, self.shape[1]), dtype=self.dtype)
        start, stop, block = self._block(lo)
        if hi <= stop:
            return block[:, lo - start : hi - start].T
        out = np.empty((hi - lo, self.shape[1]), dtype=self.dtype)
        at = lo
        while at < hi:
            start, stop, block = self._block(at)
            end = min(hi, stop)
            out[at - lo : end - lo] = block[:, at - start : end - start].T
            at = end
        return out


class RowFile(_RawFile):
    """A scratch (n_rows, n_columns) C-ordered matrix, written row by row and read by
    contiguous row ranges (a mini-batch is one read); deleted when its ``with`` block
    ends."""

    def __init__(self, path, shape, dtype):
        super().__init__(path)
        self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        os.ftruncate(self._fd, self.shape[0] * self.shape[1] * self.dtype.itemsize)

    def write_row(self, i: int, row: np.ndarray) -> None:
        self._write(
            np.asarray(row, dtype=self.dtype), int(i) * self.shape[1] * self.dtype.itemsize
        )

    def rows(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self.shape[1]), dtype=self.dtype)
        return self._read_into(out, start * self.shape[1] * self.dtype.itemsize)

    def __exit__(self, *exc):
        self.remove()


class TrainingRows:
    """The rows of a :class:`ScratchStack`'s transpose (voxels) in a training order (row
    ``i`` is the stack's column ``order[i]``), read by contiguous ranges ``rows(a, b)``
    that move forward (an epoch's mini-batches, then the next epoch's from the start).

    The online learning often stops long before an epoch ends (the seeds' 100 subjects:
    114 mini-batches of 20 of 29178 voxels), so the rows are first gathered a chunk at a
    time (:data:`STACK_BLOCK_BYTES` of rows, at least a mini-batch) by one pass over the
    stack's column blocks each (~20 ms there). After :data:`GATHER_PASSES` passes, all the
    rows are written once, in the training order, to a voxel-major :class:`RowFile` at
    ``path`` (one pass, a transposed block and one write per voxel: ~0.35 s there), and
    read from it. Either way a range is the same rows, C-ordered, as the same slice of the
    transpose's rows reordered in memory. The file is deleted when the ``with`` block
    ends.
    """

    def __init__(self, stack: ScratchStack, order: np.ndarray, min_rows: int, path):
        self.stack, self.order = stack, np.asarray(order)
        self.shape = (len(self.order), stack.shape[0])
        self.dtype = stack.dtype
        per_row = max(1, stack.shape[0]) * stack.dtype.itemsize
        self.chunk = max(int(min_rows), STACK_BLOCK_BYTES // per_row, 1)
        self.path = path
        self.passes = 0
        self._held = (0, 0, None)
        self._file = None

    def rows(self, start: int, stop: int) -> np.ndarray:
        if self._file is None:
            p0, p1, held = self._held
            if p0 <= start and stop <= p1:
                return held[start - p0 : stop - p0]
            if self.passes < GATHER_PASSES and stop - start <= self.chunk:
                p1 = min(start + self.chunk, self.shape[0])
                self._held = (0, 0, None)
                held = self._gather(start, p1)
                self._held = (start, p1, held)
                return held[: stop - start]
            self._held = (0, 0, None)
            self._file = self._write_all()
        return self._file.rows(start, stop)

    def _gather(self, p0: int, p1: int) -> np.ndarray:
        """Rows ``p0:p1`` (a new array), by one pass over the stack's column blocks."""
        self.passes += 1
        cols = self.order[p0:p1]
        by_col = np.argsort(cols, kind="stable")
        sorted_cols = cols[by_col]
        out = np.empty((p1 - p0, self.shape[1]), dtype=self.dtype)
        for c0, c1, block in self.stack.blocks():
            lo, hi = np.searchsorted(sorted_cols, [c0, c1])
            if lo < hi:
                out[by_col[lo:hi]] = block[:, sorted_cols[lo:hi] - c0].T
        return out

    def _write_all(self) -> RowFile:
        file = RowFile(self.path, self.shape, self.dtype)
        position = np.empty_like(self.order)
        position[self.order] = np.arange(len(self.order))  # where each voxel goes
        for c0, _, block in self.stack.blocks():
            for j, row in enumerate(np.ascontiguousarray(block.T)):
                file.write_row(position[c0 + j], row)
        return file

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._file is not None:
            self._file.remove()
            self._file = None
        self._held = (0, 0, None)
