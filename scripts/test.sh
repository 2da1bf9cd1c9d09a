#!/usr/bin/env bash
# Set up .venv with the test-only dependencies if needed, then run the whole suite.
source "$(dirname "$0")/setup.sh" test
exec .venv/bin/python -m pytest -q "$@"
