"""Writing the tables: gzip CSV files, appended chunk by chunk on two threads.

:class:`GzipCsv` writes one table whose bytes depend on its content only (no time, no file name in the gzip
header); :class:`WriterThreads` formats CSV on one thread and compresses on another, both overlapping with
generating the next chunk.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import io
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

GZIP_LEVEL = 1  # fast; the tables are written once and read a few times


class WriterThreads:
    """Two threads: one formats CSV, one compresses and writes. Arrow and zlib release the GIL, so both
    overlap with generating the next chunk; single-thread pools keep every file's chunks in order."""

    def __init__(self) -> None:
        self.format = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="synth-csv")
        self.compress = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="synth-gzip")

    def __enter__(self) -> WriterThreads:
        return self

    def __exit__(self, *exc: object) -> None:
        self.format.shutdown()
        self.compress.shutdown()


class GzipCsv:
    """One gzip CSV table, appended chunk by chunk. The gzip header carries no time and no file name, so the
    bytes depend on the content only."""

    def __init__(self, path: Path, threads: WriterThreads):
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._gzip = gzip.GzipFile(filename="", mode="wb", fileobj=self._file, compresslevel=GZIP_LEVEL, mtime=0)
        self._threads = threads
        self._pending: list[concurrent.futures.Future] = []
        self._header = True
        self.rows = 0

    def append(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        text = self._threads.format.submit(_csv_bytes, table, self._header)
        self._header = False
        self._pending.append(self._threads.compress.submit(lambda: self._gzip.write(text.result())))
        while len(self._pending) > 2:  # bounded memory: at most two chunks in flight
            self._pending.pop(0).result()

    def close(self) -> None:
        try:
            for future in self._pending:
                future.result()
        finally:
            self._gzip.close()
            self._file.close()

    def __enter__(self) -> GzipCsv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _csv_bytes(table: pa.Table, header: bool) -> memoryview:
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=header))
    return buffer.getbuffer()


def write_table(path: Path, table: pa.Table, threads: WriterThreads) -> int:
    with GzipCsv(path, threads) as out:
        out.append(table)
    return table.num_rows
