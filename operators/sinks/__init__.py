"""Where pages go: Parquet shards and Milvus collections."""
