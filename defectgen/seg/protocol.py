"""The protocol log: every choice of an evaluation campaign, on which split, with which numbers.

A campaign chooses its settings (segmentation steps, usage mode, ratio, generator checkpoint, ...)
on a validation split and scores the test split once, at the end. The log is a JSON-lines file in
the results folder, one entry per line, appended in order, so a reader can check that nothing was
chosen on test:

    log_decision("experiments/neu_pay/results/protocol.jsonl", "seg.steps", 400, split="val",
                 rule="smallest steps within 1 point of the best mean val mIoU (defect)",
                 evidence={"100": 0.31, "200": 0.38, "400": 0.41, "800": 0.41})
    log_final("experiments/neu_pay/results/protocol.jsonl", "headline table", split="test", results="experiments/neu_pay/results/test.csv")

``log_decision`` refuses the split named ``test``; ``log_final`` records the one scoring of the
test split per ``what`` and refuses a second one; ``read_decision`` reads the newest choice back.
"""
from __future__ import annotations

import fcntl
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from defectgen.config import ConfigError
from defectgen.io import atomic_write_text

TEST_SPLITS = ("test",)  # split names that are never used to choose anything


def read_protocol(path: str | Path) -> list[dict[str, Any]]:
    """The entries of a protocol log, oldest first (an absent file is an empty log)."""
    path = Path(path)
    if not path.is_file():
        return []
    entries = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                entries.append(json.loads(line))
            except ValueError as err:
                raise ConfigError(f"{path}:{i}: not a JSON line ({err})") from err
    return entries


def read_decision(path: str | Path, decision: str) -> dict[str, Any]:
    """The newest entry of ``decision`` in the log (a later stage reads back what an earlier one chose)."""
    found = [e for e in read_protocol(path) if e.get("kind") == "decision" and e.get("decision") == decision]
    if not found:
        raise ConfigError(f"{path}: no decision '{decision}' yet")
    return found[-1]


@contextmanager
def _locked(path: Path):
    """Serialise writers of one log (campaign scripts run several models side by side)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _append(path: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Rewrite the log with one more line, atomically: a crash never leaves a half line."""
    old = path.read_text() if path.is_file() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    atomic_write_text(path, old + json.dumps(entry, sort_keys=False) + "\n")
    return entry


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def log_decision(
    path: str | Path,
    decision: str,
    chosen: Any,
    split: str,
    rule: str,
    evidence: dict[str, Any],
    source: str | None = None,
    note: str = "",
) -> dict[str, Any]:
    """Append the choice of ``decision`` (e.g. ``seg.steps``) = ``chosen``, made on ``split`` by ``rule``.

    ``evidence``: the numbers the rule looked at (e.g. mean val mIoU per candidate); ``source``: the
    file they come from. Refuses a test split: choices are made on validation data only. An entry
    identical to an earlier one (except its time) is not repeated.
    """
    if split in TEST_SPLITS:
        raise ConfigError(f"decision '{decision}': chosen on split '{split}'; choices are made on a validation split, "
                          "test is scored once at the end (log_final)")
    entry = {"kind": "decision", "time": _stamp(), "decision": decision, "chosen": chosen, "split": split,
             "rule": rule, "evidence": evidence, "source": source, "note": note}
    with _locked(Path(path)):
        same = [e for e in read_protocol(path) if {**e, "time": None} == {**entry, "time": None}]
        if same:  # a resumed script reaching the same decision from the same numbers logs it once
            return same[0]
        return _append(Path(path), entry)


def log_final(path: str | Path, what: str, split: str, results: str, note: str = "") -> dict[str, Any]:
    """Append the one scoring of the test ``split`` for ``what``; a second entry for the same ``what`` is refused."""
    path = Path(path)
    with _locked(path):
        if any(e.get("kind") == "final" and e.get("what") == what for e in read_protocol(path)):
            raise ConfigError(f"{path}: '{what}' was already scored on the test split; the test split is scored once")
        decisions = [e["decision"] for e in read_protocol(path) if e.get("kind") == "decision"]
        entry = {"kind": "final", "time": _stamp(), "what": what, "split": split, "results": results,
                 "decisions_before": decisions, "note": note}
        return _append(path, entry)
