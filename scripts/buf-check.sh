#!/usr/bin/env bash
# The gRPC API's compatibility gate (docs/grpc.md, "Compatibility"):
#   buf lint                       the style rules of buf.yaml (STANDARD + COMMENTS)
#   buf breaking                   buf.yaml's rules (PACKAGE) against the protos of the last
#                                  release: the newest v* tag reachable from HEAD, else the
#                                  last release's commit recorded below (every full clone
#                                  of main has it, with or without tags)
# A clone that has neither (a shallow clone) FAILS here rather than comparing against
# nothing: fetch the history (git fetch --unshallow --tags).
# buf: $BUF, else `buf` on PATH, else .tools/node_modules/.bin/buf (what `make test`
# installs: scripts/test-tools.sh, npm install --prefix .tools @bufbuild/buf@$BUF_VERSION).
# A release: tag it (git tag -a vX.Y.Z) and record it here.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF_VERSION=1.75.0
LAST_RELEASE=v0.1.0
LAST_RELEASE_COMMIT=3c49abc98767ccaf5d1331cb22971ce825f50330
buf=${BUF:-$(command -v buf || echo .tools/node_modules/.bin/buf)}
if [ ! -x "$buf" ]; then
  echo "buf-check: no buf; install it with: npm install --prefix .tools @bufbuild/buf@$BUF_VERSION" >&2
  exit 3
fi
if release=$(git describe --tags --abbrev=0 --match 'v[0-9]*' HEAD 2>/dev/null); then
  against=".git#tag=${release},subdir=protos"
elif git cat-file -e "${LAST_RELEASE_COMMIT}^{commit}" 2>/dev/null; then
  release="${LAST_RELEASE} (commit ${LAST_RELEASE_COMMIT:0:12}; no tags in this clone)"
  against=".git#ref=${LAST_RELEASE_COMMIT},subdir=protos"
else
  echo "buf-check: FAILED: neither a release tag (v*) nor the last release's commit" \
    "${LAST_RELEASE_COMMIT:0:12} (${LAST_RELEASE}) is in this clone, so buf breaking has" \
    "nothing to compare with; fetch the history (git fetch --unshallow --tags)" >&2
  exit 2
fi
"$buf" lint
"$buf" breaking --against "$against"
echo "buf-check: lint ok; no breaking change against ${release}"
