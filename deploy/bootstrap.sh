#!/usr/bin/env bash
# Installs what the project needs on a fresh machine, or says clearly what is missing.
# Idempotent: a second run only checks. Needs: Python >= 3.11 with pip, Java >= 17, Maven.
set -euo pipefail

say() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*"; }
die() { printf '\033[31m[bootstrap] %s\033[0m\n' "$*" >&2; exit 1; }

can_apt() { [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; }
apt_updated=0
apt_install() {
  can_apt || die "missing: $*. Install them (Debian/Ubuntu: sudo apt-get install -y $*) and run again."
  if [[ $apt_updated -eq 0 ]]; then apt-get update -qq; apt_updated=1; fi
  say "installing $* with apt"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v python3 >/dev/null || apt_install python3 python3-pip
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || die "Python 3.11 or newer is required (found $(python3 --version 2>&1))."

java_ok() { command -v java >/dev/null && java -version 2>&1 | grep -Eq 'version "(1[7-9]|2[0-9])'; }
java_ok || apt_install openjdk-17-jre-headless
java_ok || die "Java 17 or newer is required for the Kafka broker."
command -v mvn >/dev/null || apt_install maven
# Headless Chromium for the browser tests (tests/e2e): Playwright drives the system's, never downloads one.
if ! command -v chromium >/dev/null; then
  if can_apt; then apt_install chromium; else say "no chromium: tests/e2e need it (Debian/Ubuntu: sudo apt-get install -y chromium)"; fi
fi

if ! command -v uv >/dev/null; then
  say "installing uv (Python package manager) with pip"
  python3 -m pip install --quiet "uv==0.13.9" || die "could not install uv with pip"
fi
export PATH="$HOME/.local/bin:$PATH"
uv sync --frozen --quiet
say "ready: $(uv run python --version), $(java -version 2>&1 | head -n1), $(mvn -v 2>/dev/null | head -n1 | cut -c1-40)"
