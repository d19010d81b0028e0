"""GET /metrics in Prometheus' format counts requests by route template and status, latency,
items scored by a profile vs the prior, and model calls; access logs hold no text or key."""

from __future__ import annotations

import json
import logging
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from mrm_lightning.use.access import AccessRules
from mrm_lightning.use.server import create_app
from tests.use.test_batching import CountingModel
from tests.use.test_server import DIRECT, call, serving_in_a_thread

KEY = "k" * 20


def samples(base: str) -> dict[tuple, float]:
    with DIRECT.open(base + "/metrics", timeout=30) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_what_the_server_did(tmp_path, caplog):
    app = create_app(CountingModel(), tmp_path / "p.db", access=AccessRules(write_key=KEY))
    secret = "a very private prompt"
    with serving_in_a_thread(app) as base, caplog.at_level(logging.INFO, "mrm_lightning"):
        for _ in range(2):
            call(base, "/get_reward", {"query": [secret + " ok"], "prompts": [secret]})
        call(base, "/get_reward", {"query": ["a", "b"], "prompts": ["a"]})  # 400
        call(base, "/adapt", {"user_id": "u", "pairs": []})  # 401: no key
        request = urllib.request.Request(base + "/users/u7", headers={"Authorization": KEY})
        try:
            DIRECT.open(request, timeout=30)
        except urllib.error.HTTPError:
            pass
        got = samples(base)

    def requests(endpoint: str, method: str, status: str) -> float:
        labels = (("endpoint", endpoint), ("method", method), ("status", status))
        return got[("mrm_requests_total", labels)]

    assert requests("/get_reward", "POST", "200") == 2.0
    assert requests("/get_reward", "POST", "400") == 1.0
    assert requests("/adapt", "POST", "401") == 1.0
    # route templates, never a user id in a label
    assert any(key[1] and ("endpoint", "/users/{user}") in key[1] for key in got)
    assert got[("mrm_request_seconds_count", (("endpoint", "/get_reward"),))] == 3.0
    assert got[("mrm_reward_items_total", (("scored_by", "prior"),))] == 2.0
    assert got[("mrm_model_calls_total", ())] == 2.0
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name.endswith(".access")]
    assert {"method": "POST", "endpoint": "/get_reward", "status": 200}.items() <= lines[0].items()
    assert secret not in caplog.text and KEY not in caplog.text
