"""The Milvus store: Milvus Lite and Milvus servers behind the store door."""
