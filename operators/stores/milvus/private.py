"""The parts of pymilvus' private API that pagemill uses, in one place.

pymilvus' ``MilvusClient.upsert`` takes rows and packs every value of every row in Python; for
row-per-vector collections that costs more than the server's work. pagemill builds the request's
columns itself (``Columns.to_field_data``: strings as lists, vectors as one block) and sends it
through pymilvus' own gRPC handler. Bulk import (``do_bulk_insert``) is reached the same way.
These are private (``MilvusClient._get_connection``, ``UpsertRequest``, the handler's
``upsert(upsert_param=...)``): the pymilvus range in pyproject.toml is pinned to the one the tests
run, and when a part is missing the callers fall back to the public row API (``available()``).
"""

from __future__ import annotations


class PrivateApiMissing(Exception):
    """This pymilvus lacks a private part pagemill uses; callers take the public API."""


def available(client) -> bool:
    try:
        from pymilvus.grpc_gen import milvus_pb2  # noqa: F401

        client._get_connection().upsert  # noqa: B018
    except (ImportError, AttributeError):
        return False
    return True


def upsert_columns(client, collection: str, db_name: str, cols, start: int, stop: int, timeout: float) -> None:
    """Send entities [start, stop) of ``cols`` (operators.stores.milvus.client.Columns) as one upsert."""
    try:
        from pymilvus.grpc_gen import milvus_pb2

        handler = client._get_connection()
    except (ImportError, AttributeError) as e:
        raise PrivateApiMissing(str(e)) from None
    request = milvus_pb2.UpsertRequest(collection_name=collection, db_name=db_name or "", num_rows=stop - start)
    cols.to_field_data(request.fields_data, start, stop)
    # pymilvus sends a prepared request as it is (and needs no schema for it)
    handler.upsert(collection, [], upsert_param=request, schema={"fields": []}, timeout=timeout)


def bulk_insert(client, collection: str, files: list[str], timeout: float) -> int:
    """Start one import task of ``files`` (paths the server reads); returns the task id."""
    handler = client._get_connection()
    # The client's call context carries the database (pymilvus passes it per request).
    return handler.do_bulk_insert(collection, "", files, timeout=timeout, context=client._generate_call_context())


def bulk_insert_state(client, task: int):
    """The state of an import task: ``state_name``, ``row_count``, ``infos``."""
    handler = client._get_connection()
    return handler.get_bulk_insert_state(task, context=client._generate_call_context())
