"""`leanformers serve` in a subprocess on 127.0.0.1 (a free port), driven by the real `openai` client:
completions, chat, streaming, embeddings, echo and logprobs against transformers on the same GGUF file,
n with a seed, greedy results under concurrent load equal to the same requests served alone, a short
request overtaking a long one, a client that goes away, each error case, and a graceful SIGTERM.

One server serves the whole module (it takes ~10 s to start); the requests ask for few tokens."""

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
EMBEDDING_MODEL = "all-minilm-l6-v2"
KEY = "sk-test-key"
MAX_QUEUE = 24


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The server's base URL; the process is stopped with SIGTERM at the end (or by the last test)."""
    log = tmp_path_factory.mktemp("serve") / "stderr.txt"
    # One thread: on a shared 2-core machine an OpenMP team that waits for a busy core is many times slower.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "leanformers.cli", "serve", "--port", "0", "--api-key", KEY,
             "--max-tokens-limit", "512", "--max-queue", str(MAX_QUEUE)],
            stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)  # fmt: skip
    line = process.stdout.readline()
    if "ready at " not in line:
        process.kill()
        pytest.fail(f"the server did not start: {line!r}\n{log.read_text()}")
    url = line.split("ready at ")[1].split()[0]  # http://127.0.0.1:PORT/v1
    yield url, process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0], api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def tokenizer(smollm2_gguf):
    from leanformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_gguf)


def raw_request(server, method, path, body=None, headers=None):
    """(status, headers, parsed JSON) of a plain HTTP request, for what the openai client cannot send."""
    host, port = server[0].split("//")[1].split("/")[0].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), json.loads(response.read())


def health(server):
    return raw_request(server, "GET", "/health")[2]


def test_models_health_and_the_api_key(server, client):
    assert {m.id for m in client.models.list().data} == {MODEL, EMBEDDING_MODEL}
    assert health(server) == {"status": "ok", "running": 0, "waiting": 0}
    wrong = openai.OpenAI(base_url=server[0], api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        wrong.models.list()
    assert err.value.status_code == 401 and err.value.body["code"] == "invalid_api_key"
    status, _, body = raw_request(server, "GET", "/v1/models")
    assert status == 401 and set(body["error"]) == {"message", "type", "param", "code"}


def test_completion_is_transformers_greedy_and_stops_at_a_stop_string(client, tokenizer, smollm2_pair):
    ref, _ = smollm2_pair
    prompt = "The three primary colors are"
    result = client.completions.create(model=MODEL, prompt=prompt, max_tokens=12, temperature=0)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    expected = ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
    expected = expected[0, ids.shape[1] :]
    assert result.choices[0].text == tokenizer.decode(expected, skip_special_tokens=True)
    assert (result.choices[0].finish_reason, result.usage.prompt_tokens, result.usage.completion_tokens) == (
        "length", ids.shape[1], 12)
    stop = result.choices[0].text.split()[2]  # the third word: it spans token boundaries or ends inside one
    stopped = client.completions.create(model=MODEL, prompt=prompt, max_tokens=12, temperature=0, stop=[stop])
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].text == result.choices[0].text[: result.choices[0].text.index(stop)]


def test_echo_logprobs_equal_transformers_log_softmax(client, tokenizer, smollm2_pair):
    ref, _ = smollm2_pair
    prompt = "Paris is the capital of France, and Berlin is the capital of"
    result = client.completions.create(model=MODEL, prompt=prompt, max_tokens=3, temperature=0, echo=True, logprobs=3)
    choice = result.choices[0]
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = torch.log_softmax(ref(ids).logits[0].float(), dim=-1)  # (P, V)
    prompt_length = ids.shape[1]
    lp = choice.logprobs
    assert choice.text.startswith(prompt) and "".join(lp.tokens[:prompt_length]) == prompt
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert len(lp.tokens) == prompt_length + 3 == result.usage.total_tokens
    oracle = expected[:-1].gather(1, ids[0, 1:, None])[:, 0]
    torch.testing.assert_close(torch.tensor(lp.token_logprobs[1:prompt_length]), oracle, atol=1e-4, rtol=0)
    for position in range(1, prompt_length):  # the 3 best alternatives at each prompt position
        best = expected[position - 1].topk(3)
        assert sorted(lp.top_logprobs[position].values(), reverse=True) == pytest.approx(best.values.tolist(), abs=1e-4)
    # the first generated token is greedy: the best of the last prompt position, with its log-probability
    assert lp.token_logprobs[prompt_length] == pytest.approx(float(expected[-1].max()), abs=1e-4)
    assert lp.tokens[prompt_length] == tokenizer.decode([int(expected[-1].argmax())])
    assert lp.text_offset[:3] == [0, len(lp.tokens[0]), len(lp.tokens[0]) + len(lp.tokens[1])]


def chat_messages(question):
    return [{"role": "system", "content": "Answer in one short sentence."}, {"role": "user", "content": question}]


def test_chat_and_streaming_chat_give_the_same_reply_and_exact_usage(client, tokenizer):
    messages = chat_messages("What is the capital of Italy?")
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, temperature=0,
                                           logprobs=True, top_logprobs=2)
    prompt_tokens = len(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False))
    assert reply.usage.prompt_tokens == prompt_tokens
    assert len(reply.choices[0].logprobs.content) == reply.usage.completion_tokens
    assert all(len(entry.top_logprobs) == 2 for entry in reply.choices[0].logprobs.content)
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == reply.choices[0].message.content and "Rome" in streamed
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == reply.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == reply.usage.model_dump()


def test_embeddings_are_normalized_mean_pooled_minilm(client):
    import transformers

    from leanformers.hub import bundled_model_path

    texts = ["A cat sits on the mat.", "Stock markets fell sharply today."]
    as_floats = client.embeddings.create(model=EMBEDDING_MODEL, input=texts, encoding_format="float")
    as_base64 = client.embeddings.create(model=EMBEDDING_MODEL, input=texts)  # the client asks for base64
    folder = bundled_model_path(EMBEDDING_MODEL)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    batch = hf_tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = transformers.AutoModel.from_pretrained(folder)(**batch).last_hidden_state
    mask = batch.attention_mask[..., None].float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    got = torch.tensor([d.embedding for d in as_floats.data])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert torch.equal(torch.tensor(np.array([d.embedding for d in as_base64.data]), dtype=torch.float32), got)
    assert as_floats.usage.prompt_tokens == int(batch.attention_mask.sum())


def test_n_choices_with_a_seed_are_reproducible_and_differ(client):
    def three(seed):
        result = client.completions.create(model=MODEL, prompt="My favourite animal is", max_tokens=8, n=3,
                                           seed=seed, temperature=1.0)
        assert [c.index for c in result.choices] == [0, 1, 2] and result.usage.completion_tokens <= 24
        return [c.text for c in result.choices]

    first = three(seed=11)
    assert three(seed=11) == first and len(set(first)) > 1
    assert three(seed=12) != first


LOAD_PROMPTS = [("Write the numbers from one to ten in words:", 24), ("Hi", 6), ("The history of Rome", 16),
                ("A recipe for pancakes needs flour, eggs and", 10)]
LOAD_QUESTIONS = [("Name three fruits.", 20), ("What is two plus two?", 8), ("Tell me about the moon.", 24),
                  ("Say hello.", 12)]


def ask(client, kind, text, max_tokens, stream):
    """(text, finish_reason, completion tokens) of one greedy request, streamed or not."""
    create = client.completions.create if kind == "prompt" else client.chat.completions.create
    args = {"prompt": text} if kind == "prompt" else {"messages": chat_messages(text)}
    if not stream:
        result = create(model=MODEL, max_tokens=max_tokens, temperature=0, **args)
        choice = result.choices[0]
        return (choice.text if kind == "prompt" else choice.message.content, choice.finish_reason,
                result.usage.completion_tokens)
    chunks = list(create(model=MODEL, max_tokens=max_tokens, temperature=0, stream=True,
                         stream_options={"include_usage": True}, **args))
    pieces = [(c.choices[0].text if kind == "prompt" else c.choices[0].delta.content) or ""
              for c in chunks if c.choices]
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    return "".join(pieces), finish[-1], chunks[-1].usage.completion_tokens


def test_greedy_results_under_load_equal_the_same_requests_served_alone(client):
    requests = [("prompt", p, n) for p, n in LOAD_PROMPTS] + [("chat", q, n) for q, n in LOAD_QUESTIONS]
    alone = [ask(client, kind, text, n, stream=False) for kind, text, n in requests]
    loaded = [(request, stream) for request in requests for stream in (False, True)]  # 16 clients at once
    with ThreadPoolExecutor(len(loaded)) as pool:
        results = list(pool.map(lambda item: ask(client, *item[0], stream=item[1]), loaded))
    for (request, stream), result in zip(loaded, results, strict=True):
        assert result == alone[requests.index(request)], (request, stream)


def test_a_short_request_sent_later_finishes_before_a_long_stream(client):
    events = []
    first_chunks = threading.Event()

    def long_stream():
        stream = client.completions.create(model=MODEL, prompt="1, 2, 3, 4, 5,", max_tokens=64, temperature=0,
                                           stream=True)
        for n, chunk in enumerate(stream):
            if n == 3:
                first_chunks.set()
            if chunk.choices[0].finish_reason:
                events.append(("long", chunk.choices[0].finish_reason))

    reader = threading.Thread(target=long_stream)
    reader.start()
    assert first_chunks.wait(60)
    short = client.completions.create(model=MODEL, prompt="Hello", max_tokens=3, temperature=0)
    events.append(("short", short.choices[0].finish_reason))
    reader.join(120)
    assert events == [("short", "length"), ("long", "length")]


def test_a_client_that_goes_away_frees_its_row(server, client):
    stream = client.completions.create(model=MODEL, prompt="1, 2, 3, 4, 5,", max_tokens=512, temperature=0, stream=True)
    for n, _ in enumerate(stream):
        if n == 2:
            break
    assert health(server)["running"] == 1
    stream.close()
    deadline = time.monotonic() + 5  # the 512 tokens would take longer
    while health(server)["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert health(server) == {"status": "ok", "running": 0, "waiting": 0}


ERROR_CASES = [  # (body changes, the message must contain)
    ({"model": "gpt-4"}, "does not exist"),
    ({"max_tokens": 0}, "'max_tokens' must be at least 1"),
    ({"max_tokens": 513}, "above this server's limit of 512"),
    ({"prompt": "hello " * 8200}, "maximum context length is 8192 tokens"),
    ({"n": 129}, "'n' must be between 1 and 128"),
    ({"n": MAX_QUEUE + 1}, f"queues at most {MAX_QUEUE}"),
    ({"max_tokens": "ten"}, "'max_tokens' must be an integer"),
    ({"temperature": "hot"}, "'temperature' must be a number"),
    ({"stream": 1}, "'stream' must be a boolean"),
    ({"prompt": [1, "two"]}, "'prompt' must be"),
    ({"logit_bias": {"1": 5}}, "'logit_bias' is not supported"),
]


def test_each_error_case_is_answered_in_openai_shape_and_the_server_still_serves(server, client):
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 2}
    for changes, message in ERROR_CASES:
        with pytest.raises(openai.BadRequestError) as err:
            client.completions.create(**{**body, **changes})
        assert err.value.status_code == 400 and message in err.value.body["message"], changes
        assert err.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model=MODEL, messages=[], max_tokens=2)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    status, _, error = raw_request(server, "POST", "/v1/completions", body=b'{"model": "x", "prompt": ',
                                   headers=headers)
    assert status == 400 and "not valid JSON" in error["error"]["message"]
    assert client.completions.create(**body).usage.completion_tokens == 2


def test_a_full_queue_answers_503_with_retry_after(server, client):
    # 24 choices fill the queue; 8 start running, 16 wait until their 64 tokens are done
    filler = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=64, n=MAX_QUEUE, stream=True)
    next(iter(filler))
    with pytest.raises(openai.APIStatusError) as err:
        client.completions.create(model=MODEL, prompt="Hello", max_tokens=2, n=9)
    assert err.value.status_code == 503 and err.value.response.headers["retry-after"] == "1"
    assert err.value.body["type"] == "server_error" and "busy" in err.value.body["message"]
    filler.close()
    deadline = time.monotonic() + 10
    while health(server)["running"] + health(server)["waiting"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.completions.create(model=MODEL, prompt="Hello", max_tokens=2, n=9).usage.completion_tokens == 18


def test_sigterm_stops_the_server_after_the_request_in_flight(server, client):
    """Runs last: it stops the module's server."""
    url, process = server
    stream = client.completions.create(model=MODEL, prompt="1, 2, 3,", max_tokens=40, temperature=0, stream=True)
    chunks = iter(stream)
    next(chunks)
    process.send_signal(signal.SIGTERM)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    assert finish == ["length"]
    process.wait(timeout=30)
    with pytest.raises(openai.APIConnectionError):
        client.models.list()
