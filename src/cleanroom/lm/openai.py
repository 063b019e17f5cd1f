"""Any OpenAI-compatible endpoint (vLLM, llama.cpp server, Ollama, OpenAI, `cleanroom serve`).

`OpenAIClient` is the one HTTP client (the teachers' `OpenAITeacher` is it); `EndpointLM` puts it behind
the `LM` interface. The client uses the official `openai` SDK's `AsyncOpenAI` with our own retry loop
(the SDK's is switched off) so that every failure kind is handled the same visible way: 429, 5xx,
timeouts, dropped connections and malformed response bodies are retried with exponential backoff and
jitter (honouring `Retry-After`); other 4xx answers (bad request, auth, unknown model) fail at once,
since retrying cannot fix them. Concurrency is bounded by a semaphore. The API key is read from the
environment only: it is handed to the SDK client and never logged, stored, or put in an error message.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import openai

from cleanroom.errors import ConfigError, ModelError, ModelNotServed
from cleanroom.lm.api import (
    Completion,
    GenerateRequest,
    GenParams,
    Loglikelihood,
    LoglikelihoodRequest,
    RequestCounts,
    cut_at_stop,
    plain_transcript,
)
from cleanroom.text_stats import count_tokens

RETRY_STATUS = {408, 409, 429}  # plus every 5xx


class _Malformed(Exception):
    """The server answered 2xx with a body that is not a usable completion."""


@dataclass
class RequestStats:
    sent: int = 0  # HTTP requests made, retries included
    ok: int = 0
    retries: int = 0
    failed: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"sent": self.sent, "ok": self.ok, "retries": self.retries, "failed": self.failed,
                "seconds": round(self.seconds, 3)}


class OpenAIClient:
    """Async, bounded-concurrency client for `/v1/chat/completions` (mode "chat") or `/v1/completions`."""

    name = "openai"  # the teacher kind (`OpenAITeacher` is this client)

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", mode: str = "chat",
                 concurrency: int = 8, timeout: float = 120.0, max_retries: int = 5, backoff: float = 0.5,
                 backoff_max: float = 30.0, system_prompt: str | None = None):
        if mode not in ("chat", "completion"):
            raise ConfigError(f"teacher mode must be `chat` or `completion`, got `{mode}`")
        if concurrency < 1:
            raise ConfigError(f"--concurrency must be >= 1, got {concurrency}")
        self.base_url, self.model, self.mode = base_url, model, mode
        self.api_key_env = api_key_env
        self.concurrency, self.timeout = concurrency, timeout
        self.max_retries, self.backoff, self.backoff_max = max_retries, backoff, backoff_max
        self.system_prompt = system_prompt
        self.stats = RequestStats()

    def __repr__(self) -> str:  # never shows the key
        return f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r}, mode={self.mode!r})"

    # ---------------------------------------------------------------- public API
    def generate(self, prompts: Sequence[str], params: GenParams,
                 on_result: Callable[[int, Completion], None] | None = None) -> list[Completion]:
        return asyncio.run(self.agenerate(prompts, params, on_result))

    async def agenerate(self, prompts: Sequence[str], params: GenParams,
                        on_result: Callable[[int, Completion], None] | None = None) -> list[Completion]:
        """Answer every prompt; on a fatal error, finish what is in flight, then raise ModelError."""
        t0 = time.perf_counter()
        client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=os.environ.get(self.api_key_env) or "not-needed",
            max_retries=0,
            timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)),
            http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=self.concurrency + 4,
                                                              max_keepalive_connections=self.concurrency + 4)),
        )
        sem = asyncio.Semaphore(self.concurrency)
        stop = asyncio.Event()
        results: list[Completion | None] = [None] * len(prompts)
        errors: list[str] = []

        async def one(i: int, prompt: str) -> None:
            async with sem:
                if stop.is_set():
                    return
                try:
                    c = await self._request(client, prompt, params)
                except ModelError as e:
                    errors.append(str(e))
                    stop.set()
                    return
                results[i] = c
                if on_result is not None:
                    on_result(i, c)

        try:
            await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
        finally:
            await client.close()
            self.stats.seconds += time.perf_counter() - t0
        if errors:
            done = sum(r is not None for r in results)
            raise ModelError(f"{errors[0]} ({done} of {len(prompts)} requests in this batch finished "
                             f"and were kept)")
        return results  # type: ignore[return-value]

    # ---------------------------------------------------------------- one request with retries
    async def _request(self, client: openai.AsyncOpenAI, prompt: str, params: GenParams) -> Completion:
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.stats.retries += 1
            self.stats.sent += 1
            retry_after: float | None = None
            try:
                c = await self._call(client, prompt, params)
                self.stats.ok += 1
                return c
            except openai.APIStatusError as e:
                code = e.status_code
                if code not in RETRY_STATUS and code < 500:
                    self.stats.failed += 1
                    raise ModelError(f"teacher endpoint {self.base_url} refused the request: HTTP {code} "
                                     f"{_short(e)}") from None
                last = f"HTTP {code}"
                retry_after = _retry_after(e.response)
            except openai.APITimeoutError:
                last = f"no answer within {self.timeout:g}s"
            except openai.APIConnectionError as e:
                last = f"connection failed ({type(e.__cause__).__name__ if e.__cause__ else 'error'})"
            except (_Malformed, openai.APIResponseValidationError, json.JSONDecodeError, ValueError) as e:
                last = f"malformed response ({str(e)[:80]})"
            if attempt < self.max_retries:
                delay = min(self.backoff_max, self.backoff * 2 ** attempt) * (0.5 + random.random() / 2)
                if retry_after is not None:
                    delay = min(self.backoff_max, max(delay, retry_after))
                await asyncio.sleep(delay)
        self.stats.failed += 1
        raise ModelError(f"teacher endpoint {self.base_url} failed after {self.max_retries + 1} attempts: "
                         f"{last}")

    async def _call(self, client: openai.AsyncOpenAI, prompt: str, params: GenParams) -> Completion:
        kw: dict = {"model": self.model, "max_tokens": params.max_tokens, "temperature": params.temperature,
                    "top_p": params.top_p}
        if params.stop:
            kw["stop"] = list(params.stop)
        if params.seed is not None:
            kw["seed"] = params.seed
        if params.repetition_penalty is not None:  # not OpenAI's API; vLLM and `cleanroom serve` read it
            kw["extra_body"] = {"repetition_penalty": params.repetition_penalty}
        if self.mode == "chat":
            messages = [{"role": "user", "content": prompt}]
            if self.system_prompt:
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            r = await client.chat.completions.create(messages=messages, **kw)
            choice = (r.choices or [None])[0]
            text = getattr(getattr(choice, "message", None), "content", None)
        else:
            r = await client.completions.create(prompt=prompt, **kw)
            choice = (r.choices or [None])[0]
            text = getattr(choice, "text", None)
        if not isinstance(text, str):
            raise _Malformed("no completion text in the response")
        usage = getattr(r, "usage", None)
        pt = getattr(usage, "prompt_tokens", None) or count_tokens(prompt)
        ct = getattr(usage, "completion_tokens", None) or count_tokens(text)
        return Completion(text=text, prompt_tokens=int(pt), completion_tokens=int(ct),
                          finish_reason=str(getattr(choice, "finish_reason", None) or "stop"))


def _retry_after(resp: httpx.Response | None) -> float | None:
    try:
        return float(resp.headers["retry-after"]) if resp is not None else None
    except (KeyError, ValueError):
        return None


def _short(e: openai.APIStatusError) -> str:
    body = e.body if isinstance(e.body, dict) else {}
    msg = body.get("message") or (body.get("error") or {}).get("message") if isinstance(body, dict) else None
    return f"({str(msg)[:200]})" if msg else ""


# ---------------------------------------------------------------------------------------------- EndpointLM

def parse_echo_logprobs(choice: dict, context: str, text: str) -> Loglikelihood:
    """Continuation log-probability from an echoed completion choice (OpenAI legacy `logprobs` shape).

    Continuation tokens are the prompt tokens that end after `len(context)` characters and start before
    `len(text)` (a generated token, if any, comes after the prompt and is ignored).
    """
    lp = choice.get("logprobs") or {}
    tokens, values, offsets = lp.get("tokens"), lp.get("token_logprobs"), lp.get("text_offset")
    if not tokens or values is None or offsets is None or len(tokens) != len(values) != len(offsets):
        raise ValueError("the response has no prompt logprobs (tokens, token_logprobs, text_offset)")
    top = lp.get("top_logprobs") or [None] * len(tokens)
    ends = list(offsets[1:]) + [offsets[-1] + len(tokens[-1])]
    total, n, greedy = 0.0, 0, True
    for tok, value, start, end, alts in zip(tokens, values, offsets, ends, top, strict=False):
        if start >= len(text):
            break
        if end <= len(context):
            continue
        if value is None:
            raise ValueError("a continuation token has no logprob")
        total += float(value)
        n += 1
        if alts:
            best = max(alts.items(), key=lambda kv: kv[1])[0]
            greedy = greedy and best == tok
    if n == 0:
        raise ValueError("no continuation token in the echoed prompt")
    return Loglikelihood(total, n, greedy)


class _EnvelopeClient(OpenAIClient):
    """The client with one more request shape per prompt: a JSON envelope says which (echo+logprobs
    scoring of several continuations, a raw completion, or a chat message), so one retry loop serves all."""

    async def _call(self, client, prompt: str, params: GenParams) -> Completion:
        env = json.loads(prompt)
        kind = env["kind"]
        if kind == "loglikelihood":
            texts = [env["context"] + c for c in env["continuations"]]
            r = await client.completions.create(model=self.model, prompt=texts, max_tokens=1, temperature=0.0,
                                                echo=True, logprobs=1)
            choices = sorted((c.model_dump() for c in r.choices), key=lambda c: c.get("index", 0))
            if len(choices) != len(texts):
                raise ValueError(f"{len(choices)} choices for {len(texts)} prompts")
            lls = [parse_echo_logprobs(c, env["context"], t) for c, t in zip(choices, texts, strict=True)]
            return Completion(json.dumps([[x.logprob, x.n_tokens, x.is_greedy] for x in lls]), 0, 0)
        kw: dict[str, Any] = {"model": self.model, "max_tokens": params.max_tokens,
                              "temperature": params.temperature}
        if params.temperature > 0:
            kw["top_p"] = params.top_p
        if params.seed is not None:
            kw["seed"] = params.seed
        if params.stop:
            kw["stop"] = list(params.stop)[:4]
        if params.repetition_penalty is not None:  # not OpenAI's API; vLLM and `cleanroom serve` read it
            kw["extra_body"] = {"repetition_penalty": params.repetition_penalty}
        if kind == "completion":
            r = await client.completions.create(prompt=env["prompt"], **kw)
            choice = (r.choices or [None])[0]
            text = getattr(choice, "text", None)
        else:
            r = await client.chat.completions.create(messages=env["messages"], **kw)
            choice = (r.choices or [None])[0]
            message = getattr(choice, "message", None)
            if message is None:
                raise ValueError("no message in the chat response")
            text = message.content or ""  # a reasoning model out of tokens answers nothing: unparseable
        if not isinstance(text, str):
            raise ValueError("no completion text in the response")
        usage = getattr(r, "usage", None)
        return Completion(text=text, prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                          completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                          finish_reason=str(getattr(choice, "finish_reason", None) or "stop"))


class EndpointLM:
    """An OpenAI-compatible endpoint behind the `LM` interface.

    Log-likelihoods use `/v1/completions` with `echo: true, logprobs: 1, max_tokens: 1` (lm-eval's
    `local-completions` request): the server returns the prompt's token log-probabilities, and the
    continuation's tokens are those that end after the context (by `text_offset`). One HTTP request
    scores all options of a context. Generation uses `/v1/completions` (raw prompt) or, for `chat`
    requests, `/v1/chat/completions`. Requests go through `OpenAIClient`'s retry loop and bounded
    concurrency; the API key is read from the environment variable `api_key_env` and never logged.
    """

    kind = "endpoint"

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", concurrency: int = 8,
                 timeout: float = 300.0, max_retries: int = 5, backoff: float = 0.5):
        self.base_url, self.name = base_url.rstrip("/"), model
        self.identity = f"endpoint:{self.base_url}:{model}"
        self.api_key_env = api_key_env
        self._checked = False
        self.counts = RequestCounts()
        self.client = _EnvelopeClient(self.base_url, model, api_key_env=api_key_env, concurrency=concurrency,
                                      timeout=timeout, max_retries=max_retries, backoff=backoff)

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def check(self) -> None:
        """Reach `/models` and find the model there: one clear error otherwise."""
        self._checked = True
        try:
            r = httpx.get(f"{self.base_url}/models", headers=self._headers(), timeout=10.0)
        except httpx.HTTPError as e:
            raise ModelError(f"cannot reach the endpoint {self.base_url} ({type(e).__name__}): is the server "
                             f"running and the URL right (it usually ends in /v1)?") from None
        if r.status_code in (401, 403):
            raise ModelError(f"the endpoint {self.base_url} refused the API key (HTTP {r.status_code}); set "
                             f"{self.api_key_env}")
        if r.status_code != 200:
            return  # some servers have no /models; the first real request will tell
        try:
            served = [m.get("id") for m in r.json().get("data", [])]
        except (ValueError, AttributeError):
            return
        if served and self.name not in served:
            raise ModelNotServed(f"model `{self.name}` is not served at {self.base_url}; it serves: "
                                 + ", ".join(map(str, served[:10])))

    def probe(self) -> dict[str, Any]:
        """Which protocols the server offers: echo + logprobs on /v1/completions, and /v1/completions at all."""
        body = {"model": self.name, "prompt": "The capital of France is Paris", "max_tokens": 1,
                "temperature": 0, "echo": True, "logprobs": 1}
        try:
            r = httpx.post(f"{self.base_url}/completions", json=body, headers=self._headers(), timeout=60.0)
        except httpx.HTTPError as e:
            raise ModelError(f"cannot reach the endpoint {self.base_url} ({type(e).__name__})") from None
        if r.status_code != 200:
            return {"loglikelihood": False, "completion": r.status_code not in (400, 404, 405), "chat": True,
                    "probe": f"/completions answered HTTP {r.status_code}"}
        try:
            parse_echo_logprobs(r.json()["choices"][0], "The capital of France is", body["prompt"])
            return {"loglikelihood": True, "completion": True, "chat": True, "probe": "echo+logprobs ok"}
        except (ValueError, KeyError, IndexError, TypeError) as e:
            return {"loglikelihood": False, "completion": True, "chat": True, "probe": f"no prompt logprobs ({e})"}

    def _send(self, envelopes: list[str], params: GenParams) -> list[Completion]:
        if not self._checked:
            self.check()
        before = self.client.stats.sent
        try:
            return asyncio.run(self.client.agenerate(envelopes, params))
        finally:
            self.counts.forward_calls += self.client.stats.sent - before

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Loglikelihood]:
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.context, []).append(i)
        contexts = list(groups)
        envelopes = [json.dumps({"kind": "loglikelihood", "context": c,
                                 "continuations": [requests[i].continuation for i in groups[c]]}) for c in contexts]
        out: list[Loglikelihood | None] = [None] * len(requests)
        for c, done in zip(contexts, self._send(envelopes, GenParams(max_tokens=0, temperature=0.0, top_p=1.0)),
                           strict=True):
            for i, (lp, n, greedy) in zip(groups[c], json.loads(done.text), strict=True):
                out[i] = Loglikelihood(float(lp), int(n), bool(greedy))
        self.counts.loglikelihood += len(requests)
        return out  # type: ignore[return-value]

    def generate(self, requests: Sequence[GenerateRequest]) -> list[Completion]:
        """Requests with equal parameters go out together; each reply is cut at its stop strings."""
        groups: dict[GenParams, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.params, []).append(i)
        out: list[Completion | None] = [None] * len(requests)
        for params, members in groups.items():
            envelopes = [json.dumps({"kind": "chat", "messages": requests[i].messages()} if requests[i].chat
                                    else {"kind": "completion", "prompt": requests[i].context}) for i in members]
            for i, c in zip(members, self._send(envelopes, params), strict=True):
                c.text = cut_at_stop(c.text, requests[i].until)
                out[i] = c
        self.counts.generate += len(requests)
        return out  # type: ignore[return-value]

    def generate_until(self, requests: Sequence[GenerateRequest]) -> list[str]:
        return [c.text for c in self.generate(requests)]

    def apply_chat_template(self, messages: list[dict]) -> str:
        """The server applies its own template to chat requests; this rendering is for display only."""
        return plain_transcript(messages)


