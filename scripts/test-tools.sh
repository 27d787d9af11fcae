#!/usr/bin/env bash
# What the test suite needs besides Python packages, installed where missing (`make test`
# runs it first; so does CI): Request Tracker 5, headless Chromium + its WebDriver,
# promtool and buf. Debian packages need root and apt-get; without them each step says
# so and the tests that need the tool skip with the same how-to. Every step is idempotent.
set -uo pipefail
cd "$(dirname "$0")/.."
as_root_with_apt() { [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; }
step=0
say() { step=$((step + 1)); echo "test-tools [$step/4] $*"; }

say "Request Tracker 5 (the rt connector suite)"
if as_root_with_apt; then
  bash scripts/rt-peer.sh install || echo "  ::warning:: RT install failed; RT tests will skip"
else
  echo "  not root with apt-get: RT tests will skip (sudo scripts/rt-peer.sh install)"
fi

say "headless Chromium + chromium-driver (the operator console's browser test)"
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  echo "  already installed"
elif as_root_with_apt; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
    || echo "  ::warning:: chromium install failed; the console's browser test will skip (apt-get install -y chromium chromium-driver)"
else
  echo "  not root with apt-get: the browser test will skip (apt-get install -y chromium chromium-driver)"
fi

# Only the tool is used: the packaged Prometheus server is stopped and disabled if the
# package started it.
say "promtool, from Debian's prometheus package (the alert-rule tests)"
if command -v promtool >/dev/null 2>&1; then
  echo "  already installed"
elif as_root_with_apt; then
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }; then
    if [ -d /run/systemd/system ]; then
      systemctl disable --now prometheus || true
    elif [ -x /etc/init.d/prometheus ]; then
      /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    fi
  else
    echo "  ::warning:: prometheus (promtool) install failed; the alert-rule tests will skip"
  fi
else
  echo "  not root with apt-get: the alert-rule tests will skip (apt-get install prometheus)"
fi

# buf ships in the npm package @bufbuild/buf, installed into .tools/; npm itself comes
# from Debian's packages on a fresh machine. buf breaking compares with the last release
# tag: a clone without tags fails that check, so the tags are fetched.
say "buf (the gRPC API's lint and breaking-change gate, tests/test_buf.py)"
BUF_VERSION=$(sed -n "s/^BUF_VERSION=//p" scripts/buf-check.sh)  # one pin
if [ -x .tools/node_modules/.bin/buf ] && [ "$(.tools/node_modules/.bin/buf --version 2>/dev/null)" = "$BUF_VERSION" ]; then
  echo "  already installed"
else
  if ! command -v npm >/dev/null 2>&1 && as_root_with_apt; then
    { apt-get update -qq && apt-get install -y -qq npm >/dev/null; } || echo "  ::warning:: npm install failed"
  fi
  if command -v npm >/dev/null 2>&1; then
    npm install --silent --no-fund --no-audit --prefix .tools "@bufbuild/buf@${BUF_VERSION}" \
      || echo "  ::warning:: buf install failed; tests/test_buf.py will skip"
  else
    echo "  no npm: tests/test_buf.py will skip (install npm, then make test again)"
  fi
fi
git fetch --quiet --tags 2>/dev/null || true
exit 0
