"""The OpenAI-compatible teacher against local stdlib servers that misbehave on purpose.

Every server here binds 127.0.0.1 on a free port, answers a bounded, scripted number of requests,
and is shut down by the test.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from teacher_helpers import FakeEndpoint

from cleanroom.errors import ModelError
from cleanroom.teachers import GenParams
from cleanroom.teachers.openai_compat import OpenAITeacher

FAST = {"backoff": 0.01, "backoff_max": 0.05}


def _teacher(ep: FakeEndpoint, **kw) -> OpenAITeacher:
    return OpenAITeacher(ep.base_url, "m", **{"max_retries": 3, "timeout": 5.0, **FAST, **kw})


@pytest.mark.parametrize("failure", [("status", 429), ("status", 500), ("status", 503), ("malformed", None)])
def test_transient_failures_are_retried(failure):
    # every prompt fails twice, then succeeds
    tries: dict[str, int] = {}

    def behave(n, body):
        p = body["messages"][-1]["content"]
        tries[p] = tries.get(p, 0) + 1
        return failure if tries[p] <= 2 else ("ok", f"fine: {p}")

    with FakeEndpoint(behave) as ep:
        t = _teacher(ep, concurrency=3)
        out = t.generate([f"p{i}" for i in range(5)], GenParams(max_tokens=8))
    assert [c.text for c in out] == [f"fine: p{i}" for i in range(5)]
    assert t.stats.retries == 10 and t.stats.sent == 15 and t.stats.ok == 5
    assert out[0].completion_tokens == 2 and out[0].prompt_tokens == 10  # from the server's usage


def test_a_hanging_server_times_out_and_is_retried():
    with FakeEndpoint(lambda n, b: ("hang", 3.0) if n == 0 else ("ok", "late but fine")) as ep:
        t = _teacher(ep, timeout=0.5)
        t0 = time.perf_counter()
        (c,) = t.generate(["p"], GenParams())
    assert c.text == "late but fine" and t.stats.retries == 1
    assert time.perf_counter() - t0 < 2.5


def test_retry_budget_exhausted_gives_a_clear_error_and_keeps_finished_work():
    def behave(n, body):
        return ("status", 500) if "bad" in body["messages"][-1]["content"] else ("ok", "good")

    done: dict[int, str] = {}
    prompts = ["good0", "good1", "bad", "good2", "good3"]
    with FakeEndpoint(behave) as ep:
        t = _teacher(ep, concurrency=5, max_retries=2)
        with pytest.raises(ModelError) as e:
            t.generate(prompts, GenParams(), on_result=lambda i, c: done.update({i: c.text}))
        bad_attempts = sum(1 for b in ep.requests if b["messages"][-1]["content"] == "bad")
    msg = str(e.value)
    assert "failed after 3 attempts" in msg and "HTTP 500" in msg and "4 of 5" in msg
    assert sorted(done) == [0, 1, 3, 4] and bad_attempts == 3


def test_sampling_params_reach_the_server():
    with FakeEndpoint() as ep:
        _teacher(ep).generate(["p"], GenParams(max_tokens=7, temperature=0.3, top_p=0.5, seed=4, stop=("###",),
                                               repetition_penalty=1.2))
        (body,) = ep.requests
    assert body["max_tokens"] == 7 and body["temperature"] == 0.3 and body["top_p"] == 0.5
    assert body["seed"] == 4 and body["stop"] == ["###"] and body["repetition_penalty"] == 1.2
    assert body["messages"] == [{"role": "user", "content": "p"}]


def test_client_errors_are_not_retried():
    with FakeEndpoint(lambda n, b: ("status", 401)) as ep:
        t = _teacher(ep)
        with pytest.raises(ModelError, match="HTTP 401"):
            t.generate(["p"], GenParams())
        assert len(ep.requests) == 1


def test_concurrency_is_bounded():
    with FakeEndpoint(delay=0.05) as ep:
        import threading

        active, peak, lock = [0], [0], threading.Lock()
        orig = ep.behave

        def behave(n, body):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.05)
            with lock:
                active[0] -= 1
            return orig(n, body)

        ep.behave = behave
        OpenAITeacher(ep.base_url, "m", concurrency=3).generate([f"p{i}" for i in range(12)], GenParams())
    assert peak[0] == 3


def _cli(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cleanroom.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200", **(env or {})}, **kw)


def _seed_file(tmp_path: Path, n: int = 200) -> str:
    p = tmp_path / "seeds.jsonl"
    p.write_text("".join(json.dumps({"title": f"T{i}", "passage": f"T{i} is a topic. It is number {i}."}) + "\n"
                         for i in range(n)))
    return str(p)


def test_api_key_comes_from_the_environment_and_is_never_written(tmp_path):
    secret = "sk-cleanroom-test-0123456789abcdef"
    out = tmp_path / "run"
    with FakeEndpoint() as ep:
        proc = _cli("generate", "--teacher", "openai", "--base-url", ep.base_url, "--model", "m", "--tokens", "300",
                    "--source", _seed_file(tmp_path), "--out", str(out), "--api-key-env", "MY_KEY",
                    env={"MY_KEY": secret})
        log, _ = proc.communicate(timeout=120)
        auth = set(ep.auth)
    assert proc.returncode == 0, log.decode()
    assert auth == {f"Bearer {secret}"}  # the key was used ...
    assert secret.encode() not in log  # ... but never printed
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files) and any(p.name == "requests.sqlite" for p in files)
    for p in files:  # ... nor stored (corpus, manifest, cache, WAL files)
        assert secret.encode() not in p.read_bytes(), p


def test_killed_generation_resumes_without_repeating_finished_requests(tmp_path):
    out = tmp_path / "run"
    src = _seed_file(tmp_path)
    args = ["generate", "--teacher", "openai", "--model", "m", "--tokens", "1500", "--source", src,
            "--out", str(out), "--concurrency", "2", "--max-tokens", "64"]
    cache = out / "cache" / "requests.sqlite"

    def cached_prompts() -> set[str]:
        try:
            with sqlite3.connect(cache) as db:
                return {r[0] for r in db.execute("SELECT prompt FROM requests")}
        except sqlite3.OperationalError:  # created but no table yet
            return set()

    with FakeEndpoint(delay=0.1) as ep:
        proc = _cli(*args, "--base-url", ep.base_url)
        deadline = time.time() + 60
        while time.time() < deadline and not (cache.exists() and len(cached_prompts()) >= 6):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        time.sleep(0.5)  # let the server finish the (now orphaned) requests that were in flight
        finished_before = cached_prompts()
        answered_before = len(ep.answered)
        assert 6 <= len(finished_before) and not (out / "corpora" / "textbook").exists()

        proc = _cli(*args, "--base-url", ep.base_url)
        log, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, log.decode()
        answered_after = ep.answered[answered_before:]
    assert answered_after and not set(answered_after) & finished_before  # nothing finished was asked again
    assert len(answered_after) == len(set(answered_after))
    stats = json.loads((out / "manifests" / "teacher" / "textbook.json").read_text())["stats"]
    assert stats["requests"]["sent_this_run"] == len(answered_after)
    assert stats["requests"]["cache_hits"] >= len(finished_before) - 2  # at most the in-flight pair was lost
    docs = pq.read_table(out / "corpora" / "textbook").to_pylist()
    assert stats["tokens"] >= 1500 and len(docs) == stats["docs"]
    used = {json.loads(d["meta"])["prompt_key"] for d in docs}
    with sqlite3.connect(cache) as db:
        assert used <= {r[0] for r in db.execute("SELECT key FROM requests")}


def test_unreachable_endpoint_fails_with_one_clear_line(tmp_path):
    from teacher_helpers import free_port

    proc = _cli("generate", "--teacher", "openai", "--base-url", f"http://127.0.0.1:{free_port()}/v1", "--model",
                "m", "--tokens", "100", "--source", _seed_file(tmp_path, 5), "--out", str(tmp_path / "r"),
                "--retries", "1", "--timeout", "2")
    log, _ = proc.communicate(timeout=120)
    text = log.decode()
    assert proc.returncode == 2 and "error:" in text and "connection failed" in text
    assert "Traceback" not in text
