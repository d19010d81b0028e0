"""Benchmark: the batched MAML inner loop against a per-user loop, side by side in one run.

Both engines run the same full meta-step on the same random meta-batch: base rewards phi of
the support and query pairs, inner-loop adaptation of w0 (``maml.adapt`` over all users at once,
or ``maml.adapt_per_user``, one user at a time on their unpadded pairs), query Bradley-Terry
losses, mean, backward. Users have varied numbers of real pairs (the rest is padding). The
script first checks that both engines give the same meta-gradients, then times them
interleaved (batched, per-user, batched, ...) so machine noise hits both alike, and prints the
median milliseconds per meta-step and the speed-up.

Run:  python experiments/bench_maml.py            (add --device cuda on a GPU; --help for sizes)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from mrm_lightning.method.heads import BaseRewardFunctions
from mrm_lightning.method.losses import bradley_terry_loss
from mrm_lightning.method.maml import adapt, adapt_per_user, pair_margins


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=32, help="users per meta-batch (B)")
    p.add_argument("--support", type=int, default=16, help="max support pairs per user (S)")
    p.add_argument("--query", type=int, default=16, help="max query pairs per user (Q)")
    p.add_argument("--dim", type=int, default=384, help="embedding size (D)")
    p.add_argument("--k", type=int, default=8, help="number of base reward functions (K)")
    p.add_argument("--steps", type=int, default=3, help="inner steps")
    p.add_argument("--lr", type=float, default=0.1, help="inner learning rate")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd", help="inner optimizer")
    p.add_argument("--combination", choices=["softmax", "linear"], default="softmax")
    p.add_argument("--first-order", action="store_true", help="first-order MAML (FOMAML)")
    p.add_argument("--repeats", type=int, default=20, help="timed meta-steps per engine")
    p.add_argument("--warmup", type=int, default=3, help="untimed meta-steps per engine first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    return p.parse_args(argv)


def varied_mask(users: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """``[B, size]`` bool: user b has between size//2 and size real pairs, then padding."""
    counts = torch.randint(max(size // 2, 1), size + 1, (users, 1), generator=gen)
    return torch.arange(size).unsqueeze(0) < counts


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)  # the base functions' initialisation

    def embeddings(pairs: int) -> torch.Tensor:
        return torch.randn(args.users, pairs, args.dim, generator=gen).to(device)

    sup_c, sup_r, qry_c, qry_r = (
        embeddings(n) for n in (args.support, args.support, args.query, args.query)
    )
    sup_mask = varied_mask(args.users, args.support, gen).to(device)
    qry_mask = varied_mask(args.users, args.query, gen).to(device)
    base = BaseRewardFunctions(args.dim, args.k).to(device)
    w0 = nn.Parameter(torch.zeros(args.k, device=device))
    named = {"w0": w0, **{f"base.{n}": p for n, p in base.named_parameters()}}
    params = list(named.values())
    inner = dict(
        steps=args.steps,
        lr=args.lr,
        optimizer=args.optimizer,
        first_order=args.first_order,
        combination=args.combination,
    )

    def meta_step(engine, keep_grads: bool = False) -> list[torch.Tensor] | None:
        weights = engine(w0, base(sup_c), base(sup_r), sup_mask, **inner)
        margins = pair_margins(weights, base(qry_c), base(qry_r), args.combination)
        bradley_terry_loss(margins, qry_mask).mean().backward()
        grads = [p.grad.detach().clone() for p in params] if keep_grads else None
        for p in params:
            p.grad = None
        return grads

    engines = {"batched": adapt, "per-user": adapt_per_user}
    batched_grads, loop_grads = (meta_step(e, keep_grads=True) for e in engines.values())
    for name, got, want in zip(named, loop_grads, batched_grads, strict=True):
        torch.testing.assert_close(
            got, want, rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"grad of {name}: {m}"
        )
    print(f"meta-gradients match ({', '.join(named)}; rtol=1e-4, atol=1e-6)")

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times: dict[str, list[float]] = {name: [] for name in engines}
    for i in range(args.warmup + args.repeats):
        for name, engine in engines.items():  # interleaved: noise hits both engines alike
            sync()
            start = time.perf_counter()
            meta_step(engine)
            sync()
            if i >= args.warmup:
                times[name].append((time.perf_counter() - start) * 1e3)

    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"\n{'engine':<12}median ms/meta-step")
    for name, ms in medians.items():
        print(f"{name:<12}{ms:.2f}")
    print(f"speed-up (per-user / batched): {medians['per-user'] / medians['batched']:.1f}x")
    print(
        f"\nsettings: users={args.users} support<={args.support} query<={args.query} "
        f"dim={args.dim} K={args.k} steps={args.steps} lr={args.lr} optimizer={args.optimizer} "
        f"combination={args.combination} first_order={args.first_order} "
        f"repeats={args.repeats} warmup={args.warmup} seed={args.seed} device={device} "
        f"torch={torch.__version__} threads={torch.get_num_threads()}"
    )


if __name__ == "__main__":
    main()
