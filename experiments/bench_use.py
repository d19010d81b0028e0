"""Benchmark: a trained model in use, on the CPU: adapting users, scoring, serving over HTTP.

Measured in one run (medians over ``--repeats`` after one untimed warm-up):

1. ``adapt``: one user from ``--pairs`` pairs of cached embeddings (``model.adapt`` on two
   ``[P, D]`` tensors): milliseconds per user (the target is under 10 ms).
2. ``adapt_many``: ``--users`` users of ``--pairs`` pairs each in one batched call: users/s.
3. ``score``: ``score_embeddings`` on ``--responses`` cached embeddings: responses/s.
5. ``batching``: ``--clients`` concurrent one-sample clients (OpenRLHF's pattern), with
   batching off (``--batch-wait-ms 0``) and on (2 ms), side by side: requests/s, p50 / p99.
4. ``server``: ``mrm serve`` in a subprocess on 127.0.0.1, ``--requests`` POST /get_reward
   from ``--threads`` client threads (each request ``--batch`` texts for one adapted user),
   a fixed number, so it stops by itself: requests/s and p50 / p99 latency. /get_reward takes
   texts, so this part uses a small TEXT model: the tiny random BERT of tests/tiny_encoder.py
   (16-d, 2 layers), trained for one epoch on the generated pairs of tests/test_use_cli.py.
   It measures the server's own cost (HTTP, JSON, batching, one encode call, scoring), not a
   real encoder's: with all-MiniLM-L6-v2 the encode call dominates (about 5 ms per text on
   two cores, see stack.md).

Parts 1-3 use an embedding-only model: ``--ckpt``, or one trained here in seconds on
configs/tiny.yaml with ``--dim``-dimensional embeddings (the cost does not depend on the
values, only on P, D and K; random embeddings are used).

Run:
    python experiments/bench_use.py --json runs/bench_use.json
    python experiments/bench_use.py --ckpt runs/.../best.ckpt --requests 1000 --threads 8
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", help="an embedding-only checkpoint (default: train a tiny one)")
    p.add_argument("--dim", type=int, default=384, help="embedding size of the trained model")
    p.add_argument("--pairs", type=int, default=50, help="pairs per adapted user")
    p.add_argument("--users", type=int, default=1000, help="users in the adapt_many call")
    p.add_argument("--responses", type=int, default=10000, help="embeddings scored per call")
    p.add_argument("--repeats", type=int, default=20, help="timed repeats of parts 1-3")
    p.add_argument("--requests", type=int, default=300, help="requests sent to the server")
    p.add_argument("--threads", type=int, default=4, help="client threads")
    p.add_argument("--batch", type=int, default=8, help="texts per request")
    p.add_argument("--clients", type=int, default=64, help="one-sample clients (batching part)")
    p.add_argument("--json", type=Path, default=None, help="write every number here")
    return p.parse_args(argv)


def timed(work, repeats: int) -> float:
    """Median seconds of ``work()`` over ``repeats`` runs, after one untimed run."""
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train(args: list[str], folder: Path) -> Path:
    from mrm_lightning.training.lightning_cli import cli_main

    # the arguments go in explicitly; LightningCLI's note about sys.argv is moot here
    warnings.filterwarnings("ignore", message=".*args parameter is intended to run.*")
    cli = cli_main(["fit", *args, "--trainer.logger.init_args.save_dir", str(folder / "runs")])
    return Path(cli.trainer.checkpoint_callback.best_model_path)


def embedding_model(args: argparse.Namespace, folder: Path):
    from mrm_lightning.use.inference import PersonalizedRewardModel

    ckpt = args.ckpt or train(
        ["--config", str(REPO / "configs/tiny.yaml"), "--trainer.max_epochs", "1",
         "--trainer.callbacks", "[]", "--data.source.init_args.embedding_dim", str(args.dim),
         "--model.warm_start", "false"],
        folder,
    )  # fmt: skip
    return PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")


def bench_embeddings(model, args: argparse.Namespace) -> dict:
    dim = int(model.model.hparams.embedding_dim)
    gen = torch.Generator().manual_seed(0)
    one = {"chosen": torch.randn(args.pairs, dim, generator=gen),
           "rejected": torch.randn(args.pairs, dim, generator=gen)}  # fmt: skip
    many = {f"u{i}": {"chosen": torch.randn(args.pairs, dim, generator=gen),
                      "rejected": torch.randn(args.pairs, dim, generator=gen)}
            for i in range(args.users)}  # fmt: skip
    responses = torch.randn(args.responses, dim, generator=gen)
    profile = model.adapt(one)
    adapt_s = timed(lambda: model.adapt(one), args.repeats)
    many_s = timed(lambda: model.adapt_many(many), max(args.repeats // 5, 1))
    score_s = timed(lambda: model.score_embeddings(responses, profile), args.repeats)
    return {
        "dim": dim,
        "num_base_rewards": len(model.prior()),
        "inner": model.inner_settings(),
        "adapt_ms": adapt_s * 1e3,
        "adapt_many_users_per_s": args.users / many_s,
        "adapt_many_s": many_s,
        "score_responses_per_s": args.responses / score_s,
    }


def post(base: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data, {"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, no proxy
    with opener.open(request, timeout=60) as answer:
        return json.loads(answer.read())


def text_checkpoint(folder: Path) -> tuple[Path, Path]:
    """A tiny text model trained here, and its pairs file."""
    sys.path.insert(0, str(REPO))
    from tests.cli.test_use_cli import FIXTURES, write_pairs
    from tests.tiny_encoder import build_tiny_bert

    bert = build_tiny_bert(folder / "bert")
    pairs = write_pairs(folder / "pairs.jsonl")
    ckpt = train(
        ["--config", str(FIXTURES / "text.yaml"), "--data.source.init_args.paths", f"[{pairs}]",
         "--data.source.init_args.encoder.init_args.model", str(bert),
         "--data.source.init_args.cache_dir", str(folder / "cache")],
        folder,
    )  # fmt: skip
    return ckpt, pairs


def bench_server(
    args: argparse.Namespace,
    folder: Path,
    text_model: tuple[Path, Path],
    serve_args: tuple[str, ...] = (),
    texts_per_request: int | None = None,
) -> dict:
    """``args.requests`` POST /get_reward from ``args.threads`` clients to ``mrm serve
    *serve_args``: requests/s and latency."""
    sys.path.insert(0, str(REPO))
    from tests.use.test_server import free_port, wait_healthy

    ckpt, pairs = text_model
    size = args.batch if texts_per_request is None else texts_per_request
    port = free_port()
    base = f"http://{HOST}:{port}"
    log_path = folder / "serve.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mrm_lightning", "serve", "--ckpt", str(ckpt),
             "--store", str(folder / "profiles.db"), "--host", HOST, "--port", str(port),
             "--device", "cpu", "--log-level", "warning", *serve_args],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_healthy(server, base, log_path)
            rows = [json.loads(line) for line in pairs.read_text().splitlines()]
            post(
                base,
                "/adapt",
                {"user_id": "u3", "pairs": [r for r in rows if r["user_id"] == "u3"]},
            )
            prompts = [f"write about one thing {i}" for i in range(size)]
            body = {"query": [f"{p} a cat {i}" for i, p in enumerate(prompts)],
                    "prompts": prompts, "user_id": "u3"}  # fmt: skip
            for _ in range(5):  # warm-up
                post(base, "/get_reward", body)
            latencies: list[float] = []
            per_thread = [args.requests // args.threads] * args.threads
            per_thread[0] += args.requests - sum(per_thread)

            def client(count: int) -> None:
                for _ in range(count):
                    start = time.perf_counter()
                    post(base, "/get_reward", body)
                    latencies.append(time.perf_counter() - start)  # list.append: thread-safe

            threads = [threading.Thread(target=client, args=(n,)) for n in per_thread]
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - start
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
    latencies.sort()
    return {
        "model": "tiny random BERT (16-d, 2 layers), text run of tests/fixtures/use/text.yaml",
        "requests": len(latencies),
        "threads": args.threads,
        "texts_per_request": size,
        "serve_args": list(serve_args),
        "requests_per_s": len(latencies) / wall,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[min(int(len(latencies) * 0.99), len(latencies) - 1)] * 1e3,
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results = {
            "machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads()},
            "embeddings": bench_embeddings(embedding_model(args, folder), args),
        }
        text_model = text_checkpoint(folder)
        results["server"] = bench_server(args, folder, text_model)
        # OpenRLHF's pattern: many concurrent one-sample requests, batching off and on
        for name, wait in (("one_sample_unbatched", "0"), ("one_sample_batched", "2")):
            results[name] = bench_server(
                argparse.Namespace(**{**vars(args), "threads": args.clients}),
                folder,
                text_model,
                serve_args=("--batch-wait-ms", wait),
                texts_per_request=1,
            )
    e, s = results["embeddings"], results["server"]
    rows = [
        (f"adapt one user, {args.pairs} pairs (D={e['dim']}, K={e['num_base_rewards']})",
         f"{e['adapt_ms']:.2f} ms"),
        (f"adapt_many, {args.users} users x {args.pairs} pairs",
         f"{e['adapt_many_users_per_s']:,.0f} users/s ({e['adapt_many_s']:.3f} s)"),
        (f"score_embeddings, {args.responses} responses", f"{e['score_responses_per_s']:,.0f} /s"),
        (f"server /get_reward, {s['requests']} x {s['texts_per_request']} texts, "
         f"{s['threads']} threads", f"{s['requests_per_s']:.1f} req/s"),
        ("server latency p50 / p99", f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f} ms"),
    ]  # fmt: skip
    off, on = results["one_sample_unbatched"], results["one_sample_batched"]

    def served(r: dict) -> str:
        latency = f"p50 / p99 {r['p50_ms']:.0f} / {r['p99_ms']:.0f} ms"
        return f"{r['requests_per_s']:.1f} req/s, {latency}"

    rows += [
        (f"{args.clients} clients x 1 text, batching off (--batch-wait-ms 0)", served(off)),
        (f"{args.clients} clients x 1 text, batching on (--batch-wait-ms 2)", served(on)),
        ("batching on / off, requests/s", f"{on['requests_per_s'] / off['requests_per_s']:.2f}x"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"\n{'measure':<{width}}  value\n{'-' * width}  {'-' * 30}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"(torch threads: {torch.get_num_threads()}; server model: {s['model']})")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
