"""`leanformers serve`: load the models, bind the socket, and run the app under uvicorn.

The ready line (with the address; port 0 picks a free one) is printed once the model is loaded, the
socket listens and the scheduler runs. SIGINT and SIGTERM stop the server after the requests in flight
end, waiting at most GRACEFUL_SHUTDOWN_SECONDS for them.
"""

import socket
import sys

import uvicorn

from ..auto import AutoModelForCausalLM
from ..pipelines import pipeline
from ..tokenization import AutoTokenizer
from .app import Embedder, create_app
from .protocol import ServedModel
from .scheduler import Scheduler

GRACEFUL_SHUTDOWN_SECONDS = 10
DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2"


def eos_token_ids(model, tokenizer) -> frozenset:
    """The tokens that end a sequence: the generation config's, and the tokenizer's own."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = set(configured if isinstance(configured, (list, tuple)) else [configured])
    ids.add(tokenizer.eos_token_id)
    return frozenset(i for i in ids if i is not None)


def load_embedder(name: str | None) -> Embedder | None:
    """The embedding model, or None when none is asked for (or the bundled default is not installed)."""
    if not name:
        return None
    try:
        return Embedder(name, pipeline("feature-extraction", model=name))
    except FileNotFoundError as err:
        if name != DEFAULT_EMBEDDING_MODEL:
            raise
        print(f"leanformers serve: no /v1/embeddings: {err}", file=sys.stderr)
        return None


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


def run_server(model_name: str, host: str, port: int, max_batch: int, max_tokens_limit: int | None,
               api_key: str | None, embedding_model: str | None, max_waiting: int) -> int:  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(model_name)
    model = AutoModelForCausalLM.from_pretrained(model_name).eval()
    context = model.config.max_position_embeddings
    if max_tokens_limit is not None and max_tokens_limit > context:
        raise ValueError(f"--max-tokens-limit {max_tokens_limit} is more than the model's context of {context}")
    served = ServedModel(model_name, tokenizer, context, max_tokens_limit or context, eos_token_ids(model, tokenizer))
    embedder = load_embedder(embedding_model)
    sock = listening_socket(host, port)
    bound_port = sock.getsockname()[1]
    address = f"http://{f'[{host}]' if ':' in host else host}:{bound_port}"
    names = model_name + (f" and {embedder.name}" if embedder is not None else "")

    def announce():
        print(f"leanformers serve: {names} ready at {address}/v1 (Ctrl-C to stop)", flush=True)

    app = create_app(Scheduler(model, max_batch, max_waiting), served, embedder, api_key, on_ready=announce)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)
    uvicorn.Server(config).run(sockets=[sock])
    return 0

