#!/usr/bin/env bash
# Set up .venv with the test-only dependencies if needed, then run the whole suite.
# Arguments go to pytest (e.g. -m "not slow").
source "$(dirname "$0")/setup.sh"
setup_venv test
exec .venv/bin/python -m pytest -q "$@"
