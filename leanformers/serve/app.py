"""The routes: OpenAI's HTTP API over the scheduler (FastAPI; streams as server-sent events).

GET /health and /v1/models; POST /v1/completions, /v1/chat/completions and /v1/embeddings. A generation
request becomes one Sequence per prompt and choice, queued on the scheduler; their updates come back from
the scheduler's thread onto the request's asyncio queue. A client that goes away mid-stream cancels its
sequences, which leave the batch at the next step. Every error is answered in OpenAI's shape.
"""

import asyncio
import base64
import json
import threading
from contextlib import asynccontextmanager

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..generation.stopping_criteria import TokenBytes
from .protocol import ApiError, GenerationJob, ServedModel, parse_chat, parse_completion, parse_embeddings, parse_json
from .responses import ChoiceState, ResponseBuilder
from .scheduler import QueueFull, Scheduler
from .sequence import Sequence

RETRY_AFTER_SECONDS = 1


class Submission:
    """The sequences of one request, and the queue their updates arrive on from the scheduler's thread."""

    def __init__(self, job: GenerationJob, model: ServedModel):
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.sequences = [Sequence(prompt, params, model.tokenizer, model.eos_token_ids, self.deliver,
                                   index=p * job.n + choice)
                          for p, (prompt, params) in enumerate(zip(job.prompts, job.params, strict=True))
                          for choice in range(job.n)]  # fmt: skip

    def deliver(self, update):
        self.loop.call_soon_threadsafe(self.queue.put_nowait, update)

    async def updates(self):
        """Each update until every sequence has finished; an ApiError when one failed."""
        left = len(self.sequences)
        while left:
            update = await self.queue.get()
            if update.error is not None:
                raise ApiError(500, f"generation failed: {update.error}", kind="server_error")
            left -= update.finish_reason is not None
            yield update

    def cancel(self):
        """The response is over (the client went away, or a sequence failed): the rest leave the batch."""
        for sequence in self.sequences:
            sequence.cancel()


class Embedder:
    """Mean-pooled, normalized sentence embeddings from a feature-extraction pipeline, one call at a time."""

    def __init__(self, name: str, pipe):
        self.name, self.pipe = name, pipe
        self.lock = threading.Lock()

    def __call__(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """The embeddings and the number of tokens they read."""
        with self.lock:
            vectors = self.pipe(texts, pooling="mean", normalize=True, truncation=True)
            tokens = sum(len(ids) for ids in self.pipe.tokenizer(texts, truncation=True).input_ids)
        return vectors, tokens


def sse(data) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


def create_app(scheduler: Scheduler, model: ServedModel, embedder: Embedder | None = None, api_key: str | None = None,
               on_ready=None) -> FastAPI:  # fmt: skip
    """The app; its lifespan starts the scheduler's thread (then calls `on_ready`) and stops it."""

    @asynccontextmanager
    async def lifespan(app):
        scheduler.start()
        if on_ready is not None:
            on_ready()
        yield
        await run_in_threadpool(scheduler.stop)

    app = FastAPI(lifespan=lifespan)
    token_bytes = TokenBytes(model.tokenizer)

    @app.exception_handler(ApiError)
    async def api_error(request, err: ApiError):
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request, err: HTTPException):
        return JSONResponse(ApiError(err.status_code, str(err.detail)).body(), status_code=err.status_code)

    @app.exception_handler(Exception)
    async def unexpected_error(request, err: Exception):
        body = ApiError(500, f"{type(err).__name__}: {err}", kind="server_error").body()
        return JSONResponse(body, status_code=500)

    async def check_api_key(request: Request):
        if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
            raise ApiError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>' with the key the "
                           "server was started with (--api-key)", code="invalid_api_key")

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(check_api_key)])

    @app.get("/health")
    async def health():
        return {"status": "ok", **scheduler.counts()}

    @v1.get("/models")
    async def models():
        names = [model.name] + ([embedder.name] if embedder is not None else [])
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "leanformers"}
                                           for name in names]}

    @v1.post("/completions")
    async def completions(request: Request):
        return await generate(parse_completion(parse_json(await request.body()), model), chat=False)

    @v1.post("/chat/completions")
    async def chat_completions(request: Request):
        return await generate(parse_chat(parse_json(await request.body()), model), chat=True)

    async def generate(job: GenerationJob, chat: bool):
        submission = Submission(job, model)
        if len(submission.sequences) > scheduler.max_waiting:
            raise ApiError(400, f"the request asks for {len(submission.sequences)} sequences (prompts times n); this "
                           f"server queues at most {scheduler.max_waiting} (--max-queue)", param="n")
        try:
            scheduler.submit(submission.sequences)
        except QueueFull as err:
            raise ApiError(503, f"the server is busy ({err}); retry shortly", kind="server_error",
                           code="queue_full", headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
        builder = ResponseBuilder(model.name, token_bytes, chat)
        choices = [ChoiceState(s.index, echo_text=job.prompt_texts[s.index // job.n] if job.echo else "")
                   for s in submission.sequences]
        wants_logprobs = job.params[0].logprobs is not None
        prompt_tokens = sum(len(prompt) for prompt in job.prompts)
        if job.stream:
            return StreamingResponse(stream(submission, builder, choices, wants_logprobs, prompt_tokens, job),
                                     media_type="text/event-stream")
        try:
            async for update in submission.updates():
                choices[update.index].add(update)
        finally:
            submission.cancel()
        return builder.body(choices, prompt_tokens, wants_logprobs)

    async def stream(submission, builder, choices, wants_logprobs, prompt_tokens, job):
        try:
            if builder.chat:
                for choice in choices:
                    yield sse(builder.role_chunk(choice.index, job.include_usage))
            async for update in submission.updates():
                choice = choices[update.index]
                text, entries = choice.add(update)
                yield sse(builder.update_chunk(choice, text, entries, wants_logprobs, job.include_usage))
            if job.include_usage:
                yield sse(builder.usage_chunk(prompt_tokens, choices))
        except ApiError as err:  # the status line is sent already: the error travels as an event
            yield sse(err.body())
        finally:  # also when the client went away: starlette cancels this generator then
            submission.cancel()
        yield sse("[DONE]")

    @v1.post("/embeddings")
    async def embeddings(request: Request):
        if embedder is None:
            raise ApiError(400, "this server was started without an embedding model", param="model")
        texts, encoding = parse_embeddings(parse_json(await request.body()), embedder.name)
        vectors, tokens = await run_in_threadpool(embedder, texts)
        data = [{"object": "embedding", "index": i,
                 "embedding": vector if encoding == "float" else
                 base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")}
                for i, vector in enumerate(vectors)]  # fmt: skip
        return {"object": "list", "data": data, "model": embedder.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    app.include_router(v1)
    return app
