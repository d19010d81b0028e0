"""``mrm serve``: a personalized reward model over HTTP (FastAPI + uvicorn).

mrm serve --ckpt best.ckpt --store profiles.db --port 5000 [--host 127.0.0.1]
          [--unknown-user prior|error] [--user-field user_id|labels]

Endpoints (JSON in, JSON out):

``POST /get_reward``: OpenRLHF's remote reward model convention, plus the user::

    {"query": ["<prompt><response>", ...], "prompts": ["<prompt>", ...],
     "user_id": "u17"}                      (one user for the whole request), or
     "user_ids": ["u17", "u3", ...]}        (one per item; neither: the prior), or
     "labels": ["u17", ...]}                (one per item, with --user-field labels)
    -> {"rewards": [...], "scores": [...], "extra_logs": {"personalized": [1.0, 0.0, ...]},
        "profiles": ["u17", "prior", ...], "profile": "u17"}
    ("return_std": true adds "reward_std": each reward's spread under the user's posterior)

  OpenRLHF sends each full text (prompt and response, as generated) in ``query`` and the
  prompt in ``prompts``. A query in the policy's own template (``--policy-tokenizer``) or a
  known one (ChatML/Qwen, Llama 3, Mistral/Llama 2, Gemma, Phi-3, Zephyr) is scored as its
  plain (history, prompt, response), markup removed (:func:`.request_bodies.item_of`); else
  the response is the query less a prompt it starts with, whitespace stripped at both ends.

  ``profiles`` names the profile that scored each item (the user id, or ``prior``);
  ``profile`` is there when one profile scored them all. ``scores`` are
  ``sigmoid(reward)`` (the Bradley-Terry probability of beating a response of reward 0: in
  [0, 1], for OpenRLHF's dynamic filtering); ``extra_logs`` are per-item numbers OpenRLHF
  logs (``personalized``: 1 where a user's profile scored the item, 0 for the prior).
  OpenRLHF sends no user field; with ``--user-field labels`` each item's ``labels`` entry
  names its user (:mod:`.request_users`: an id, ``{"user_id": ...}`` or that as JSON; ``""``
  for nobody), and ``user_id`` / ``user_ids`` still win where given. Otherwise ``labels`` are
  ignored. A user with no profile gets the prior, or HTTP 404 with ``--unknown-user error``
  (where an item naming no user is refused with 400).

``POST /adapt``: ``{"user_id": "u17", "pairs": [{"prompt", "chosen", "rejected",
  "history"?}, ...]}`` adapts the model to the user and adds or replaces their profile in the
  store (one transaction) -> ``{"user_id", "num_pairs", "weights", "replaced", "users"}``.

``POST /feedback``: ``{"user_id", "pairs": [...], "idempotency_key"?}`` adds the user's new
  pairs to the ones stored for them and re-adapts from all (one transaction: concurrent
  feedback to one user, from any replica, loses no acknowledged pair); a retry with the same
  key is answered as the first and counted once. ``/adapt`` stores its pairs in place of the
  user's earlier ones. Both drop what the file readers drop (empty or identical texts,
  repeats) and say so in ``dropped``; ``if_version`` on ``/adapt`` makes it conditional (409).

``GET /users/{id}``: ``{"user_id", "pairs", "version", "updated_at", "checkpoint"}`` (404 for
  none); ``DELETE /users/{id}`` removes the profile AND the stored pairs. ``POST /next_pairs``:
  the comparisons to ask a user next (:mod:`.next_pairs_route`). ``GET /health``:
  ``{"status": "ok", "checkpoint", "encoder", "users": N, "unknown_user"}``.

Keys (:mod:`.access`): with a write key every write needs ``Authorization: Bearer KEY`` (401
without one, 403 with another); with a read key the reads do too; ``--read-only`` refuses
writes with 403; ``/health`` is always open. Writes open beyond loopback log a warning.

Errors are JSON ``{"detail": ...}``: 422 for a body of the wrong shape, 400 / 404 for requests
the model cannot serve, 500 with one line (no traceback) otherwise, 503 when the queue is full.
The model and the store are used from one worker thread (neither is thread-safe); concurrent
reward requests are gathered for ``--batch-wait-ms`` and scored in one encoder call
(:mod:`.batching`); /health has a thread and a store connection of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from .access import AccessRules, exposure_warning, guarded
from .batching import Batching, Busy, RewardBatcher
from .inference import NonFiniteReward, PersonalizedRewardModel
from .limits import (
    BodySizeLimit,
    RequestLimits,
    check_pairs,
    check_sizes,
    validation_details,
    within,
)
from .metrics import MetricsMiddleware, ServerMetrics
from .model_thread import DaemonThreadExecutor
from .next_pairs_route import add_next_pairs_route
from .policy_template import TemplateMarkup
from .profiles import ProfileError, StoreError, UserProfile, VersionConflict
from .request_bodies import (
    AdaptRequest,
    FeedbackRequest,
    Pair,
    RewardRequest,
    item_of,
    usable_pairs,
)
from .request_users import LabelError, users_of_request, win_probability
from .store import ProfileStore, location_of, public_name
from .thread_stores import ThreadStores

logger = logging.getLogger("mrm_lightning.use.server")

PRIOR = "prior"
T = TypeVar("T")


def create_app(
    model: PersonalizedRewardModel,
    store: ProfileStore | str | Path,
    unknown_user: Literal["prior", "error"] = "prior",
    user_field: Literal["user_id", "labels"] = "user_id",
    access: AccessRules | None = None,
    limits: RequestLimits | None = None,
    batching: Batching | None = None,
    policy_template: TemplateMarkup | None = None,  # tried before the built-in templates
) -> FastAPI:
    """The server's app. ``store`` is the profile store's path (of a ProfileStore, only its
    target is used: the app opens a connection in each thread that uses it).
    ``user_field``: ``labels`` also reads each item's user from ``labels`` (OpenRLHF).
    ``access``: the keys writes and reads need (:mod:`.access`; None: open). ``limits``:
    the largest body, item count and text a request may hold (:mod:`.limits`)."""
    rules, limits = access or AccessRules(), limits or RequestLimits()
    batching = batching or Batching()
    if unknown_user not in ("prior", "error"):
        raise ValueError(f"unknown_user must be 'prior' or 'error', got {unknown_user!r}")
    if user_field not in ("user_id", "labels"):
        raise ValueError(f"user_field must be 'user_id' or 'labels', got {user_field!r}")
    target = store.target if isinstance(store, ProfileStore) else str(store)
    location, short_name = location_of(target), public_name(target)
    worker = DaemonThreadExecutor("mrm-model")
    # /health has a thread and a store connection of its own: a long scoring request on the
    # model's thread never delays a probe
    prober = DaemonThreadExecutor("mrm-probe")
    stores = ThreadStores(target, model.digest)  # one connection per thread
    the_store = stores.get

    async def on_worker(work: Callable[[], T], executor: DaemonThreadExecutor = worker) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, work)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        # stopping (SIGTERM): close each thread's store connection, unless the thread is still
        # in a model call; then it is left behind (a daemon), unanswered, and the process ends
        for executor in (worker, prober):
            try:
                await asyncio.wait_for(on_worker(stores.close_this_threads, executor), 2.0)
            except asyncio.TimeoutError:  # noqa: UP041 (not the builtin TimeoutError on Python 3.10)
                logger.warning("stopping with a model call in flight; it is abandoned")
            executor.shutdown(wait=False, cancel_futures=True)

    metrics = ServerMetrics()

    def score_counted(items: list, profiles: list) -> list[float]:
        metrics.model_calls.inc()
        return model.score_items(items, profiles)

    batcher = RewardBatcher(
        score_counted,
        on_worker,
        max_wait_s=batching.wait_ms / 1000,
        max_items=batching.max_items,
        max_queued=batching.max_queued,
    )
    app = FastAPI(title="mrm reward server", lifespan=lifespan)
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts 413s too

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_details(error.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        first = private((str(error).strip().splitlines() or [""])[0])
        detail = f"internal error: {type(error).__name__}" + (f": {first}" if first else "")
        if isinstance(error, StoreError):  # its message may name the database's host
            detail = f"internal error: the profile store ({short_name}) failed; see the log"
        return JSONResponse({"detail": detail}, status_code=500)

    def private(message: str) -> str:
        """A message for a client: the store named by its file or database, not its path or
        host."""
        return message.replace(location, short_name)

    def profile_of(user: str | None) -> UserProfile | None:
        try:
            return None if user is None else the_store().get(user)
        except ProfileError as error:  # a stored row that no longer reads: the server's fault
            raise HTTPException(500, private(f"profile store: {error}")) from None

    def profiles_of(users: list[str | None]) -> dict[str | None, UserProfile | None]:
        found = {user: profile_of(user) for user in dict.fromkeys(users)}
        unknown = [u for u, p in found.items() if p is None and u is not None]
        if unknown and unknown_user == "error":
            named = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise HTTPException(404, f"no profile of user {named} (--unknown-user error)")
        return found

    async def rewards(body: RewardRequest, users: list[str | None]) -> dict[str, Any]:
        found = await on_worker(lambda: profiles_of(users))
        items = [item_of(q, p, policy_template) for q, p in zip(body.query, body.prompts)]
        profiles, spread = [found[u] for u in users], None
        try:  # with the other requests queued meanwhile: one encoder call for all
            if body.return_std:  # and each reward's spread under the posterior: a call of its own
                work = on_worker(lambda: model.score_items_with_std(items, profiles))
                scores, spread = await work
            else:
                scores = await batcher.rewards(items, profiles)
        except Busy as error:
            raise HTTPException(503, str(error)) from None
        except NonFiniteReward as error:
            raise HTTPException(500, str(error)) from None
        except ProfileError as error:  # return_std: no uncertainty known for a profile
            raise HTTPException(409, str(error)) from None
        except ValueError as error:
            raise HTTPException(400, str(error)) from None
        names = [PRIOR if found[u] is None else u for u in users]
        metrics.count_items([found[u] is not None for u in users])
        answer: dict[str, Any] = {
            "rewards": scores,
            "scores": [win_probability(r) for r in scores],
            "extra_logs": {"personalized": [float(found[u] is not None) for u in users]},
            "profiles": names,
        }
        if len(set(names)) == 1:
            answer["profile"] = names[0]
        if spread is not None:
            answer["reward_std"] = spread
        return answer

    @app.post("/get_reward", dependencies=[guarded(rules.check_read)])
    async def get_reward(body: RewardRequest) -> dict[str, Any]:
        if len(body.query) != len(body.prompts):
            raise HTTPException(
                400, f"'query' has {len(body.query)} items but 'prompts' {len(body.prompts)}"
            )
        if body.user_id is not None and body.user_ids is not None:
            raise HTTPException(400, "give 'user_id' (the whole request) or 'user_ids', not both")
        if body.user_ids is not None and len(body.user_ids) != len(body.query):
            raise HTTPException(
                400, f"'user_ids' has {len(body.user_ids)} items but 'query' {len(body.query)}"
            )
        check_sizes(
            limits,
            len(body.query),
            [(f"query[{i}]", q) for i, q in enumerate(body.query)]
            + [(f"prompts[{i}]", p) for i, p in enumerate(body.prompts)],
        )
        try:
            users = users_of_request(body, user_field)
        except LabelError as error:
            raise HTTPException(400, str(error)) from None
        if unknown_user == "error" and None in users:
            field = "'labels'" if user_field == "labels" else "'user_id' or 'user_ids'"
            raise HTTPException(
                400,
                f"name the user of item {users.index(None)}: {field} (--unknown-user error)",
            )
        if not users:
            return {"rewards": [], "scores": [], "extra_logs": {"personalized": []},
                    "profiles": []}  # fmt: skip
        return await within(limits, rewards(body, users))

    def adapt(user: str, given: list[Pair], append: bool, if_version: int | None) -> dict:
        """Adapt ``user`` to ``given`` pairs (after the stored ones with ``append``) and store
        the profile and the pairs, in one transaction: a concurrent write to the same user
        waits, so no acknowledged pair is lost."""
        store = the_store()
        with store.transaction():
            store.lock_users([user])  # other replicas' writes of this user wait, or are read
            earlier = store.judgements(user) if append else []
            pairs, dropped = usable_pairs(given, already=earlier)
            if not pairs:
                reasons = ", ".join(f"{n} {reason}" for reason, n in dropped.items())
                raise HTTPException(
                    400, f"no usable new pair ({reasons}): dropped as the file readers drop them"
                )
            try:
                profile = model.adapt(earlier + pairs)
            except ValueError as error:
                raise HTTPException(400, str(error)) from None
            before = store.version(user)  # a damaged profile is replaced, not read
            try:
                version = store.put(user, profile, expected_version=if_version)
            except VersionConflict as error:
                raise HTTPException(409, str(error)) from None
            stored = store.set_judgements(user, pairs, append=append)
        return {
            "user_id": user,
            "num_pairs": profile.num_pairs,
            "weights": profile.weights,
            "replaced": before > 0,
            "version": version,
            "pairs_stored": stored,
            "users": len(store.users()),
            "dropped": dropped,
        }

    @app.post("/adapt", dependencies=[guarded(rules.check_write)])
    async def adapt_user(body: AdaptRequest) -> dict[str, Any]:
        check_pairs(limits, body.user_id, body.pairs)
        work = on_worker(lambda: adapt(body.user_id, body.pairs, False, body.if_version))
        return await within(limits, work)

    def feedback(body: FeedbackRequest) -> dict:
        store, key = the_store(), body.idempotency_key
        with store.transaction():
            store.lock_users([body.user_id])
            if key is not None and (answer := store.feedback_answer(body.user_id, key)):
                return {**answer, "repeated": True}
            answer = adapt(body.user_id, body.pairs, append=True, if_version=None)
            if key is not None:
                store.remember_feedback(body.user_id, key, answer)
        return {**answer, "repeated": False}

    @app.post("/feedback", dependencies=[guarded(rules.check_write)])
    async def add_feedback(body: FeedbackRequest) -> dict[str, Any]:
        check_pairs(limits, body.user_id, body.pairs)
        return await within(limits, on_worker(lambda: feedback(body)))

    def user_info(user: str) -> dict:
        store = the_store()
        profile, pairs = profile_of(user), store.judgements(user)
        if profile is None and not pairs:
            raise HTTPException(404, f"no profile or pairs of user {user!r}")
        return {
            "user_id": user,
            "pairs": len(pairs),
            "version": store.version(user),
            "updated_at": None if profile is None else profile.created_at,
            "checkpoint": None if profile is None else profile.checkpoint,
        }

    @app.get("/users/{user}", dependencies=[guarded(rules.check_read)])
    async def get_user(user: str) -> dict[str, Any]:
        return await on_worker(lambda: user_info(user), prober)

    def delete_user(user: str) -> dict:
        store = the_store()
        if not store.delete(user):
            raise HTTPException(404, f"no profile or pairs of user {user!r}")
        return {"user_id": user, "deleted": True, "users": len(store.users())}

    @app.delete("/users/{user}", dependencies=[guarded(rules.check_write)])
    async def remove_user(user: str) -> dict[str, Any]:
        return await on_worker(lambda: delete_user(user))

    add_next_pairs_route(app, model, the_store, profile_of, on_worker, rules, limits)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return metrics.exposition()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        users = await on_worker(lambda: len(the_store().users()), prober)
        identity = (model.encoder_info or {}).get("identity") or {}
        return {
            "status": "ok",
            "checkpoint": model.digest,
            "encoder": identity.get("model"),
            "users": users,
            "unknown_user": unknown_user,
        }

    return app


def serve(
    model: PersonalizedRewardModel,
    store_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 5000,
    unknown_user: Literal["prior", "error"] = "prior",
    log_level: str = "info",
    user_field: Literal["user_id", "labels"] = "user_id",
    access: AccessRules | None = None,
    limits: RequestLimits | None = None,
    batching: Batching | None = None,
    policy_template: TemplateMarkup | None = None,
) -> None:
    """Check that the encoder and the store open (fail now, not on the first request), then
    serve until interrupted."""
    if model.encoder_info is not None:
        model.encoder().load()
    ProfileStore(store_path, checkpoint=model.digest).close()  # its errors name the file
    import uvicorn

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s: %(message)s")
    access = access or AccessRules()
    if warning := exposure_warning(host, access):
        logger.warning(warning)
    app = create_app(model, store_path, unknown_user, user_field, access, limits, batching,
                     policy_template)  # fmt: skip
    # SIGTERM: stop taking requests, give those in flight a few seconds, then stop
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
