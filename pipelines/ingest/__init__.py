"""The ingest job: plan units, run them, commit each, finish, summarise."""
