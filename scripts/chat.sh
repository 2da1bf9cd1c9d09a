#!/usr/bin/env bash
# Set up .venv if needed, then chat with the bundled SmolLM2-135M-Instruct.
# Arguments go to `leanformers chat` (--system, --temperature, --max-new-tokens, --model).
source "$(dirname "$0")/setup.sh"
setup_venv
exec .venv/bin/leanformers chat "$@"
