"""What the user sees: pagemill's own lines on the terminal, everything else in a log file.

Ray's start-up notices, its C++ warnings, transformers' "Loading weights" bars and Python
warnings all write to the process' stderr (file descriptor 2, from C++ or Python alike). While a
command runs, ``Console.capture`` points descriptor 2 at a log file and keeps a handle on the real
terminal for pagemill's lines (``Console.say``). A run copies its log to ``OUT/_runs/<run>.log``;
a failure names it. ``--verbose`` turns the capture off. A terminal gets a live progress line; a
pipe or a file gets a line per interval.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile


def _real_fds() -> bool:
    try:
        return sys.stdout.fileno() == 1 and sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


def _empty(path: str) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return True


class Console:
    def __init__(self, verbose: bool = False):
        self.verbose = verbose
        self.term = sys.stderr
        self.out = sys.stdout  # pagemill's results (the summary, a search's table): stdout, untouched
        self.log_path: str | None = None
        self._live = False  # a live progress line is showing (a terminal's last line)

    @property
    def tty(self) -> bool:
        try:
            return self.term.isatty()
        except (AttributeError, ValueError):
            return False

    def write(self, text: str) -> None:
        """A stream-like sink for pagemill's own lines (``log.write`` in the library)."""
        if self._live:
            self.term.write("\r\x1b[2K")
            self._live = False
        self.term.write(text)
        self.term.flush()

    def flush(self) -> None:
        self.term.flush()

    def live(self, line: str) -> None:
        """A progress line that replaces itself on a terminal."""
        self.term.write("\r\x1b[2K" + line)
        self.term.flush()
        self._live = True

    def end_live(self) -> None:
        if self._live:
            self.term.write("\n")
            self.term.flush()
            self._live = False

    @contextlib.contextmanager
    def capture(self, keep: bool = False):
        """Send descriptor 2 (and Python's stderr) to a log file for the duration; pagemill's
        lines still reach the terminal. The log is deleted on success unless ``keep``."""
        if self.verbose or not _real_fds():
            yield self  # --verbose, or streams that are not the process' own (a test's capture)
            return
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")
        fd, self.log_path = tempfile.mkstemp(prefix="pagemill-", suffix=".log")
        sys.stderr.flush()
        sys.stdout.flush()
        # Libraries print to both (Ray's error relays go to stdout, where a scheduler reads the
        # summary): both descriptors go to the log, and pagemill writes to the saved originals.
        saved = os.dup(2), os.dup(1)
        self.term = os.fdopen(os.dup(saved[0]), "w", buffering=1, encoding="utf-8", errors="replace")
        self.out = os.fdopen(os.dup(saved[1]), "w", buffering=1, encoding="utf-8", errors="replace")
        os.dup2(fd, 2)
        os.dup2(fd, 1)
        os.close(fd)
        ok = False
        try:
            yield self
            ok = True
        finally:
            sys.stderr.flush()
            sys.stdout.flush()
            os.dup2(saved[0], 2)
            os.dup2(saved[1], 1)
            for d in saved:
                os.close(d)
            self.end_live()
            self.term.close()
            try:
                self.out.close()
            except BrokenPipeError:
                pass
            self.term, self.out = sys.stderr, sys.stdout
            # kept only when it has something to show (a failed command names it); an empty one
            # is removed whatever happened, or every failed command would leave one in /tmp
            if self.log_path and ((ok and not keep) or _empty(self.log_path)):
                with contextlib.suppress(OSError):
                    os.unlink(self.log_path)
                self.log_path = None

    def log_text(self) -> bytes:
        if not self.log_path:
            return b""
        sys.stderr.flush()
        with open(self.log_path, "rb") as f:
            return f.read()
