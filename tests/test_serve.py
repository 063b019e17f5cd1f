"""`cleanroom serve`: a tiny random Llama + trained BPE tokenizer behind the OpenAI-compatible API.

The servers bind 127.0.0.1 on free ports and are shut down by the fixtures; request loops are bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pyarrow.parquet as pq
import pytest
from teacher_helpers import free_port, make_tiny_model

from cleanroom.collect.teacher import RealGenConfig, generate_corpus
from cleanroom.config import TeacherCorpus
from cleanroom.serve import ModelServer, start_server
from cleanroom.store import RunStore
from cleanroom.teachers.openai_compat import OpenAITeacher


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="module")
def served(tiny_dir):
    server = ModelServer(str(tiny_dir), max_tokens_limit=64, batch_size=8)
    httpd, _ = start_server(server)
    url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield server, url
    httpd.shutdown()
    httpd.server_close()
    server.close()


def test_models_and_completions_through_the_openai_sdk(served):
    server, url = served
    client = openai.OpenAI(base_url=url, api_key="unused")
    assert [m.id for m in client.models.list().data] == ["tiny-llama"]
    r = client.completions.create(model="tiny-llama", prompt="The river", max_tokens=12, temperature=0)
    assert isinstance(r.choices[0].text, str) and 1 <= r.usage.completion_tokens <= 12
    assert r.usage.prompt_tokens >= 1
    again = client.completions.create(model="tiny-llama", prompt="The river", max_tokens=12, temperature=0)
    assert again.choices[0].text == r.choices[0].text  # greedy is deterministic
    chat = client.chat.completions.create(model="tiny-llama", max_tokens=8,
                                          messages=[{"role": "user", "content": "Hi there"}])
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens <= 8
    chunks = list(client.chat.completions.create(model="tiny-llama", max_tokens=8, stream=True,
                                                 messages=[{"role": "user", "content": "Hi"}]))
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("body, status, fragment", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (json.dumps({"model": "gpt-9", "prompt": "x"}).encode(), 404, "does not exist"),
    (json.dumps({"model": "tiny-llama", "prompt": "x", "max_tokens": 100000}).encode(), 400, "max_tokens must be <="),
    (json.dumps({"model": "tiny-llama", "prompt": "x", "max_tokens": 0}).encode(), 400, "positive integer"),
    (json.dumps({"model": "tiny-llama", "prompt": 5}).encode(), 400, "prompt must be"),
    (json.dumps({"model": "tiny-llama", "prompt": "x", "temperature": 9}).encode(), 400, "temperature"),
    (json.dumps({"model": "tiny-llama", "prompt": "x", "repetition_penalty": -1}).encode(), 400, "repetition"),
])
def test_bad_requests_get_4xx_json_and_the_server_keeps_running(served, body, status, fragment):
    _, url = served
    r = httpx.post(f"{url}/completions", content=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == status
    err = r.json()["error"]
    assert fragment in err["message"] and err["type"] == "invalid_request_error"
    ok = httpx.post(f"{url}/completions", json={"model": "tiny-llama", "prompt": "a", "max_tokens": 2}, timeout=30)
    assert ok.status_code == 200 and "openai-processing-ms" in ok.headers


def test_unknown_route_and_chat_validation(served):
    _, url = served
    assert httpx.get(f"{url}/nope", timeout=10).status_code == 404
    r = httpx.post(f"{url}/chat/completions", json={"model": "tiny-llama", "messages": "hi"}, timeout=10)
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]


def test_concurrent_requests_are_batched(served):
    server, url = served
    before = dict(server.stats)
    body = {"model": "tiny-llama", "prompt": "Q: why", "max_tokens": 6, "temperature": 0.7}
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: httpx.post(f"{url}/completions", json=body, timeout=60).status_code,
                              range(16)))
    assert codes == [200] * 16
    assert server.stats["batches"] - before["batches"] < 16  # some requests shared a generate call


def test_openai_teacher_against_cleanroom_serve_end_to_end(served, tmp_path):
    _, url = served
    seeds = tmp_path / "topics.txt"
    seeds.write_text("volcanoes\nfractions\nrivers\nthe moon\nbridges\n")
    teacher = OpenAITeacher(url, "tiny-llama", concurrency=4, timeout=60)
    store = RunStore(tmp_path / "run")
    spec = TeacherCorpus(kind="teacher", teacher="openai", model="tiny-llama", base_urls=[url],
                         prompt_recipe="cosmopedia", source=str(seeds), max_tokens=24, temperature=0.9)
    gen = RealGenConfig(spec=spec, tokens=150, seed=1, min_doc_tokens=1, embed=False)
    stats = generate_corpus(teacher, store, gen)
    docs = pq.read_table(store.path("corpora/cosmopedia")).to_pylist()
    assert stats["tokens"] >= 150 and len(docs) == stats["docs"] > 0
    assert teacher.stats.ok == stats["requests"]["sent_this_run"] > 0 and teacher.stats.retries == 0
    meta = json.loads(docs[0]["meta"])
    assert meta["model"] == "tiny-llama" and meta["completion_tokens"] <= 24
    again = OpenAITeacher(url, "tiny-llama", concurrency=4)
    assert generate_corpus(again, store, gen)["requests"]["sent_this_run"] == 0 and again.stats.sent == 0


def test_serve_command_binds_localhost_and_stops(tiny_dir):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cleanroom.cli", "serve", str(tiny_dir), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"})
    try:
        deadline, up = time.time() + 90, False
        while time.time() < deadline and not up:
            try:
                up = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.3)
        assert up, "server did not come up"
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions",
                       json={"model": "tiny-llama", "prompt": "hi", "max_tokens": 3}, timeout=30)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 3
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"127.0.0.1:{port}" in out.decode()


def test_serve_command_reports_a_missing_model(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cleanroom.cli", "serve", str(tmp_path / "nothing")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
