"""Writes the Infobip simulator's contract (simulators/infobip/openapi/infobip-contract.json)
from Infobip's published OpenAPI documents.

    python scripts/extract_infobip_contract.py [FOLDER]

FOLDER defaults to ../shared/reference/infobip-openapi beside the checkout.
tests/simulators/infobip/test_contract.py checks the file matches the documents.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ccbridge.simulators.infobip.contract import EXTRACT_FILE, dumps, extract_from_files

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = ROOT.parent / "shared" / "reference" / "infobip-openapi"
TARGET = ROOT / "simulators" / "infobip" / "openapi" / EXTRACT_FILE


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else DEFAULT_FOLDER
    if not folder.is_dir():
        print(f"no documents at {folder}", file=sys.stderr)
        return 2
    TARGET.write_bytes(dumps(extract_from_files(folder)))
    print(f"wrote {TARGET.relative_to(ROOT)} from {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
