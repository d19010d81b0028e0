"""Benchmark: `mrm serve` called by OpenRLHF's own reward client, batching off and on.

OpenRLHF's single-turn executor posts ONE sample per request (``query``, ``prompts``,
``labels``) with aiohttp, many at once. This script fetches that client (the released wheel's
``agent.py``, as the tests do: ``python -m tests.openrlhf_client``), trains the tiny text model
of ``bench_use.py``, adapts one user, serves it twice in this process on 127.0.0.1 (with
``--user-field labels``; batching off, then on), and sends ``--requests`` one-sample requests
from ``--concurrency`` concurrent client tasks: requests/s and latency, side by side.

    python experiments/bench_openrlhf_client.py --requests 640 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))


async def hammer(agent, url: str, requests: int, concurrency: int) -> list[float]:
    executor = agent.SingleTurnAgentExecutor(remote_rm_url=[url])
    gate, latencies = asyncio.Semaphore(concurrency), []

    async def one(i: int) -> None:
        async with gate:
            prompt = f"write about one thing {i % 7}"
            started = time.perf_counter()
            (answer,) = await executor._fetch_rewards_via_http(
                [f"{prompt} a cat {i}"], [prompt], ["u3"]
            )
            latencies.append(time.perf_counter() - started)
            assert answer["extra_logs"]["personalized"] == [1.0], answer

    await asyncio.gather(*(one(i) for i in range(requests)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=640)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    from bench_use import text_checkpoint

    from mrm_lightning.use.batching import Batching
    from mrm_lightning.use.inference import PersonalizedRewardModel
    from mrm_lightning.use.server import create_app
    from tests.openrlhf_client import fetch, load_agent
    from tests.use.test_server import call, serving_in_a_thread

    if not fetch():
        raise SystemExit("OpenRLHF's client could not be fetched (offline?)")
    agent = load_agent()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ckpt, pairs = text_checkpoint(folder)
        model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
        lines = [json.loads(line) for line in pairs.read_text().splitlines()]
        store = folder / "profiles.db"
        for name, wait in (("batching off (--batch-wait-ms 0)", 0.0), ("batching on (2 ms)", 2.0)):
            app = create_app(model, store, user_field="labels", batching=Batching(wait_ms=wait))
            with serving_in_a_thread(app) as base:
                user = [r for r in lines if r["user_id"] == "u3"]
                assert call(base, "/adapt", {"user_id": "u3", "pairs": user})[0] == 200
                url = base + "/get_reward"
                asyncio.run(hammer(agent, url, 32, args.concurrency))  # warm-up
                started = time.perf_counter()
                latencies = asyncio.run(hammer(agent, url, args.requests, args.concurrency))
                wall = time.perf_counter() - started
            latencies.sort()
            rows[name] = (
                args.requests / wall,
                latencies[len(latencies) // 2] * 1e3,
                latencies[min(int(len(latencies) * 0.99), len(latencies) - 1)] * 1e3,
            )
    print(f"\n{args.requests} one-sample requests from {args.concurrency} concurrent OpenRLHF "
          "client tasks (its agent.py), tiny text model, one process:")  # fmt: skip
    for name, (rate, p50, p99) in rows.items():
        print(f"  {name:<34} {rate:7.1f} req/s   p50 {p50:7.1f} ms   p99 {p99:7.1f} ms")
    (off, *_), (on, *_) = rows.values()
    print(f"  batching on / off: {on / off:.2f}x requests/s")


if __name__ == "__main__":
    main()
