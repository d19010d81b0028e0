"""Benchmark: the embedding pipeline against the encoder's raw forward pass, in one run.

    python experiments/bench_encoding.py ../shared/data/tldr --pairs 300
    python experiments/bench_encoding.py ../shared/data/tldr --pairs 1771 --device cuda

On the same distinct texts of real TL;DR comparisons it times, interleaved (so machine noise
hits all alike):
- raw: the model's forward pass alone, on batches tokenized beforehand (length-sorted);
- pipeline: what a run does, `TextPreferences.embeddings` into an empty cache (render,
  tokenize, length-sort, forward, pool, normalise, restore order, write the Arrow cache);
- every text: the same encoder on the 2 x pairs texts the pairs reference, without
  deduplication (what encoding per pair, as the reference code does, would cost).
It prints texts/s for each, pipeline / raw (the pipeline's overhead; target >= 0.8) and the
saving from encoding each distinct text once.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from mrm_lightning import RedditTLDR, TextEncoder
from mrm_lightning.data.sources.text import index_texts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="a folder of TL;DR JSON-lines files, or one file")
    parser.add_argument("--pairs", type=int, default=300, help="first N comparisons used")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    data = Path(args.data)
    files = sorted(str(p) for p in data.glob("*.jsonl")) if data.is_dir() else [str(data)]
    encoder = TextEncoder(
        batch_size=args.batch_size, max_length=args.max_length, device=args.device, dtype=args.dtype
    )
    source = RedditTLDR(files, encoder=encoder, progress=False)
    records = source.records()[: args.pairs]
    distinct, _, _ = index_texts(records)
    every_text = [(r.history, r.prompt, text) for r in records for text in (r.chosen, r.rejected)]
    encoder.load()
    order = encoder.length_order(distinct)
    batches = [
        encoder.tokenize([distinct[i] for i in order[s : s + encoder.batch_size]])[0]
        for s in range(0, len(order), encoder.batch_size)
    ]
    device = next(encoder._model.parameters()).device

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    @torch.no_grad()
    def raw() -> None:
        for batch in batches:
            encoder._model(**{k: v.to(device) for k, v in batch.items()})
        sync()

    def pipeline() -> None:
        with tempfile.TemporaryDirectory() as cache:
            source.cache.root = Path(cache)
            source.embeddings(distinct)
        sync()

    def without_dedup() -> None:
        encoder.encode(every_text, progress=False)
        sync()

    raw()  # warm-up: first-call allocations and kernel selection
    times: dict[str, list[float]] = {"raw forward": [], "pipeline": [], "every text": []}
    for _ in range(args.repeats):
        for name, run in (
            ("raw forward", raw),
            ("pipeline", pipeline),
            ("every text", without_dedup),
        ):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    seconds = {name: statistics.median(values) for name, values in times.items()}
    counts = {
        "raw forward": len(distinct),
        "pipeline": len(distinct),
        "every text": len(every_text),
    }
    print(
        f"\n{len(records)} comparisons -> {len(every_text)} texts referenced, "
        f"{len(distinct)} distinct; device={device}, batch={encoder.batch_size}, "
        f"max_length={encoder.max_length}, threads={torch.get_num_threads()}"
    )
    print(f"{'':<14}{'median s':>10}{'texts':>8}{'texts/s':>10}")
    for name in times:
        print(
            f"{name:<14}{seconds[name]:>10.2f}{counts[name]:>8}"
            f"{counts[name] / seconds[name]:>10.1f}"
        )
    ratio = (len(distinct) / seconds["pipeline"]) / (len(distinct) / seconds["raw forward"])
    print(f"pipeline / raw forward throughput: {ratio:.2f} (target >= 0.8)")
    print(
        f"encoding each distinct text once: {seconds['every text'] / seconds['pipeline']:.2f}x "
        f"faster than encoding every referenced text ({len(every_text) / len(distinct):.2f}x "
        "fewer texts)"
    )


if __name__ == "__main__":
    main()
