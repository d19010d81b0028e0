"""Load and fault test: two `mrm serve` replicas on one PostgreSQL store.

What it does, all on 127.0.0.1:
1. trains the tiny text model of ``bench_use.py`` and starts a throw-away PostgreSQL server
   (``tests/postgres_server.py``; Debian's ``postgresql`` must be installed: ``python -m
   tests.postgres_server``);
2. starts two ``mrm serve --store postgresql://...`` replicas (subprocesses) and adapts the 12
   users of the generated pairs file through the first;
3. **load**: ``--clients`` client threads for ``--seconds``, each request to a random replica:
   ``/get_reward`` (one sample, the user in ``labels``, OpenRLHF's pattern) or, with
   probability ``--feedback-share``, ``/feedback`` of one new pair for a random user with an
   idempotency key. Requests/s, p50/p99 per endpoint, and the count of 5xx answers;
4. **check**: for every user, the pairs in the store are exactly the pairs acknowledged to
   the clients (200 answers), and the stored profile equals ``model.adapt`` of those pairs;
5. **fault**: the same load again; once a ``/feedback`` is in flight to the first replica it
   is killed with SIGKILL. A client whose request found it dead retries on the other replica
   with the same idempotency key (as OpenRLHF's client retries), then the check of step 4.

    python experiments/bench_replicas.py --seconds 30 --clients 16 --json runs/replicas.json
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "experiments"))

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
PAIR_NUMBERS = itertools.count(1)  # every /feedback pair is new, in every phase


def post(base: str, path: str, body: dict, timeout: float = 60) -> tuple[int, dict]:
    """(status, answer); OSError or HTTPException when the server is unreachable or dies."""
    request = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with DIRECT.open(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * share), len(ordered) - 1)] if ordered else float("nan")


class Load:
    """The client threads of one phase and what they saw."""

    def __init__(self, replicas: list[str], users: list[str], args: argparse.Namespace) -> None:
        self.replicas, self.users, self.args = list(replicas), users, args
        self.alive = list(replicas)
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.status_counts: dict[str, int] = defaultdict(int)
        self.acknowledged: dict[str, list[dict]] = defaultdict(list)
        self.writes_in_flight: dict[str, int] = defaultdict(int)
        self.retried = self.retried_repeated = self.unanswered = 0
        self.stop = threading.Event()

    def new_pair(self, user: str) -> dict:
        with self.lock:
            n = next(PAIR_NUMBERS)
        likes, other = ("cat", "rain") if int(user[1:]) % 2 else ("rain", "cat")
        return {"prompt": f"tell me about thing {n}", "chosen": f"a {likes} story {n}",
                "rejected": f"the {other} story {n}"}  # fmt: skip

    def send(self, path: str, body: dict, rng: random.Random) -> tuple[int, dict] | None:
        """Send to a live replica; on a dead one, the same body to another (a client retry)."""
        tried: set[str] = set()
        while True:
            with self.lock:
                choices = [r for r in self.alive if r not in tried]
            if not choices:
                with self.lock:
                    self.unanswered += 1
                return None
            base = rng.choice(choices)
            write = path == "/feedback"
            with self.lock:
                self.writes_in_flight[base] += write
            started = time.perf_counter()
            try:
                status, answer = post(base, path, body)
            except (OSError, http.client.HTTPException):  # it died mid-answer
                tried.add(base)
                with self.lock:
                    self.retried += 1
                continue
            finally:
                with self.lock:
                    self.writes_in_flight[base] -= write
            with self.lock:
                self.latencies[path].append(time.perf_counter() - started)
                self.status_counts[f"{path} {status}"] += 1
                if tried and write and answer.get("repeated"):
                    self.retried_repeated += 1  # the dead replica had committed it
            return status, answer

    def client(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            user = rng.choice(self.users)
            if rng.random() < self.args.feedback_share:
                pair = self.new_pair(user)
                body = {"user_id": user, "pairs": [pair], "idempotency_key": uuid.uuid4().hex}
                result = self.send("/feedback", body, rng)
                if result is not None and result[0] == 200 and not result[1]["dropped"]:
                    with self.lock:
                        self.acknowledged[user].append(pair)
            else:
                n = rng.randrange(1000)
                prompt = f"write about one thing {n % 16}"
                body = {"query": [f"{prompt} a cat {n}"], "prompts": [prompt], "labels": [user]}
                result = self.send("/get_reward", body, rng)
                if result is not None and result[0] == 200:
                    assert result[1]["extra_logs"]["personalized"] == [1.0], result[1]

    def run(self, seconds: float, during=None) -> dict:
        threads = [threading.Thread(target=self.client, args=(seed,), daemon=True)
                   for seed in range(self.args.clients)]  # fmt: skip
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        if during is not None:
            during(self)
        time.sleep(max(0.0, seconds - (time.perf_counter() - started)))
        self.stop.set()
        for thread in threads:
            thread.join(timeout=120)
        wall = time.perf_counter() - started
        answered = sum(len(v) for v in self.latencies.values())
        return {
            "seconds": wall,
            "requests": answered,
            "requests_per_s": answered / wall,
            "per_endpoint": {
                path: {
                    "requests": len(v),
                    "p50_ms": percentile(v, 0.5) * 1e3,
                    "p99_ms": percentile(v, 0.99) * 1e3,
                }  # fmt: skip
                for path, v in self.latencies.items()
            },
            "statuses": dict(self.status_counts),
            "server_errors_5xx": sum(
                n for key, n in self.status_counts.items() if key.split()[-1].startswith("5")
            ),
            "retried_on_another_replica": self.retried,
            "retries_the_dead_replica_had_committed": self.retried_repeated,
            "unanswered": self.unanswered,
        }


def check_store(model, url: str, acknowledged: dict[str, list[dict]]) -> dict:
    """Every user's stored pairs are exactly the acknowledged ones, and the stored profile is
    the adaptation to them."""
    from mrm_lightning.use.request_bodies import pair_key
    from mrm_lightning.use.store import ProfileStore

    store = ProfileStore(url, checkpoint=model.digest)
    mismatched, largest_gap, pairs_checked = [], 0.0, 0
    try:
        for user, pairs in sorted(acknowledged.items()):
            stored = store.judgements(user)
            expected = [{**pair, "history": pair.get("history", [])} for pair in pairs]
            if sorted(map(pair_key, stored)) != sorted(map(pair_key, expected)):
                mismatched.append(user)
                continue
            profile = store.get(user)
            readapted = model.adapt(stored)
            gap = max(abs(a - b) for a, b in zip(profile.weights, readapted.weights, strict=True))
            largest_gap = max(largest_gap, gap)
            pairs_checked += len(stored)
            if profile.num_pairs != len(expected):
                mismatched.append(user)
    finally:
        store.close()
    return {
        "users": len(acknowledged),
        "pairs": pairs_checked,
        "users_whose_store_differs": mismatched,
        "largest_weight_gap_to_readaptation": largest_gap,
    }


def start_replica(ckpt: Path, url: str, log) -> tuple[subprocess.Popen, str]:
    from tests.use.test_server import HOST, free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mrm_lightning", "serve", "--ckpt", str(ckpt), "--store", url,
         "--host", HOST, "--port", str(port), "--device", "cpu", "--log-level", "warning",
         "--user-field", "labels"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    return process, f"http://{HOST}:{port}"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--fault-seconds", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--feedback-share", type=float, default=0.25)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    from bench_use import text_checkpoint

    from mrm_lightning.use.inference import PersonalizedRewardModel
    from tests.postgres_server import PostgresServer, install
    from tests.use.test_server import wait_healthy

    if not install():
        raise SystemExit("PostgreSQL is not installed: python -m tests.postgres_server")
    results: dict = {"clients": args.clients, "feedback_share": args.feedback_share}
    with tempfile.TemporaryDirectory() as tmp, PostgresServer() as postgres:
        folder = Path(tmp)
        ckpt, pairs_file = text_checkpoint(folder)
        model = PersonalizedRewardModel.from_checkpoint(ckpt, device="cpu")
        url = postgres.create_database("bench")
        log_path = folder / "serve.log"
        with log_path.open("w") as log:
            replicas = [start_replica(ckpt, url, log) for _ in range(2)]
            try:
                for process, base in replicas:
                    wait_healthy(process, base, log_path, seconds=120)
                bases = [base for _, base in replicas]
                rows = [json.loads(line) for line in pairs_file.read_text().splitlines()]
                by_user: dict[str, list[dict]] = defaultdict(list)
                for row in rows:
                    by_user[row["user_id"]].append(
                        {k: row[k] for k in ("prompt", "chosen", "rejected")}
                    )
                for user, pairs in by_user.items():
                    status, answer = post(bases[0], "/adapt", {"user_id": user, "pairs": pairs})
                    assert status == 200, answer
                users = sorted(by_user)
                for base in bases:  # warm-up: the first requests load lazily built parts
                    for user in users:
                        body = {"query": ["a"], "prompts": [""], "labels": [user]}
                        assert post(base, "/get_reward", body)[0] == 200

                load = Load(bases, users, args)
                load.acknowledged.update({u: list(p) for u, p in by_user.items()})
                results["load"] = load.run(args.seconds)
                results["load_check"] = check_store(model, url, load.acknowledged)
                print(json.dumps({"load": results["load"], "check": results["load_check"]}))

                victim_process, victim = replicas[0]

                def kill_mid_write(running: Load) -> None:
                    time.sleep(min(3.0, args.fault_seconds / 3))
                    deadline = time.monotonic() + args.fault_seconds / 2
                    while time.monotonic() < deadline:  # until a write is on its way to it
                        with running.lock:
                            in_flight = running.writes_in_flight[victim]
                        if in_flight:
                            break
                        time.sleep(0.001)
                    victim_process.send_signal(signal.SIGKILL)
                    with running.lock:
                        running.alive.remove(victim)
                    results["writes_in_flight_at_kill"] = in_flight

                fault = Load(bases, users, args)
                fault.acknowledged = load.acknowledged  # the same users, their pairs so far
                results["fault"] = fault.run(args.fault_seconds, during=kill_mid_write)
                victim_process.wait(timeout=30)
                results["victim_exit_code"] = victim_process.returncode
                results["fault_check"] = check_store(model, url, fault.acknowledged)
            finally:
                for process, _ in replicas:
                    if process.poll() is None:
                        process.terminate()
                        process.wait(timeout=30)
    print(json.dumps({k: results[k] for k in results if k.startswith("fault") or "kill" in k}))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
