"""Tokenizer speed: leanformers vs transformers' fast tokenizer on SmolLM2 (GGUF, byte-level BPE) and
all-MiniLM-L6-v2 (WordPiece), in one process.

    .venv/bin/python benchmarks/tokenizer_speed.py [--mb 5] [--batch 1000] [--max-length 512] [--calls 20000]

1. Batch encoding: the same corpus (stdlib sources plus synthetic numbers / Chinese / emoji lines, cut
   into ~500-character documents) in batches of --batch texts, with padding=True, truncation=True and
   max_length, through both libraries; one pass each (taking turns batch by batch), MB/s and the ratio
   ours / transformers (above 1 means ours is faster).
2. Per-call overhead: one short string per call, --calls calls, µs per call and the ratio
   transformers / ours (above 1 means ours is faster).
The outputs of both libraries are checked to be identical before anything is timed.
"""

import argparse
import random
import sys
import sysconfig
import time
from pathlib import Path


def build_corpus(megabytes: float) -> list[str]:
    """About `megabytes` MB of UTF-8 text in ~500-character documents: code, prose, digits, Chinese, emoji."""
    rng = random.Random(0)
    target = int(megabytes * 1_000_000)
    sources = [p.read_text(encoding="utf-8", errors="replace")
               for p in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))]
    chinese = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方"
    emoji = ["😀", "🚀", "👍🏽", "🇫🇷", "👨‍👩‍👧", "🔥", "✨"]
    docs, size, i = [], 0, 0
    while size < target:
        source = sources[i % len(sources)]
        start = rng.randrange(max(len(source) - 500, 1))
        doc = source[start: start + 400]
        doc += " " + "".join(rng.choice(chinese) for _ in range(20)) + " " + " ".join(
            f"{rng.choice(emoji)}{rng.randint(0, 10**6)}" for _ in range(6)) + "    \t\n"
        docs.append(doc)
        size += len(doc.encode("utf-8"))
        i += 1
    return docs


def time_batches(tokenizers, docs, batch, max_length) -> list[float]:
    """Seconds each tokenizer spends on the whole corpus. The libraries take turns batch by batch, so a
    busy neighbour on the shared cores slows both alike instead of whichever happened to run then."""
    spent = [0.0] * len(tokenizers)
    for at in range(0, len(docs), batch):
        for i, tokenizer in enumerate(tokenizers):
            start = time.perf_counter()
            tokenizer(docs[at: at + batch], padding=True, truncation=True, max_length=max_length)
            spent[i] += time.perf_counter() - start
    return spent


def time_calls(tokenizer, text, calls) -> float:
    for _ in range(200):  # warm up
        tokenizer(text)
    start = time.perf_counter()
    for _ in range(calls):
        tokenizer(text)
    return (time.perf_counter() - start) / calls * 1e6


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args(argv)

    import transformers

    import leanformers
    from leanformers.hub import resolve_model_path

    transformers.logging.set_verbosity_error()
    docs = build_corpus(args.mb)
    megabytes = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    print(f"corpus: {len(docs)} documents, {megabytes:.2f} MB; batches of {args.batch}, padding=True, "
          f"truncation=True, max_length={args.max_length}")

    for name in ("smollm2-135m-instruct", "all-minilm-l6-v2"):
        path = resolve_model_path(name)
        ours = leanformers.AutoTokenizer.from_pretrained(name)
        if path.suffix == ".gguf":
            theirs = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            # transformers' GGUF conversion drops SmolLM2's digit splitting; give it the same pipeline
            theirs.backend_tokenizer.pre_tokenizer = ours.backend_tokenizer.pre_tokenizer
        else:
            theirs = transformers.AutoTokenizer.from_pretrained(str(path))
        if theirs.pad_token is None:
            theirs.pad_token = ours.pad_token
        sample = docs[: args.batch]
        kwargs = dict(padding=True, truncation=True, max_length=args.max_length)
        if dict(ours(sample, **kwargs)) != dict(theirs(sample, **kwargs)):
            sys.exit(f"{name}: the two libraries disagree on the first batch; timings would mean nothing")

        ours_s, theirs_s = time_batches([ours, theirs], docs, args.batch, args.max_length)
        print(f"\n{name}")
        print(f"  batch encode   leanformers {megabytes / ours_s:7.2f} MB/s   transformers {megabytes / theirs_s:7.2f} MB/s"
              f"   ratio ours/transformers {theirs_s / ours_s:.2f}x")
        short = "Hello world, how are you today?"
        ours_us = time_calls(ours, short, args.calls)
        theirs_us = time_calls(theirs, short, args.calls)
        print(f"  single short   leanformers {ours_us:7.1f} µs/call  transformers {theirs_us:7.1f} µs/call"
              f"  ratio transformers/ours {theirs_us / ours_us:.2f}x")


if __name__ == "__main__":
    main()
