"""The LanceDB store: an index as Lance tables on a local folder or on object storage, written by
the workers as fragments and committed by the driver with each unit (operators/stores/lancedb/store.py)."""
