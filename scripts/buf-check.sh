#!/usr/bin/env bash
# The gRPC API's compatibility gate (docs/grpc.md, "Compatibility"):
#   buf lint                       the style rules of buf.yaml (STANDARD + COMMENTS)
#   buf breaking                   buf.yaml's rules (PACKAGE) against the protos of the last
#                                  release: the newest v* tag reachable from HEAD (v0.1.0 is
#                                  the first)
# A clone without the release tag (a shallow or --no-tags clone) FAILS here rather than
# comparing against nothing: fetch it with `git fetch --tags`.
# buf: $BUF, else `buf` on PATH, else .tools/node_modules/.bin/buf (what .ci/run installs:
# npm install --prefix .tools @bufbuild/buf@$BUF_VERSION).
set -euo pipefail
cd "$(dirname "$0")/.."
BUF_VERSION=1.75.0
buf=${BUF:-$(command -v buf || echo .tools/node_modules/.bin/buf)}
if [ ! -x "$buf" ]; then
  echo "buf-check: no buf; install it with: npm install --prefix .tools @bufbuild/buf@$BUF_VERSION" >&2
  exit 3
fi
if ! release=$(git describe --tags --abbrev=0 --match 'v[0-9]*' HEAD 2>/dev/null); then
  echo "buf-check: FAILED: no release tag (v*) reachable from HEAD, so buf breaking has" \
    "nothing to compare with; fetch the tags (git fetch --tags) or, in CI, clone with" \
    "tags (fetch-depth: 0)" >&2
  exit 2
fi
"$buf" lint
"$buf" breaking --against ".git#tag=${release},subdir=protos"
echo "buf-check: lint ok; no breaking change against ${release}"
