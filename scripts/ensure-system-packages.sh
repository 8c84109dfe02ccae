#!/usr/bin/env bash
# What `make demo`, `make test` and CI need from the system, before any Python is installed:
# a JDK 17 (java, javac), Maven, PostgreSQL's server binaries and psql, Python >= 3.11 with venv, and
# runuser when run as root (PostgreSQL will not run as root); with --tests also what only the
# test suite needs (`make test`): Node.js, npm and Go for the SDKs' suites in clients/, and
# promtool (Debian's prometheus) for ops/prometheus. Installs what is missing when it
# can (root and apt-get); otherwise prints the exact command to run and exits 1. Silent when
# nothing is missing. The one copy of this check: the Makefile and .ci/run both call it.
#
# Environment: PYTHON (default python3); PG_ROOT, where Debian puts PostgreSQL's server
# binaries (default /usr/lib/postgresql); GO_ROOT, a Go installed outside PATH (default
# /usr/local/go, the official tarball's place; tests/clients looks there too).
set -euo pipefail

python=${PYTHON:-python3}
pg_root=${PG_ROOT:-/usr/lib/postgresql}
go_root=${GO_ROOT:-/usr/local/go}
tests=false
[ "${1:-}" = --tests ] && tests=true

if ! command -v "$python" >/dev/null; then
  echo "error: $python not found; install Python 3.11 or newer (or set PYTHON=...)" >&2
  exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: $python is Python $("$python" -c 'import platform; print(platform.python_version())');" \
    "meterstream needs 3.11 or newer (set PYTHON=python3.11 or newer)" >&2
  exit 1
fi

missing=()
{ command -v java >/dev/null && command -v javac >/dev/null; } || missing+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null || missing+=(maven)
{ compgen -G "$pg_root/*/bin/initdb" >/dev/null || command -v initdb >/dev/null; } ||
  missing+=(postgresql)
command -v psql >/dev/null || missing+=(postgresql-client)  # the docs' queries use it
"$python" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ "$(id -u)" = 0 ]; then
  command -v runuser >/dev/null || missing+=(util-linux)
fi
if $tests; then
  command -v promtool >/dev/null || missing+=(prometheus)
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  { command -v go >/dev/null || [ -x "$go_root/bin/go" ]; } || missing+=(golang-go)
fi
((${#missing[@]})) || exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing: ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  exit 0
fi

echo "error: missing ${missing[*]}" >&2
if command -v apt-get >/dev/null; then
  echo "run: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
else
  echo "install them with your system's package manager (these are Debian's names), then run" \
    "this again" >&2
fi
exit 1
