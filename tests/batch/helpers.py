"""What the tests of `multitask classify` share."""

from __future__ import annotations

import json


def report_of(stdout: str) -> dict:
    """The report `multitask classify` prints last (Ray's workers may print their own lines before it)."""
    return json.loads(stdout[stdout.rindex('{\n  "rows_in"') :])
