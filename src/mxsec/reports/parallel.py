"""``mxsec reports ingest`` over many paths in two processes: reading and parsing a batch in one while the
other stores its batch, the batches stored strictly in the order of the paths.

The paths are cut into batches of :data:`~mxsec.reports.inputs.BATCH_INPUTS`; the parent process takes the even
batches, a forked child the odd ones. Each reads and parses its next batch straight away, then waits for its
turn: a one-byte token passed over a pipe after each batch is stored (committed, Maildir messages moved, its
lines printed and flushed). So transactions, moves and printed lines come in the order of the paths, as in one
process, and a batch is reported only once committed. Each process has its own database connection.

If either process fails, it passes a failure token instead (or its end of the pipe closes) and the other stops
before storing anything more; what was committed stays, as after a crash of one process.

Used only where it pays: at least two batches of paths, no standard input among them, two CPUs or more, and
``os.fork``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..storage.reportdb import ReportDB
from .inputs import BATCH_INPUTS, Input, Options, count_outcomes, ingest, path_inputs

__all__ = ["Outcome", "ingest_paths", "worth_two_processes"]

_GO = b"t"
_STOP = b"x"


@dataclass
class Outcome:
    """What became of all the inputs: how many, the counts of :func:`~mxsec.reports.inputs.count_outcomes`,
    whether a report is (now or still) in conflicting copies, and how many processes did the work."""

    inputs: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {"stored": 0, "duplicate": 0, "conflict": 0,
                                                             "rejected": 0})
    in_conflict: bool = False
    processes: int = 1

    def add(self, items: Sequence[Input]) -> None:
        self.inputs += len(items)
        for key, value in count_outcomes(items).items():
            self.counts[key] += value
        self.in_conflict = self.in_conflict or any(r.others for item in items for r in item.results)


def worth_two_processes(paths: Sequence[str], batch: int = BATCH_INPUTS) -> bool:
    return (len(paths) >= 2 * batch and "-" not in paths and (os.cpu_count() or 1) >= 2
            and hasattr(os, "fork"))


class _PeerStopped(Exception):
    """The other process failed or went away: stop before storing anything more."""


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def ingest_paths(open_db: Callable[[], ReportDB], paths: Sequence[str], options: Options,
                 on_done: Callable[[Input], None] | None = None, *, batch: int = BATCH_INPUTS,
                 fail: Callable[[BaseException], int] | None = None) -> Outcome:
    """Ingest *paths* in two processes as the module docstring says (one, through
    :func:`~mxsec.reports.inputs.ingest`, when :func:`worth_two_processes` says no). *open_db* opens a
    connection (called in each process). *fail* reports an error of the child on its stderr and returns the
    child's exit status (default: the message alone, status 2); the parent then raises ``SystemExit`` with it.
    Errors of the parent's own batches are raised as usual."""
    if not worth_two_processes(paths, batch):
        outcome = Outcome()
        db = open_db()
        try:
            outcome.add(ingest(db, (item for path in paths for item in path_inputs(path, options)), options,
                               batch=batch, on_done=on_done))
        finally:
            db.close()
        return outcome
    open_db().close()  # the schema made or checked, and a bad URL refused, once, before the fork
    batches = [paths[start:start + batch] for start in range(0, len(paths), batch)]
    to_parent_r, to_parent_w = os.pipe()
    to_child_r, to_child_w = os.pipe()
    summary_r, summary_w = os.pipe()
    _flush()
    pid = os.fork()
    if pid == 0:  # the child: odd batches
        os.close(to_parent_r)
        os.close(to_child_w)
        os.close(summary_r)
        status = 0
        try:
            outcome = _work(1, batches, open_db, options, on_done, batch, to_child_r, to_parent_w)
            os.write(summary_w, json.dumps({"inputs": outcome.inputs, "counts": outcome.counts,
                                            "in_conflict": outcome.in_conflict}).encode())
        except _PeerStopped:
            status = 1
        except BaseException as exc:  # noqa: BLE001 - reported here, the process ends below in any case
            status = 130 if isinstance(exc, KeyboardInterrupt) else 2
            try:
                status = fail(exc) if fail is not None else _default_fail(exc)
            except BaseException:  # noqa: BLE001
                pass
        finally:
            _flush()
            os._exit(status)
    os.close(to_parent_w)
    os.close(to_child_r)
    os.close(summary_w)
    try:
        outcome = _work(0, batches, open_db, options, on_done, batch, to_parent_r, to_child_w)
        parent_failed = False
    except _PeerStopped:
        parent_failed = True
        outcome = Outcome()
    finally:
        os.close(to_child_w)  # a child still waiting for its turn sees the end of the pipe and stops
        child = _read_all(summary_r)
        os.close(summary_r)
        os.close(to_parent_r)
        _, wait_status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(wait_status)
    if code < 0:
        print(f"mxsec: the second ingest process was killed by signal {-code}", file=sys.stderr)
    if parent_failed or code != 0 or not child:
        raise SystemExit(code if code > 0 else 2)
    theirs = json.loads(child)
    outcome.inputs += theirs["inputs"]
    for key, value in theirs["counts"].items():
        outcome.counts[key] += value
    outcome.in_conflict = outcome.in_conflict or theirs["in_conflict"]
    outcome.processes = 2
    return outcome


def _work(role: int, batches: list[Sequence[str]], open_db: Callable[[], ReportDB], options: Options,
          on_done: Callable[[Input], None] | None, batch: int, turn_r: int, other_w: int) -> Outcome:
    """Batches ``role``, ``role + 2``, ...: parse one, wait for the turn, store it, pass the turn on."""
    outcome = Outcome()
    db = open_db()
    try:
        for number in range(role, len(batches), 2):
            items = [item for path in batches[number] for item in path_inputs(path, options)]
            if number > 0 and os.read(turn_r, 1) != _GO:
                raise _PeerStopped
            try:
                done = ingest(db, items, options, batch=batch, on_done=on_done)
                _flush()
            except BaseException:
                _send(other_w, _STOP)
                raise
            outcome.add(done)
            if number + 1 < len(batches):
                _send(other_w, _GO)
    except BaseException:
        _send(other_w, _STOP)
        raise
    finally:
        db.close()
    return outcome


def _send(fd: int, token: bytes) -> None:
    try:
        os.write(fd, token)
    except OSError:
        pass  # the other process is gone


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _default_fail(exc: BaseException) -> int:
    print(f"mxsec: {exc}", file=sys.stderr)
    return 2
