"""``mrm serve``: a trained checkpoint over HTTP (:mod:`mrm_lightning.use.server`).

mrm serve --ckpt best.ckpt --store profiles.db --port 5000 [--host 127.0.0.1]
          [--unknown-user prior|error] [--user-field user_id|labels]
          [--api-key KEY | MRM_API_KEY] [--read-key KEY | MRM_READ_KEY] [--read-only]
          [--policy-tokenizer PATH]
"""

from __future__ import annotations

import argparse
import os

from ..use.access import API_KEY_ENV, READ_KEY_ENV, AccessRules
from ..use.limits import RequestLimits
from ..use.policy_template import load_policy_template
from .errors import ArgumentParser


def parser() -> argparse.ArgumentParser:
    serve = ArgumentParser(
        prog="mrm serve",
        description="Serve a trained checkpoint over HTTP: POST /get_reward (OpenRLHF's remote "
        "reward model convention, plus user_id or user_ids), POST /adapt, GET /health.",
    )
    serve.add_argument("--ckpt", required=True, help="the trained checkpoint (.ckpt)")
    serve.add_argument(
        "--store",
        required=True,
        help="the profile store: an SQLite file (created if absent) or postgresql://USER@HOST/DB "
        "(shared by replicas; password in PGPASSWORD or ~/.pgpass)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=5000, help="port to listen on")
    serve.add_argument(
        "--unknown-user",
        choices=["prior", "error"],
        default="prior",
        help="a user with no profile: score with the model's prior, or answer 404",
    )
    serve.add_argument(
        "--user-field",
        choices=["user_id", "labels"],
        default="user_id",
        help="where /get_reward finds each item's user besides user_id/user_ids: labels reads "
        "OpenRLHF's labels (run OpenRLHF with --data.label_key user_id): an id, "
        '{"user_id": ...}, or that object as JSON; "" for the prior',
    )
    serve.add_argument(
        "--policy-tokenizer",
        metavar="PATH",
        help="the policy's tokenizer folder: /get_reward reads queries in its chat template "
        "back into plain turns (the built-in templates, then plain text, remain the fallback)",
    )
    serve.add_argument(
        "--api-key",
        default=None,
        help=f"the key writes (POST /adapt) need as 'Authorization: Bearer KEY'; better set "
        f"{API_KEY_ENV}, which no process listing shows",
    )
    serve.add_argument(
        "--read-key",
        default=None,
        help=f"a key POST /get_reward needs (the write key also reads); or {READ_KEY_ENV}",
    )
    serve.add_argument(
        "--read-only", action="store_true", help="refuse every write (403), keys or not"
    )
    serve.add_argument(
        "--max-body-mb",
        type=float,
        default=16.0,
        help="the largest request body (413 beyond, before it is read)",
    )
    serve.add_argument(
        "--max-items", type=int, default=4096, help="queries or pairs a request (413 beyond)"
    )
    serve.add_argument(
        "--max-text-chars", type=int, default=65536, help="characters a text (413 beyond)"
    )
    serve.add_argument(
        "--request-timeout-s",
        type=float,
        default=120.0,
        help="a request not answered by then gets 504 (below OpenRLHF's 180 s client timeout)",
    )
    serve.add_argument(
        "--batch-wait-ms",
        type=float,
        default=2.0,
        help="how long a request waits for concurrent ones to be scored with it in one "
        "encoder call (0: each request alone)",
    )
    serve.add_argument("--max-batch", type=int, default=256, help="items one model call scores")
    serve.add_argument("--cache-dir", help="embedding cache to read and fill (optional)")
    serve.add_argument("--device", default="auto", help="where the encoder runs")
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (info logs every request)",
    )
    return serve


def run(command: str, argv: list[str], from_sys_argv: bool = False) -> None:
    """Run ``mrm serve ...`` (``argv``: the arguments after ``serve``) until interrupted."""
    args = parser().parse_args(argv)
    access = AccessRules(  # a key too short to be a token fails here, before anything loads
        write_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        read_key=args.read_key or os.environ.get(READ_KEY_ENV) or None,
        read_only=args.read_only,
    )
    limits = RequestLimits(
        max_body_bytes=int(args.max_body_mb * (1 << 20)),
        max_items=args.max_items,
        max_text_chars=args.max_text_chars,
        request_timeout_s=args.request_timeout_s,
    )
    # a bad tokenizer folder fails here, naming it, before the checkpoint loads
    policy_template = load_policy_template(args.policy_tokenizer) if args.policy_tokenizer else None
    from ..use.inference import PersonalizedRewardModel
    from ..use.server import Batching, serve

    # a bad checkpoint or store raises an error naming the file, before anything listens
    model = PersonalizedRewardModel.from_checkpoint(
        args.ckpt, device=args.device, cache_dir=args.cache_dir
    )
    serve(
        model,
        args.store,
        args.host,
        args.port,
        args.unknown_user,
        args.log_level,
        user_field=args.user_field,
        access=access,
        limits=limits,
        batching=Batching(wait_ms=args.batch_wait_ms, max_items=args.max_batch),
        policy_template=policy_template,
    )
