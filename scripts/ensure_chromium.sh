#!/usr/bin/env bash
# Install a headless Chromium (Debian package) where it is missing; used by the report test.
set -u
for b in chromium chromium-browser google-chrome; do command -v "$b" >/dev/null && exit 0; done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) && exit 0
fi
exit 1
