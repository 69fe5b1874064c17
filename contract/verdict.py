"""The verdict of a check: PASS or FAIL (SKIP where a check was not run).

A ``str`` enum, so ``json.dumps`` writes ``"PASS"``/``"FAIL"`` byte for byte as before and a
verdict compares equal to the plain string read back from a committed JSON file.
"""
from __future__ import annotations

from enum import Enum


class Verdict(str, Enum):
    """The outcome of one check or of a whole run."""

    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"

    def __str__(self) -> str:  # f"{verdict}" prints PASS, not Verdict.PASS
        return self.value

    @classmethod
    def of(cls, passed: bool) -> "Verdict":
        """PASS when `passed`, else FAIL."""
        return cls.PASS if passed else cls.FAIL
