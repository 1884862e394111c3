"""How a bulk import's rows are gathered into files: the server's side (tasks, counts) is tested
against a real Milvus server in tests/pipelines/test_milvus_server.py; this pins the gathering,
with a stand-in that records the import tasks a server would be given."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from operators.io.store import LocalStore
from operators.stores.milvus.bulk import Imports


class RecordsTasks:
    """Takes ``start_import``'s call and remembers the files; no server."""

    def __init__(self):
        self.started: list[tuple[str, list[str]]] = []

    def _guard(self, what, fn, client, collection, files, timeout):
        self.started.append((collection, files))
        return len(self.started)

    client = None

    class conn:
        timeout_s = 1.0


def rows(start: int, n: int) -> pa.Table:
    return pa.table({"id": pa.array(range(start, start + n), pa.int64()),
                     "vector": pa.array([[float(i)] * 8 for i in range(start, start + n)], pa.list_(pa.float32()))})


def test_a_collections_tables_are_staged_as_one_file_once_they_reach_the_limit(tmp_path):
    stage = LocalStore(tmp_path)
    one = rows(0, 100).nbytes
    server = RecordsTasks()
    imports = Imports(server, stage, "_import", ["a", "b"], max_bytes=2 * one)
    for i in range(5):
        imports.add("a", rows(100 * i, 100))
    imports.add("b", rows(0, 10))
    assert len(server.started) == 2  # a's first two pairs reached the limit; the rest is held
    for c in imports.held:
        imports.send(c)
    tasks = [(c, [f.removeprefix(str(tmp_path) + "/") for f in files]) for c, files in server.started]
    assert tasks == [("a", ["_import/a/part-00000.parquet"]), ("a", ["_import/a/part-00001.parquet"]),
                     ("a", ["_import/a/part-00002.parquet"]), ("b", ["_import/b/part-00003.parquet"])]
    assert imports.expected == {"a": 500, "b": 10}
    ids = [pq.read_table(tmp_path / key)["id"].to_pylist() for key in imports.keys]
    assert ids == [list(range(200)), list(range(200, 400)), list(range(400, 500)), list(range(10))]
