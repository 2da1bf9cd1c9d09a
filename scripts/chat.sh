#!/usr/bin/env bash
# Set up .venv if needed, then chat with the bundled SmolLM2-135M-Instruct.
source "$(dirname "$0")/setup.sh"
exec .venv/bin/leanformers chat "$@"
