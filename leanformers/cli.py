"""The `leanformers` command: chat, generate, convert, eval.

    leanformers chat [--model M] [--system TEXT] [--max-new-tokens N] [--temperature T]
    leanformers generate --prompt TEXT [--model M] [--max-new-tokens N] [--temperature T]
    leanformers convert FILE.gguf OUT_DIR
    leanformers eval --data FILE [--model M] [--format text|prompt-completion|messages] [--max-length N]
"""

import argparse
import math
import sys
from pathlib import Path

from .hub import DEFAULT_CHAT_MODEL


def load(model_name: str):
    from .auto import AutoModelForCausalLM
    from .tokenization import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_name)
    model = AutoModelForCausalLM.from_pretrained(model_name)
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
    tokenizer, model = load(args.model)
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
    tokenizer, model = load(args.model)
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


def eval_examples(args, tokenizer) -> list[dict]:
    """The file as model inputs with labels: text cut into blocks, or JSONL examples tokenized by the
    fine-tuning recipes (loss on the completion / the assistant turns only)."""
    from .data import load_dataset
    from .data.sft import chat_dataset, group_texts, prompt_completion_dataset

    path = Path(args.data)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if args.format == "text":
        texts = [text for text in load_dataset("text", data_files=str(path), split="train")["text"] if text.strip()]
        blocks = group_texts({"text": texts}, tokenizer, args.max_length, keep_remainder=True)
        return [dict(zip(blocks, row, strict=True)) for row in zip(*blocks.values(), strict=True)]
    rows = load_dataset("json", data_files=str(path), split="train")
    fields = ("prompt", "completion") if args.format == "prompt-completion" else ("messages",)
    if any(field not in rows.column_names for field in fields):
        raise ValueError(f"{path}: --format {args.format} needs {' and '.join(fields)} in every line; the file has "
                         f"{', '.join(rows.column_names) or 'no fields'}")
    recipe = prompt_completion_dataset if args.format == "prompt-completion" else chat_dataset
    return list(recipe(rows, tokenizer, max_length=args.max_length))


def evaluate(args):
    """Print the mean loss per predicted token and the perplexity of the model over a file."""
    from torch.utils.data import DataLoader

    from .data import DataCollatorForSeq2Seq
    from .training.evaluation import mean_token_loss

    tokenizer, model = load(args.model)
    examples = eval_examples(args, tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked by attention_mask and -100 labels
    batches = DataLoader(examples, batch_size=args.batch_size, collate_fn=DataCollatorForSeq2Seq(tokenizer))
    loss, tokens = mean_token_loss(model, batches)
    print(f"mean loss {loss:.4f}  perplexity {math.exp(loss):.3f}  ({tokens} tokens, {len(examples)} examples)")
    return 0


def add_sampling_arguments(parser):
    parser.add_argument("--model", default=DEFAULT_CHAT_MODEL, help="folder, .gguf file, hub id or bundled name")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7, help="0 for greedy decoding")
    parser.add_argument("--top-p", type=float, default=0.9)


def build_parser():
    parser = argparse.ArgumentParser(prog="leanformers", description="Chat, generate, convert and evaluate with leanformers.")
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
    eval_parser = commands.add_parser("eval", help="mean loss and perplexity of a model over a text or JSONL file")
    eval_parser.add_argument("--model", default=DEFAULT_CHAT_MODEL, help="folder, .gguf file, hub id or bundled name")
    eval_parser.add_argument("--data", required=True, help="a text file, or JSONL of prompt/completion or messages")
    eval_parser.add_argument("--format", choices=["text", "prompt-completion", "messages"], default="text")
    eval_parser.add_argument("--max-length", type=positive_int, default=512, help="tokens per block or example")
    eval_parser.add_argument("--batch-size", type=positive_int, default=4)
    eval_parser.set_defaults(run=evaluate)
    return parser


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv=None):
    args = build_parser().parse_args(argv)
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
