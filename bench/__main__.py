"""``python -m bench [--smoke] [--out DIR]``: runs the benchmark, prints the table and
writes ``<out>/<timestamp>.json``, ``<out>/latest.json`` and the PNG chart (default
``bench/results``)."""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import ROOT, Status
from bench.report import chart, table
from bench.run import FULL, SMOKE, dumps, run


def _clean(value: Any) -> Any:
    """NaN (no sample) becomes null, so the JSON stays strict."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="seconds-long run with tiny counts (checks the bench works)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results",
        help="folder for the JSON and PNG results (bench/results)",
    )
    args = parser.parse_args(argv)
    status = Status()
    try:
        doc = _clean(run(SMOKE if args.smoke else FULL, status))
    except KeyboardInterrupt:
        status.finish("bench: interrupted; everything was stopped")
        return 130
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / f"{stamp}.json", out / f"{stamp}.png"
    skipped = chart(doc, png_path)
    doc["chart"] = None if skipped else png_path.name
    if skipped:
        doc["chart_skipped"] = skipped
    text = dumps(doc)
    json_path.write_text(text)
    (out / "latest.json").write_text(text)
    if not skipped:
        shutil.copyfile(png_path, out / "latest.png")
    status.finish()
    print(table(doc))
    print(
        f"\nresults: {json_path}"
        + ("" if skipped else f"\nchart:   {png_path}")
        + (f"\nchart skipped: {skipped}" if skipped else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
