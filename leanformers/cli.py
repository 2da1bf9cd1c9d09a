"""The `leanformers` command: chat, generate, convert, train, eval, pipeline, serve.

    leanformers chat [--model M] [--system TEXT] [--max-new-tokens N] [--temperature T]
    leanformers generate --prompt TEXT [--model M] [--max-new-tokens N] [--temperature T]
    leanformers convert FILE.gguf OUT_DIR
    leanformers train --data FILE [--model M] [--format text|prompt-completion|messages] [--lora] [--epochs N]
                      [--lr LR] [--batch-size N] [--max-length N] [--output-dir DIR] [--eval-file FILE] [--resume]
    leanformers eval --data FILE [--model M] [--format text|prompt-completion|messages] [--max-length N]
    leanformers pipeline TASK [--model M] [--batch-size N] [--top-k K] [--max-new-tokens N] [--temperature T]
                         [--candidate-labels A,B] [--multi-label] [INPUT ... | -]
    leanformers serve [--model M] [--host 127.0.0.1] [--port 8000] [--max-batch 8] [--max-tokens-limit N]
                      [--api-key KEY] [--embedding-model M] [--max-queue N]
"""

import argparse
import importlib.util
import math
import sys
from pathlib import Path

from .hub import DEFAULT_CHAT_MODEL


def load(model_name: str, dequantize: bool = True):
    """The tokenizer and model; a GGUF file's weights stay quantized unless dequantize (other formats are
    loaded as they are)."""
    from .auto import AutoModelForCausalLM
    from .hub import resolve_model_path
    from .tokenization import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_name)
    is_gguf = resolve_model_path(model_name).suffix == ".gguf"
    model = AutoModelForCausalLM.from_pretrained(model_name, dequantize=dequantize or not is_gguf)
    return tokenizer, model


def sampling_kwargs(args) -> dict:
    if args.temperature == 0:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": args.temperature, "top_p": args.top_p}


def stream_reply(model, tokenizer, input_ids, args) -> list[int]:
    """Generate from input_ids, printing text as it is produced and a newline at the end;
    return the new token ids."""
    from .generation import TextStreamer

    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    out = model.generate(input_ids, attention_mask=None, max_new_tokens=args.max_new_tokens,
                         streamer=streamer, **sampling_kwargs(args))
    sys.stdout.flush()
    return out[0, input_ids.shape[1]:].tolist()


def read_messages(interactive: bool):
    """User messages: prompted lines on a terminal, else one message per line of standard input."""
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except EOFError:
            return
        if not interactive and line == "":
            return
        line = line.rstrip("\n")
        if line.strip() in ("/exit", "/quit"):
            return
        if line.strip():
            yield line


def chat(args):
    tokenizer, model = load(args.model, args.dequantize)
    context = model.config.max_position_embeddings
    messages = [{"role": "system", "content": args.system}] if args.system else []
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"Chatting with {args.model}. /exit or Ctrl-D to quit.", file=sys.stderr)
    for text in read_messages(interactive):
        messages.append({"role": "user", "content": text})
        input_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                  return_dict=False)
        if input_ids.shape[1] + args.max_new_tokens > context:
            print(f"[the conversation has {input_ids.shape[1]} tokens and would pass the model's context of "
                  f"{context}; starting a new conversation]", file=sys.stderr)
            messages = messages[:1] if args.system else []
            messages.append({"role": "user", "content": text})
            input_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                      return_dict=False)
        reply_ids = stream_reply(model, tokenizer, input_ids, args)
        messages.append({"role": "assistant", "content": tokenizer.decode(reply_ids, skip_special_tokens=True)})
    return 0


def generate(args):
    tokenizer, model = load(args.model, args.dequantize)
    prompt = args.prompt if args.prompt != "-" else sys.stdin.read()
    if args.chat_template:
        input_ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                  return_tensors="pt", return_dict=False)
    else:
        input_ids = tokenizer(prompt, return_tensors="pt").input_ids
    if not args.chat_template:
        print(prompt, end="", flush=True)
    stream_reply(model, tokenizer, input_ids, args)
    return 0


def convert(args):
    from .models.llama import LlamaForCausalLM
    from .tokenization import AutoTokenizer

    source = Path(args.gguf_file)
    if source.suffix != ".gguf" or not source.is_file():
        raise SystemExit(f"leanformers convert: {source} is not a .gguf file")
    out = Path(args.out_dir)
    model = LlamaForCausalLM.from_pretrained(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")
    return 0


def jsonl_rows(path: Path, fmt: str):
    """The JSONL file's examples, each checked for the fields its format needs; errors name the line."""
    from .data import load_dataset
    from .data.sft import check_messages

    rows = load_dataset("json", data_files=str(path), split="train")
    fields = ("prompt", "completion") if fmt == "prompt-completion" else ("messages",)
    if not any(field in rows.column_names for field in fields):
        raise ValueError(f"{path}: --format {fmt} needs {' and '.join(fields)} in every line; the file has "
                         f"{', '.join(rows.column_names) or 'no fields'}")
    lines = [n for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if text.strip()]
    for line, row in zip(lines, rows, strict=True):
        try:
            if fmt == "messages":
                check_messages(row.get("messages"))
                continue
            for field in ("prompt", "completion"):
                if not isinstance(row.get(field), str):
                    raise ValueError(f"--format prompt-completion needs a string {field!r}, got {row.get(field)!r}")
            if not row["completion"].strip():
                raise ValueError("the completion is empty, so there is nothing to train on or score")
        except ValueError as err:
            raise ValueError(f"{path}, line {line}: {err}") from None
    return rows


def file_examples(path, fmt: str, tokenizer, max_length: int, keep_remainder: bool):
    """A file as model inputs with labels: text cut into blocks (the last, shorter one kept when scoring
    every token), or JSONL examples tokenized by the fine-tuning recipes (loss on the completion / the
    assistant turns only)."""
    from .data import Dataset, load_dataset
    from .data.sft import chat_dataset, group_texts, prompt_completion_dataset

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if fmt == "text":
        texts = [text for text in load_dataset("text", data_files=str(path), split="train")["text"] if text.strip()]
        if not texts:
            raise ValueError(f"{path} holds no text")
        return Dataset.from_dict(group_texts({"text": texts}, tokenizer, max_length, keep_remainder=keep_remainder))
    recipe = prompt_completion_dataset if fmt == "prompt-completion" else chat_dataset
    return recipe(jsonl_rows(path, fmt), tokenizer, max_length=max_length)


def padding_collator(tokenizer):
    """Pads ids and attention masks, labels with -100 (padding is masked by position, so pad == eos is safe)."""
    from .data import DataCollatorForSeq2Seq

    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return DataCollatorForSeq2Seq(tokenizer)


def train(args):
    """Fine-tune (or, with --from-scratch, train) a causal LM on a file; the output folder holds the model
    (LoRA merged in unless --save-adapter) and its tokenizer, loadable in leanformers and transformers."""
    from .auto import AutoConfig, AutoModelForCausalLM
    from .tokenization import AutoTokenizer
    from .training import LoraConfig, Trainer, TrainingArguments, get_peft_model, set_seed

    set_seed(args.seed)  # before the random weights (LoRA's A matrices, --from-scratch) are drawn
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if args.from_scratch:
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.model))
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model)
    if args.lora:
        model = get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.05,
                                                 target_modules=args.lora_targets.split(",")))
    elif args.save_adapter:
        raise ValueError("--save-adapter saves a LoRA adapter: add --lora")
    train_set = file_examples(args.data, args.format, tokenizer, args.max_length, keep_remainder=False)
    eval_set = None
    if args.eval_file:
        eval_set = file_examples(args.eval_file, args.format, tokenizer, args.max_length, keep_remainder=True)
    elif args.format == "text":
        if len(train_set) < 2:
            raise ValueError(f"{args.data} gives {len(train_set)} block of {args.max_length} tokens; need 2 to hold "
                             "one out for validation (more text, a smaller --max-length, or --eval-file)")
        split = train_set.train_test_split(test_size=max(1, len(train_set) // 20), seed=args.seed)
        train_set, eval_set = split["train"], split["test"]
    every = "steps" if args.eval_steps else "epoch"
    training_args = TrainingArguments(
        args.output_dir, num_train_epochs=args.epochs, max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.lr if args.lr is not None else (2e-4 if args.lora else 5e-5),
        warmup_steps=args.warmup_steps, logging_steps=args.logging_steps, seed=args.seed,
        eval_strategy=every if eval_set is not None else "no", eval_steps=args.eval_steps,
        save_strategy="steps" if args.save_steps else "epoch", save_steps=args.save_steps or 500,
        save_total_limit=2, report_to="none")
    trainer = Trainer(model, training_args, train_dataset=train_set, eval_dataset=eval_set,
                      data_collator=padding_collator(tokenizer), processing_class=tokenizer)
    trainer.train(resume_from_checkpoint=True if args.resume else None)
    out = Path(args.output_dir)
    if args.lora and not args.save_adapter:
        model = model.merge_and_unload()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    evals = [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e]
    summary = f"; eval loss {' -> '.join(f'{v:.4f}' for v in evals)}" if evals else ""
    print(f"trained {trainer.state.global_step} steps{summary}; "
          f"{'adapter' if args.save_adapter else 'model'} saved in {out}")
    return 0


def evaluate(args):
    """Print the mean loss per predicted token and the perplexity of the model over a file."""
    from torch.utils.data import DataLoader

    from .training.evaluation import mean_token_loss

    tokenizer, model = load(args.model)
    examples = list(file_examples(args.data, args.format, tokenizer, args.max_length, keep_remainder=True))
    batches = DataLoader(examples, batch_size=args.batch_size, collate_fn=padding_collator(tokenizer))
    loss, tokens = mean_token_loss(model, batches)
    print(f"mean loss {loss:.4f}  perplexity {math.exp(loss):.3f}  ({tokens} tokens, {len(examples)} examples)")
    return 0


# --option -> the pipeline's argument; only the options given are passed, so each task keeps its defaults.
PIPELINE_OPTIONS = ("top_k", "max_new_tokens", "temperature", "candidate_labels", "multi_label")


def pipeline_inputs(args):
    """The inputs: the arguments, or standard input one per line (blank lines skipped), read as they come."""
    if args.inputs and args.inputs != ["-"]:
        return iter(args.inputs)
    return (line.rstrip("\n") for line in sys.stdin if line.strip())


def run_pipeline(args):
    """Print one JSON result per input, each batch's as soon as it is done."""
    import json

    from .pipelines import pipeline

    options = {name: getattr(args, name) for name in PIPELINE_OPTIONS if hasattr(args, name)}
    if options.get("temperature") == 0:
        options.pop("temperature")
        options["do_sample"] = False
    elif "temperature" in options:
        options["do_sample"] = True
    try:
        pipe = pipeline(args.task, model=args.model, batch_size=args.batch_size)
        results = pipe(pipeline_inputs(args), **options)  # checks the options before reading any input
    except (KeyError, TypeError) as err:  # an unknown task, or an option the task does not take
        raise ValueError(err.args[0]) from None
    for result in results:
        print(json.dumps(result, ensure_ascii=False), flush=True)
    return 0


def serve(args):
    """An OpenAI-compatible HTTP server until Ctrl-C or SIGTERM (the `serve` extra brings FastAPI and uvicorn)."""
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(f"leanformers serve needs {' and '.join(missing)}: pip install 'leanformers[serve]'")
    from .serve.server import run_server

    return run_server(args.model, args.host, args.port, args.max_batch, args.max_tokens_limit, args.api_key,
                      args.embedding_model if args.embedding_model != "none" else None, args.max_queue)


def add_sampling_arguments(parser):
    parser.add_argument("--model", default=DEFAULT_CHAT_MODEL, help="folder, .gguf file, hub id or bundled name")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7, help="0 for greedy decoding")
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--dequantize", action="store_true",
                        help="a GGUF model's weights in fp32 (default: kept in the file's quantized blocks)")


def build_parser():
    parser = argparse.ArgumentParser(prog="leanformers", description="Chat, generate, convert, train, evaluate and run "
                                     "pipelines with leanformers.")
    commands = parser.add_subparsers(dest="command", required=True)
    chat_parser = commands.add_parser("chat", help="interactive chat (reads one message per line from a pipe)")
    add_sampling_arguments(chat_parser)
    chat_parser.add_argument("--system", default=None, help="system prompt")
    chat_parser.set_defaults(run=chat)
    gen_parser = commands.add_parser("generate", help="continue one prompt and print the result")
    add_sampling_arguments(gen_parser)
    gen_parser.add_argument("--prompt", required=True, help="the prompt text, or - to read standard input")
    gen_parser.add_argument("--chat-template", action="store_true", help="wrap the prompt as a user chat message")
    gen_parser.set_defaults(run=generate)
    convert_parser = commands.add_parser("convert", help="write a GGUF file as a Hugging Face model folder")
    convert_parser.add_argument("gguf_file")
    convert_parser.add_argument("out_dir")
    convert_parser.set_defaults(run=convert)
    train_parser = commands.add_parser("train", help="fine-tune a causal LM on a text or JSONL file")
    train_parser.add_argument("--model", default=DEFAULT_CHAT_MODEL, help="folder, .gguf file, hub id or bundled name")
    train_parser.add_argument("--data", required=True, help="a text file, or JSONL of prompt/completion or messages")
    train_parser.add_argument("--format", choices=["text", "prompt-completion", "messages"], default="text")
    train_parser.add_argument("--from-scratch", action="store_true", help="random weights from the model's config")
    train_parser.add_argument("--lora", action="store_true", help="train LoRA adapters instead of every weight")
    train_parser.add_argument("--lora-r", type=positive_int, default=8)
    train_parser.add_argument("--lora-alpha", type=positive_int, default=16)
    train_parser.add_argument("--lora-targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                              help="comma-separated names of the linear layers that get adapters")
    train_parser.add_argument("--save-adapter", action="store_true", help="save the LoRA adapter alone, not merged")
    train_parser.add_argument("--epochs", type=float, default=3.0)
    train_parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (overrides --epochs)")
    train_parser.add_argument("--lr", type=float, default=None, help="learning rate (2e-4 with --lora, else 5e-5)")
    train_parser.add_argument("--batch-size", type=positive_int, default=4)
    train_parser.add_argument("--grad-accum", type=positive_int, default=1)
    train_parser.add_argument("--max-length", type=positive_int, default=512, help="tokens per block or example")
    train_parser.add_argument("--warmup-steps", type=float, default=0)
    train_parser.add_argument("--logging-steps", type=positive_int, default=10)
    train_parser.add_argument("--eval-steps", type=positive_int, default=None, help="evaluate every N steps "
                              "(default: every epoch)")
    train_parser.add_argument("--save-steps", type=positive_int, default=None, help="checkpoint every N steps "
                              "(default: every epoch)")
    train_parser.add_argument("--eval-file", default=None, help="held-out file in the same format")
    train_parser.add_argument("--output-dir", default="trained-model")
    train_parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output-dir")
    train_parser.add_argument("--seed", type=int, default=42)
    train_parser.set_defaults(run=train)
    eval_parser = commands.add_parser("eval", help="mean loss and perplexity of a model over a text or JSONL file")
    eval_parser.add_argument("--model", default=DEFAULT_CHAT_MODEL, help="folder, .gguf file, hub id or bundled name")
    eval_parser.add_argument("--data", required=True, help="a text file, or JSONL of prompt/completion or messages")
    eval_parser.add_argument("--format", choices=["text", "prompt-completion", "messages"], default="text")
    eval_parser.add_argument("--max-length", type=positive_int, default=512, help="tokens per block or example")
    eval_parser.add_argument("--batch-size", type=positive_int, default=4)
    eval_parser.set_defaults(run=evaluate)
    pipe_parser = commands.add_parser(
        "pipeline", help="run a pipeline over inputs, one JSON result per line",
        description="Run pipeline(TASK) over each INPUT (or each line of standard input) and print one JSON result "
                    "per line. The task options are passed only when given, so each task keeps its own defaults.")
    pipe_parser.add_argument("task", help="text-classification (sentiment-analysis), text-generation, fill-mask, "
                             "feature-extraction, zero-shot-classification, ...")
    pipe_parser.add_argument("inputs", nargs="*", metavar="INPUT", help="texts; none or - to read standard input")
    pipe_parser.add_argument("--model", default=None, help="folder, .gguf file, hub id or bundled name (default: "
                             "the task's default model)")
    pipe_parser.add_argument("--batch-size", type=positive_int, default=8)
    pipe_parser.add_argument("--top-k", type=positive_int, default=argparse.SUPPRESS,
                             help="labels or tokens per result (text-classification, fill-mask)")
    pipe_parser.add_argument("--max-new-tokens", type=positive_int, default=argparse.SUPPRESS, help="text-generation")
    pipe_parser.add_argument("--temperature", type=float, default=argparse.SUPPRESS,
                             help="text-generation: 0 for greedy decoding, else sampling at this temperature")
    pipe_parser.add_argument("--candidate-labels", default=argparse.SUPPRESS,
                             help="zero-shot-classification: comma-separated labels")
    pipe_parser.add_argument("--multi-label", action="store_true", default=argparse.SUPPRESS,
                             help="zero-shot-classification: score each label on its own")
    pipe_parser.set_defaults(run=run_pipeline)
    serve_parser = commands.add_parser("serve", help="an OpenAI-compatible HTTP server (completions, chat, embeddings)")
    serve_parser.add_argument("--model", default=DEFAULT_CHAT_MODEL, help="folder, .gguf file, hub id or bundled name")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (the ready line names it)")
    serve_parser.add_argument("--max-batch", type=positive_int, default=8, help="sequences decoded together")
    serve_parser.add_argument("--max-tokens-limit", type=positive_int, default=None,
                              help="the most new tokens a request may ask for (default: the model's context)")
    serve_parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1/")
    serve_parser.add_argument("--embedding-model", default="all-minilm-l6-v2",
                              help="the model behind /v1/embeddings, or none")
    serve_parser.add_argument("--max-queue", type=positive_int, default=256,
                              help="sequences that may wait for a row; more are answered 503 with Retry-After")
    serve_parser.set_defaults(run=serve)
    return parser


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv=None):
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # argparse stops filling INPUT ... at the first option after TASK: the inputs after it come back here
        unknown = [arg for arg in extra if arg.startswith("-") and arg != "-"]
        if args.command != "pipeline" or unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
        args.inputs += extra
    if getattr(args, "max_new_tokens", 1) < 1:
        raise SystemExit("leanformers: --max-new-tokens must be at least 1")
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except (OSError, ValueError) as err:
        print(f"leanformers: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
