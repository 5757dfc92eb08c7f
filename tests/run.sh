#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what is missing, starts
# the real services on loopback, runs every test, stops the services.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/drp/target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

bash tests/services/setup.sh
# The suite drives the binaries, so build them before the tests run; the
# tests in the same build, so dependencies compile once with one feature set.
cargo build --workspace --bins --tests --locked
ENV_FILE=$(bash tests/services/start.sh)
trap 'bash tests/services/stop.sh "$(dirname "$ENV_FILE")"' EXIT
export DRP_TEST_ENV=$ENV_FILE
cargo nextest run --workspace --locked --no-fail-fast "$@"
