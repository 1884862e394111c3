"""Reading an index: what it is, search, loading Milvus, status."""
