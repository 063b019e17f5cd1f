"""`cleanroom serve MODEL`: an OpenAI-compatible HTTP server for cleanroom models and local HF models.

Endpoints: `GET /v1/models`, `POST /v1/completions`, `POST /v1/chat/completions` (`"stream": true`
answers as server-sent events, the whole completion in one chunk), `GET /health`. Bound to 127.0.0.1
by default. `/v1/completions` answers `echo: true` + `logprobs: N` (N <= 5; `max_tokens: 0` allowed with
echo) in OpenAI's legacy shape, as vLLM does: `choices[i].logprobs` has `tokens`, `token_logprobs`
(None for the first token), `top_logprobs` and `text_offset` over the prompt (and the completion, whose
tokens are re-tokenized from its text), computed by one teacher-forced forward pass: what
`cleanroom audit --base-url` needs to score log-likelihoods. Every bad request gets a 4xx JSON error in
OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`) and the server keeps running.

Concurrent requests are *micro-batched*: handler threads put jobs on a queue; one worker thread takes
whatever is waiting (up to `batch_size`), groups jobs with equal sampling parameters, and runs each
group as one padded `generate` call. That is what lets a concurrent client get more tokens/s out of
a CPU than a sequential one. Each response carries `openai-processing-ms` (time in the server).
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cleanroom.lm.api import Completion, GenerateRequest
from cleanroom.lm.causal import Codec
from cleanroom.lm.hf import ALIASES, HFLM, bos_convention, load_model, render_chat, resolve_model

MAX_BODY = 1 << 20


class RequestError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


@dataclass
class _Job:
    text: str
    key: tuple  # (max_tokens, temperature, top_p, stop, seed, repetition_penalty): equal keys share a batch
    done: threading.Event = field(default_factory=threading.Event)
    result: Completion | None = None
    error: str | None = None


class ModelServer:
    """One model, its tokenizer, and the batching worker."""

    def __init__(self, model: str, *, name: str | None = None, max_tokens_limit: int = 1024,
                 batch_size: int = 32, batch_wait: float = 0.005, dtype: str = "auto", threads: int = 0):
        spec = resolve_model(model)
        self.name = name or (model if model in ALIASES else spec.name)
        self.lm, self.tok = load_model(spec, dtype, threads)
        # prompts arrive as text (chat ones already templated): BOS only for models without a template
        base = Codec.from_transformers(self.tok)
        bos = None if getattr(self.tok, "chat_template", None) else bos_convention(self.tok)
        self.generator = HFLM(self.lm, self.tok, codec=Codec(self.tok, bos, base.eos_id, base.pad_id),
                              batch_size=batch_size)
        self.context = int(getattr(self.lm.config, "max_position_embeddings", 0) or 1 << 30)
        self.max_tokens_limit = min(max_tokens_limit, self.context)
        self.batch_size, self.batch_wait = batch_size, batch_wait
        self.created = int(time.time())
        self._q: queue.Queue[_Job | None] = queue.Queue()
        self._model_lock = threading.Lock()  # the batching worker and logprob scoring share the model
        self._worker = threading.Thread(target=self._work, name="cleanroom-serve-worker", daemon=True)
        self._worker.start()
        self.stats = {"requests": 0, "batches": 0, "completion_tokens": 0, "busy_seconds": 0.0}

    # ------------------------------------------------------------------ batching worker
    def _work(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            jobs = [job]
            deadline = time.perf_counter() + self.batch_wait
            while len(jobs) < self.batch_size:
                try:
                    nxt = self._q.get(timeout=max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    break
                if nxt is None:
                    self._q.put(None)
                    break
                jobs.append(nxt)
            groups: dict[tuple, list[_Job]] = {}
            for j in jobs:
                groups.setdefault(j.key, []).append(j)
            for key, group in groups.items():
                self._run_group(key, group)

    def _run_group(self, key: tuple, group: list[_Job]) -> None:
        max_tokens, temperature, top_p, stop, seed, repetition_penalty = key
        t0 = time.perf_counter()
        try:
            with self._model_lock:
                outs = self.generator.generate([
                    GenerateRequest(j.text, stop, max_tokens, temperature, top_p, seed, repetition_penalty)
                    for j in group])
            for j, c in zip(group, outs, strict=True):
                j.result = c
        except Exception as e:  # a generation failure answers 500 for this group, the server goes on
            for j in group:
                j.error = f"generation failed: {type(e).__name__}: {e}"
        self.stats["batches"] += 1
        self.stats["busy_seconds"] += time.perf_counter() - t0
        for j in group:
            if j.result is not None:
                self.stats["completion_tokens"] += j.result.completion_tokens
            j.done.set()

    def close(self) -> None:
        self._q.put(None)
        self._worker.join(timeout=30)

    # ------------------------------------------------------------------ request handling
    def complete(self, texts: list[str], max_tokens: int, temperature: float, top_p: float,
                 stop: tuple[str, ...], seed: int | None, repetition_penalty: float | None = None) -> list[Completion]:
        for t in texts:
            with self._model_lock:  # the tokenizer is not safe to share between threads
                n_prompt = len(self.tok(t, add_special_tokens=False)["input_ids"])
            if n_prompt + max_tokens > self.context:
                raise RequestError(400, f"prompt ({n_prompt} tokens) + max_tokens ({max_tokens}) exceeds the "
                                        f"model's context of {self.context} tokens", "max_tokens",
                                   "context_length_exceeded")
        jobs = [_Job(t, (max_tokens, temperature, top_p, stop, seed, repetition_penalty)) for t in texts]
        for j in jobs:
            self._q.put(j)
        for j in jobs:
            if not j.done.wait(timeout=600):
                raise RequestError(503, "generation timed out in the server", code="timeout")
            if j.error:
                raise RequestError(500, j.error, code="server_error")
        self.stats["requests"] += 1
        return [j.result for j in jobs]  # type: ignore[misc]


    def logprobs(self, prompt: str, completion: str, top_n: int) -> dict:
        """OpenAI legacy `logprobs` over prompt + completion: tokens, token_logprobs, top_logprobs, text_offset."""
        import torch

        # the lock also covers the tokenizer: a fast tokenizer used from two threads at once fails
        # ("Already borrowed"), and the batching worker tokenizes too
        with self._model_lock:
            enc = self.tok(prompt, add_special_tokens=True, return_offsets_mapping=True)
            ids, offsets = list(enc["input_ids"]), [int(a) for a, _ in enc["offset_mapping"]]
            if completion:
                extra = self.tok(completion, add_special_tokens=False, return_offsets_mapping=True)
                ids += list(extra["input_ids"])
                offsets += [len(prompt) + int(a) for a, _ in extra["offset_mapping"]]
            if len(ids) > self.context:
                raise RequestError(400, f"prompt + completion ({len(ids)} tokens) exceeds the model's context of "
                                        f"{self.context} tokens", "prompt", "context_length_exceeded")
            with torch.inference_mode():
                logits = self.lm(input_ids=torch.tensor([ids], device=self.lm.device)).logits[0].float()
            logp = torch.log_softmax(logits, dim=-1)
            tokens = [self.tok.decode([i]) for i in ids]
            token_logprobs: list[float | None] = [None]
            top: list[dict | None] = [None]
            for t in range(1, len(ids)):
                row = logp[t - 1]
                token_logprobs.append(float(row[ids[t]]))
                if top_n:
                    vals, idx = row.topk(top_n)
                    top.append({self.tok.decode([int(i)]): float(v) for v, i in zip(vals, idx, strict=True)})
        return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top if top_n else None,
                "text_offset": offsets}


def _validate_common(body: dict, server: ModelServer) -> dict:
    """Shared checks for both endpoints; returns normalised sampling parameters."""
    model = body.get("model", server.name)
    if model != server.name:
        raise RequestError(404, f"model `{model}` does not exist; this server has `{server.name}`", "model",
                           "model_not_found")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens", 16))
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise RequestError(400, f"max_tokens must be a positive integer, got {max_tokens!r}", "max_tokens")
    if max_tokens > server.max_tokens_limit:
        raise RequestError(400, f"max_tokens must be <= {server.max_tokens_limit}, got {max_tokens}", "max_tokens")
    temperature, top_p = body.get("temperature", 1.0), body.get("top_p", 1.0)
    if temperature is None:
        temperature = 1.0
    if top_p is None:
        top_p = 1.0
    if not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise RequestError(400, f"temperature must be a number in [0, 2], got {temperature!r}", "temperature")
    if not isinstance(top_p, int | float) or not 0 < top_p <= 1:
        raise RequestError(400, f"top_p must be a number in (0, 1], got {top_p!r}", "top_p")
    if body.get("n", 1) != 1:
        raise RequestError(400, "only n=1 is supported", "n")
    stop = body.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else stop
    if not isinstance(stop, list | tuple) or not all(isinstance(s, str) for s in stop) or len(stop) > 4:
        raise RequestError(400, "stop must be a string or a list of at most 4 strings", "stop")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise RequestError(400, f"seed must be an integer, got {seed!r}", "seed")
    rp = body.get("repetition_penalty")
    if rp is not None and (not isinstance(rp, int | float) or not 0 < rp <= 10):
        raise RequestError(400, f"repetition_penalty must be a number in (0, 10], got {rp!r}", "repetition_penalty")
    return {"max_tokens": max_tokens, "temperature": float(temperature), "top_p": float(top_p),
            "stop": tuple(stop), "seed": seed, "repetition_penalty": None if rp is None else float(rp)}


def handle_completions(body: dict, server: ModelServer) -> dict:
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise RequestError(400, "prompt must be a string or a non-empty list of strings", "prompt")
    echo = body.get("echo", False)
    top_n = body.get("logprobs")
    if not isinstance(echo, bool):
        raise RequestError(400, f"echo must be a boolean, got {echo!r}", "echo")
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or not 0 <= top_n <= 5):
        raise RequestError(400, f"logprobs must be an integer in [0, 5], got {top_n!r}", "logprobs")
    if echo and body.get("max_tokens") == 0:  # score the prompt only (OpenAI legacy / lm-eval style)
        p = _validate_common({**body, "max_tokens": 1}, server)
        with server._model_lock:
            outs = [Completion("", len(server.tok(t)["input_ids"]), 0, "length") for t in prompts]
    else:
        p = _validate_common(body, server)
        outs = server.complete(prompts, **p)
    choices = []
    for i, (prompt_text, c) in enumerate(zip(prompts, outs, strict=True)):
        lp = None
        if top_n is not None:
            lp = server.logprobs(prompt_text, c.text, top_n)
            if not echo:  # only the completion's tokens
                k = next((j for j, off in enumerate(lp["text_offset"]) if off >= len(prompt_text)), len(lp["tokens"]))
                lp = {key: (None if v is None else v[k:]) for key, v in lp.items()}
                lp["text_offset"] = [off - len(prompt_text) for off in lp["text_offset"]]
        choices.append({"index": i, "text": (prompt_text + c.text) if echo else c.text,
                        "finish_reason": c.finish_reason, "logprobs": lp})
    return {
        "id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
        "model": server.name, "choices": choices, "usage": _usage(outs),
    }


def handle_chat(body: dict, server: ModelServer) -> dict:
    messages = body.get("messages")
    if (not isinstance(messages, list) or not messages
            or not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                       for m in messages)):
        raise RequestError(400, "messages must be a non-empty list of {role, content} objects with string "
                                "content", "messages")
    p = _validate_common(body, server)
    text = render_chat(server.tok, [{"role": m["role"], "content": m["content"]} for m in messages])
    (c,) = server.complete([text], **p)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
        "model": server.name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text},
                     "finish_reason": c.finish_reason, "logprobs": None}],
        "usage": _usage([c]),
    }


def _usage(outs: list[Completion]) -> dict:
    pt, ct = sum(c.prompt_tokens for c in outs), sum(c.completion_tokens for c in outs)
    return {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}


def _stream_events(resp: dict) -> list[dict]:
    """A finished response as OpenAI stream chunks (content chunk, then a finish chunk)."""
    chat = resp["object"] == "chat.completion"
    obj = "chat.completion.chunk" if chat else "text_completion"
    chunks = []
    for ch in resp["choices"]:
        if chat:
            delta = {"role": "assistant", "content": ch["message"]["content"]}
            chunks.append({"index": ch["index"], "delta": delta, "finish_reason": None})
            chunks.append({"index": ch["index"], "delta": {}, "finish_reason": ch["finish_reason"]})
        else:
            chunks.append({"index": ch["index"], "text": ch["text"], "finish_reason": ch["finish_reason"]})
    base = {k: resp[k] for k in ("id", "created", "model")}
    return [{**base, "object": obj, "choices": [c]} for c in chunks]


def make_handler(server: ModelServer, quiet: bool = True) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "cleanroom-serve"

        def log_message(self, fmt: str, *args) -> None:  # noqa: A003 - stdlib name
            if not quiet:
                super().log_message(fmt, *args)

        def setup(self) -> None:
            # headers and body leave in separate writes; without TCP_NODELAY, Nagle + delayed ACK
            # add ~40 ms to every keep-alive request
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _send(self, status: int, obj: dict, t0: float | None = None) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if t0 is not None:
                self.send_header("openai-processing-ms", f"{(time.perf_counter() - t0) * 1000:.1f}")
            self.end_headers()
            self.wfile.write(data)

        def _error(self, e: RequestError) -> None:
            etype = "invalid_request_error" if e.status < 500 else "server_error"
            self._send(e.status, {"error": {"message": e.message, "type": etype, "param": e.param,
                                            "code": e.code}})

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": server.name, "object": "model",
                                                             "created": server.created, "owned_by": "cleanroom"}]})
            elif self.path.rstrip("/") == "/health":
                self._send(200, {"status": "ok", **server.stats})
            else:
                self._error(RequestError(404, f"no route GET {self.path}", code="not_found"))

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            t0 = time.perf_counter()
            try:
                route = {"/v1/completions": handle_completions, "/v1/chat/completions": handle_chat}.get(
                    self.path.rstrip("/"))
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self.close_connection = True
                    raise RequestError(413, f"request body over {MAX_BODY} bytes")
                raw = self.rfile.read(length) if length else b""
                if route is None:
                    raise RequestError(404, f"no route POST {self.path}", code="not_found")
                try:
                    body = json.loads(raw or b"null")
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise RequestError(400, f"request body is not valid JSON ({e})") from None
                if not isinstance(body, dict):
                    raise RequestError(400, "request body must be a JSON object")
                resp = route(body, server)
            except RequestError as e:
                self._error(e)
                return
            if body.get("stream"):
                self._stream(resp, t0)
            else:
                self._send(200, resp, t0)

        def _stream(self, resp: dict, t0: float) -> None:
            payload = b"".join(f"data: {json.dumps(ev)}\n\n".encode() for ev in _stream_events(resp))
            payload += b"data: [DONE]\n\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("openai-processing-ms", f"{(time.perf_counter() - t0) * 1000:.1f}")
            self.end_headers()
            self.wfile.write(payload)

    return Handler


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # listen backlog: bursts of concurrent clients connect without refusals


def start_server(server: ModelServer, host: str = "127.0.0.1", port: int = 0,
                 quiet: bool = True) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Bind (port 0 = a free port) and serve in a background thread; `httpd.shutdown()` stops it."""
    httpd = _HTTPServer((host, port), make_handler(server, quiet))
    thread = threading.Thread(target=httpd.serve_forever, name="cleanroom-serve-http", daemon=True)
    thread.start()
    return httpd, thread


def serve_forever(model: str, host: str, port: int, *, name: str | None = None, max_tokens_limit: int = 1024,
                  batch_size: int = 32, dtype: str = "auto", log: bool = True) -> None:
    """The `cleanroom serve` command: load, bind, serve until Ctrl-C."""
    from cleanroom.ui import say

    server = ModelServer(model, name=name, max_tokens_limit=max_tokens_limit, batch_size=batch_size, dtype=dtype)
    httpd = _HTTPServer((host, port), make_handler(server, quiet=not log))
    host_shown, port_shown = httpd.server_address[:2]
    if host not in ("127.0.0.1", "localhost", "::1"):
        say(f"[yellow]warning:[/] listening on {host}: reachable beyond this machine, with no authentication")
    say(f"[bold]serving[/] `{server.name}` on http://{host_shown}:{port_shown}/v1 "
        f"(max_tokens <= {server.max_tokens_limit}, batches of up to {batch_size}) — Ctrl-C stops")
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        server.close()
