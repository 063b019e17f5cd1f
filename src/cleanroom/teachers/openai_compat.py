"""A teacher behind any OpenAI-compatible endpoint (vLLM, llama.cpp server, Ollama, OpenAI, `cleanroom serve`).

Uses the official `openai` SDK's `AsyncOpenAI` with our own retry loop (the SDK's is switched off) so
that every failure kind is handled the same visible way: 429, 5xx, timeouts, dropped connections and
malformed response bodies are retried with exponential backoff and jitter (honouring `Retry-After`);
other 4xx answers (bad request, auth, unknown model) fail at once, since retrying cannot fix them.
Concurrency is bounded by a semaphore. The API key is read from the environment only — it is handed
to the SDK client and never logged, stored, or put in an error message.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import openai

from cleanroom.teachers.protocol import Completion, GenParams, OnResult, TeacherError
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


class OpenAITeacher:
    """Async, bounded-concurrency client for `/v1/chat/completions` (mode "chat") or `/v1/completions`."""

    name = "openai"

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", mode: str = "chat",
                 concurrency: int = 8, timeout: float = 120.0, max_retries: int = 5, backoff: float = 0.5,
                 backoff_max: float = 30.0, system_prompt: str | None = None):
        if mode not in ("chat", "completion"):
            raise TeacherError(f"teacher mode must be `chat` or `completion`, got `{mode}`")
        if concurrency < 1:
            raise TeacherError(f"--concurrency must be >= 1, got {concurrency}")
        self.base_url, self.model, self.mode = base_url, model, mode
        self.api_key_env = api_key_env
        self.concurrency, self.timeout = concurrency, timeout
        self.max_retries, self.backoff, self.backoff_max = max_retries, backoff, backoff_max
        self.system_prompt = system_prompt
        self.stats = RequestStats()

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAITeacher(base_url={self.base_url!r}, model={self.model!r}, mode={self.mode!r})"

    # ---------------------------------------------------------------- public API
    def generate(self, prompts: Sequence[str], params: GenParams,
                 on_result: OnResult | None = None) -> list[Completion]:
        return asyncio.run(self.agenerate(prompts, params, on_result))

    async def agenerate(self, prompts: Sequence[str], params: GenParams,
                        on_result: OnResult | None = None) -> list[Completion]:
        """Answer every prompt; on a fatal error, finish what is in flight, then raise TeacherError."""
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
                except TeacherError as e:
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
            raise TeacherError(f"{errors[0]} ({done} of {len(prompts)} requests in this batch finished "
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
                    raise TeacherError(f"teacher endpoint {self.base_url} refused the request: HTTP {code} "
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
        raise TeacherError(f"teacher endpoint {self.base_url} failed after {self.max_retries + 1} attempts: "
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
