"""The OUT format: what an output root holds and how it is read, below every job that uses it.

``keys`` (every key of OUT), ``ledger`` (committed versions and live files), ``units`` (work
units and the run's plan file), ``manifest`` (the committed page shards, for readers),
``identity`` (``_index.json``: what the index is made of), ``runs`` (run ids, summaries, logs),
``lock`` (one run per OUT). The ingest job, the index commands and the analysis all read it;
none owns it, and it imports none of them.
"""
