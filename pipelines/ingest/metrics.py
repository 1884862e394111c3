"""An ingest run's metrics in Prometheus' text format: pushed to a Pushgateway (``--pushgateway``)
and written for node exporter's textfile collector (``--metrics-textfile``), at the heartbeat (at
most every ``PUSH_EVERY_S``) and at the end of the run, with the command's exit status.

A batch job is not scraped: it pushes what its last run did (Prometheus' practice for batch jobs).
Every metric is a gauge of the run: its counts start from zero with the run (named ``_total``,
the counts they are; a push replaces them, nothing accumulates across runs), in a registry of
its own, never the global one. The Pushgateway holds one group per output root: job
``pagemill``, instance OUT's URI (``instance_name``: no user info), so two indexes never
overwrite each other's metrics.

>>> counts = RunCounts(documents={"indexed": 2, "quarantined": 1}, quarantined={"open_error": 1})
>>> sorted(counts.samples()["pagemill_documents_total"].items())
[(('indexed',), 2), (('quarantined',), 1)]
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

JOB = "pagemill"
PUSH_EVERY_S = 15.0  # the heartbeat pushes at most this often
TIMEOUT_S = 5.0  # a Pushgateway that does not answer delays a heartbeat this long, no more

# Every metric: its help and its labels. The names are what alert rules (infra/) are written against.
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pagemill_documents_total": ("Documents of the run by outcome: indexed (partial and duplicate among them), "
                                 "partial, duplicate (an indexed document's bytes: copied), unchanged (already "
                                 "indexed: skipped), quarantined, deleted (gone from the source), deferred",
                                 ("outcome",)),
    "pagemill_pages_total": ("Pages of the run by outcome: indexed (duplicate among them), duplicate (copied), "
                             "quarantined (pages of partly indexed documents), deleted", ("outcome",)),
    "pagemill_quarantined_total": ("Quarantine entries of the run by reason: a document, or a page of a partly "
                                   "indexed one", ("reason",)),
    "pagemill_pages_per_second": ("Pages committed per second of the run's wall time", ()),
    "pagemill_stage_busy_share": ("Share of its workers' time a stage was busy (the highest: the bottleneck)",
                                  ("stage",)),
    "pagemill_store_rows_written_total": ("Rows the run wrote to the vector store, by table", ("table",)),
    "pagemill_store_rows": ("Rows a table of the vector store holds at the end of the run", ("table",)),
    "pagemill_archive_rows": ("Rows a table of the vector store should hold by the archive's committed pages "
                              "(tables of a row per vector are left out: pagemill status counts them)", ("table",)),
    "pagemill_run_duration_seconds": ("Seconds the run has taken (at the heartbeat: so far)", ()),
    "pagemill_run_exit_status": ("Exit status of the last finished run: 0 ok, 1 failed, 2 bad input or options, "
                                 "130 interrupted", ()),
    "pagemill_run_success_timestamp_seconds": ("Unix time the last successful run ended", ()),
}
# The last finished run's facts. Every push replaces the whole group (a Pushgateway PUT; a
# textfile is rewritten whole), so each carries these from the group's (the file's) previous
# state unless it sets them: a running or failed run never erases the last success. (POST, which
# replaces only the names it sends, would keep a previous run's label sets that this run has
# no sample of: a quarantine reason seen yesterday and not today.)
LAST_RUN = ("pagemill_run_exit_status", "pagemill_run_success_timestamp_seconds")

Samples = dict[str, dict[tuple, float]]  # metric -> label values (in METRICS' order) -> value


@dataclass
class RunCounts:
    """What a run did, as metrics: from its summary at the end, from its live totals at a beat."""

    documents: dict[str, int] = field(default_factory=dict)  # outcome -> documents
    pages: dict[str, int] = field(default_factory=dict)  # outcome -> pages
    quarantined: dict[str, int] = field(default_factory=dict)  # reason -> entries
    pages_per_second: float | None = None
    stage_busy_share: dict[str, float] = field(default_factory=dict)
    store_rows_written: dict[str, int] = field(default_factory=dict)  # table -> rows
    store_rows: dict[str, int] = field(default_factory=dict)
    archive_rows: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of_summary(cls, summary: dict, store: str, archive_rows: dict[str, int]) -> RunCounts:
        """A finished run's counts, from its summary (``summary.build``; ``store``: the vector store's
        section) and the rows the archive says the store's tables hold."""
        d, p, dup = summary["documents"], summary["pages"], summary["duplicates"]
        s = summary.get(store, {})
        return cls(documents={"indexed": d["indexed"], "partial": d["partial"], "duplicate": dup["documents"],
                              "unchanged": d["skipped_unchanged"], "quarantined": d["quarantined"],
                              "deleted": d["deleted"], "deferred": d["deferred"]},
                   pages={"indexed": p["indexed"], "duplicate": dup["pages"], "quarantined": p["quarantined"],
                          "deleted": p["deleted"]},
                   quarantined=dict(Counter(q["reason"] for q in summary["quarantine"])),
                   pages_per_second=summary["pages_per_s"], stage_busy_share=busy_shares(summary["stages"]),
                   store_rows_written=dict(s.get("rows_written", {})), store_rows=dict(s.get("row_counts", {})),
                   archive_rows=dict(archive_rows))

    @classmethod
    def live(cls, totals, stages: dict, pages_per_second: float) -> RunCounts:
        """A running run's counts so far (``totals``: its RunTotals; ``stages``: StageStats' summary)."""
        planned = totals.planned
        return cls(documents={"indexed": totals.docs["indexed"] + totals.docs["partial"],
                              "partial": totals.docs["partial"], "duplicate": totals.duplicate_docs,
                              "unchanged": planned.skipped_unchanged, "quarantined": totals.docs["quarantined"],
                              "deferred": planned.deferred},
                   pages={"indexed": totals.pages, "duplicate": totals.duplicate_pages,
                          "quarantined": totals.page_quarantine},
                   quarantined=dict(Counter(q["reason"] for q in list(totals.quarantine))),
                   pages_per_second=pages_per_second, stage_busy_share=busy_shares(stages))

    def samples(self) -> Samples:
        by_label = {"pagemill_documents_total": self.documents, "pagemill_pages_total": self.pages,
                    "pagemill_quarantined_total": self.quarantined, "pagemill_stage_busy_share": self.stage_busy_share,
                    "pagemill_store_rows_written_total": self.store_rows_written,
                    "pagemill_store_rows": self.store_rows, "pagemill_archive_rows": self.archive_rows}
        out: Samples = {name: {(k,): v for k, v in values.items()} for name, values in by_label.items() if values}
        if self.pages_per_second is not None:
            out["pagemill_pages_per_second"] = {(): self.pages_per_second}
        return out


def busy_shares(stages: dict) -> dict[str, float]:
    """Each stage's utilisation (StageStats' summary), where it has one."""
    return {k: v["utilisation"] for k, v in stages.items() if isinstance(v, dict) and v.get("utilisation") is not None}


def instance_name(out: str) -> str:
    """The Pushgateway group's ``instance``: OUT's URI (a folder's absolute ``file://`` URI, as the
    summary's ``out``), without user info or a trailing slash.

    >>> instance_name("s3://bucket/nightly/"), instance_name("/data/out")
    ('s3://bucket/nightly', 'file:///data/out')
    """
    p = urlparse(out)
    if p.scheme in ("", "file"):
        return Path(unquote(p.path) if p.scheme == "file" else out).resolve().as_uri()
    if p.username or p.password:  # never a credential in a label
        p = p._replace(netloc=p.hostname + (f":{p.port}" if p.port else ""))
    return p.geturl().rstrip("/")


def metrics_problem(pushgateway: str | None, textfile: str | None) -> str | None:
    """What is wrong with ``--pushgateway`` or ``--metrics-textfile``, naming its key; None when fine."""
    if pushgateway:
        p = urlparse(pushgateway)
        try:
            p.port  # noqa: B018  (raises on a port that is not a number)
        except ValueError:
            return f"pushgateway: {pushgateway!r} has a port that is not a number"
        if p.username or p.password:  # (not echoed: it holds a secret)
            return "pushgateway: credentials do not belong in the URL (logged, and seen in ps): give http://host:port"
        if p.scheme not in ("http", "https") or not p.hostname:
            return f"pushgateway: {pushgateway!r} is not a Pushgateway URL (e.g. http://pushgateway:9091)"
    if textfile:
        if not textfile.endswith(".prom"):
            return f"metrics_textfile: {textfile!r} must end in .prom (node exporter's textfile collector reads only those)"
        folder = os.path.dirname(os.path.abspath(textfile))
        if not os.path.isdir(folder):
            return f"metrics_textfile: no such folder {folder!r}"
    return None


def _family(name: str, values: dict[tuple, float]):
    from prometheus_client.core import GaugeMetricFamily

    help_, labels = METRICS[name]
    family = GaugeMetricFamily(name, help_, labels=list(labels))
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


class _Snapshot:
    """A collector of fixed samples: a push is the run's state at one moment."""

    def __init__(self, samples: Samples):
        self.samples = samples

    def collect(self):
        return [_family(name, self.samples[name]) for name in METRICS if name in self.samples]


def registry(samples: Samples):
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Snapshot(samples))
    return reg


def last_run(text: str, labels: dict[str, str]) -> Samples:
    """The ``LAST_RUN`` samples with ``labels`` among those of ``text`` (Prometheus' text format)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in LAST_RUN and all(s.labels.get(k) == v for k, v in labels.items()):
                out[s.name] = {(): s.value}
    return out


class Pushgateway:
    def __init__(self, url: str, instance: str):
        self.url, self.instance = url.rstrip("/"), instance
        self.where = f"Pushgateway {self.url}"

    def previous(self) -> Samples:
        """The group's last-run samples, read back from the gateway's own exposition."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=TIMEOUT_S) as r:
            text = r.read().decode()
        return last_run(text, {"job": JOB, "instance": self.instance})

    def write(self, samples: Samples) -> None:
        from prometheus_client import push_to_gateway

        push_to_gateway(self.url, job=JOB, registry=registry(samples), grouping_key={"instance": self.instance},
                        timeout=TIMEOUT_S)  # PUT: the group becomes exactly these


class Textfile:
    def __init__(self, path: str):
        self.path = path
        self.where = f"metrics textfile {path}"

    def previous(self) -> Samples:
        try:
            with open(self.path, encoding="utf-8") as f:
                return last_run(f.read(), {})
        except FileNotFoundError:
            return {}

    def write(self, samples: Samples) -> None:
        from prometheus_client import write_to_textfile

        write_to_textfile(self.path, registry(samples))  # a temporary file beside it, renamed: atomic


class RunMetrics:
    """One run's metrics and where they go: ``beat`` at the heartbeat, ``finished`` with the
    summary, ``end`` with the exit status. A sink that fails is one warning line, once; the run
    goes on."""

    def __init__(self, sinks: list, warn: Callable[[str], None], clock: Callable[[], float] = time.time):
        self.sinks, self.warn, self.clock = sinks, warn, clock
        self.started = clock()
        self.counts = RunCounts()
        self._carried: dict[int, Samples] = {}  # sink -> its previous last-run samples, once read
        self._warned: set[int] = set()
        self._last_beat: float | None = None
        self._final = False  # the summary's counts are in: a late heartbeat must not replace them
        self._lock = threading.Lock()  # the counts
        self._push_lock = threading.Lock()  # one push at a time: the heartbeat's and the end's

    @classmethod
    def for_options(cls, values: dict, warn: Callable[[str], None]) -> RunMetrics | None:
        """From the options as given (``pushgateway``, ``metrics_textfile``, ``out``), before the
        others are checked: a run refused for a bad option still reports its exit status. None
        when neither is asked, or they themselves are wrong (validation says so)."""
        gateway, textfile, out = values.get("pushgateway"), values.get("metrics_textfile"), values.get("out")
        if not (gateway or textfile) or metrics_problem(gateway, textfile):
            return None
        sinks = [Textfile(textfile)] if textfile else []
        if gateway and out:  # (without OUT there is no group to push to)
            sinks.append(Pushgateway(gateway, instance_name(out)))
        return cls(sinks, warn) if sinks else None

    def beat(self, counts: Callable[[], RunCounts]) -> None:
        """At the heartbeat: the run so far, at most every ``PUSH_EVERY_S``."""
        now = time.monotonic()
        if self._final or (self._last_beat is not None and now - self._last_beat < PUSH_EVERY_S):
            return
        self._last_beat = now
        try:
            live = counts()
        except (RuntimeError, KeyError, ValueError):  # counters read while a commit updates them: next beat
            return
        with self._lock:
            if self._final:
                return
            self.counts = live
        self._push(live.samples())

    def finished(self, counts: RunCounts) -> None:
        """The run's final counts (from its summary); ``end`` pushes them."""
        with self._lock:
            self.counts, self._final = counts, True

    def end(self, exit_status: int) -> None:
        samples = self.counts.samples()
        samples["pagemill_run_exit_status"] = {(): exit_status}
        if exit_status == 0:
            samples["pagemill_run_success_timestamp_seconds"] = {(): self.clock()}
        self._push(samples)

    def _push(self, samples: Samples) -> None:
        with self._push_lock:
            samples = {**samples, "pagemill_run_duration_seconds": {(): round(self.clock() - self.started, 3)}}
            for sink in self.sinks:
                try:
                    if id(sink) not in self._carried and not all(name in samples for name in LAST_RUN):
                        self._carried[id(sink)] = sink.previous()  # (unread: no push, it would erase them)
                    sink.write({**self._carried.get(id(sink), {}), **samples})
                except Exception as e:  # noqa: BLE001  (metrics never fail a run)
                    if id(sink) not in self._warned:
                        self._warned.add(id(sink))
                        first = (str(e).strip().splitlines() or [""])[0]
                        self.warn(f"pagemill: warning: metrics not written to {sink.where} "
                                  f"({type(e).__name__}: {first}); the run goes on\n")


__all__ = ["METRICS", "RunCounts", "RunMetrics", "instance_name", "metrics_problem"]
