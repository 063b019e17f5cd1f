"""Models behind the audit: a local causal LM or an OpenAI-compatible endpoint, and the request cache.

Every backend answers three kinds of request (tasks never see which model, or how):
- `loglikelihood(requests)`: log P(continuation | context) (`cleanroom.evals.requests`);
- `complete(requests)`: greedy text continuation of a raw prompt until a stop string;
- `chat(prompts, max_tokens)`: the model's reply to one user message (its chat template applies).

**Local** (`LocalModel`): a Hugging Face causal LM found by `teachers.transformers_local.resolve_model`
(a directory, an offline hub snapshot directory, a `.gguf` file through `gguf_file=`, the `smollm2`
alias, or a cleanroom export `RUN/models/<recipe>`). Log-likelihoods come from `evals.adapters.HFAdapter`
with its `packed` strategy: each prompt runs once for all of its options, batched. Tokenization follows
lm-evaluation-harness: a BOS token is prepended only if the tokenizer adds one by itself (SmolLM2's
does not), except for cleanroom's own models, which were trained with `<|bos|>` before every document.
Generation uses `model.generate` (KV cache, greedy, stop strings). The model loads on first use, so a
fully cached rerun never loads it.

**Endpoint** (`EndpointModel`): any OpenAI-compatible server. Log-likelihoods use `/v1/completions` with
`echo: true, logprobs: 1, max_tokens: 1` (lm-eval's `local-completions` request): the server returns the
prompt's token log-probabilities, and the continuation's tokens are those that end after the context
(by `text_offset`). One HTTP request scores all options of an item. Generation uses `/v1/completions`
(raw prompt) or `/v1/chat/completions`. Requests go through `teachers.openai_compat.OpenAITeacher`'s
retry loop (429/5xx/timeouts retried with backoff, other 4xx fail at once) and bounded concurrency.
The API key is read from the environment variable named by `api_key_env` and never logged.

**Cache** (`CachedModel`): every answered request is committed to the SQLite request cache
(`teachers.cache.RequestCache`) the moment it exists, keyed by (request kind, model identity, request,
parameters). A rerun answers finished requests from the cache and sends only the rest: an interrupted
audit resumes, and an identical second call sends no request and does no model work.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cleanroom.audit.errors import AuditError, AuditInputError
from cleanroom.evals.requests import GenerateRequest, Loglikelihood, LoglikelihoodRequest, cut_at_stop
from cleanroom.teachers.cache import RequestCache
from cleanroom.teachers.protocol import Completion, GenParams, TeacherError, request_key

OnResult = Callable[[int, Any], None]
_PLAIN_HEAD = {"llama", "mistral", "qwen2", "qwen3"}  # logits = lm_head(last hidden state), nothing else
LL_PARAMS = GenParams(max_tokens=0, temperature=0.0, top_p=1.0)


def _gen_params(max_tokens: int, until: Sequence[str] = ()) -> GenParams:
    return GenParams(max_tokens=max_tokens, temperature=0.0, top_p=1.0, stop=tuple(until))


# ---------------------------------------------------------------------------------------------- local

def _bos_convention(tok: Any) -> int | None:
    """The BOS id to prepend: what the tokenizer adds by itself, else cleanroom's `<|bos|>`, else none."""
    with_special = tok("a", add_special_tokens=True)["input_ids"]
    without = tok("a", add_special_tokens=False)["input_ids"]
    if len(with_special) > len(without) and with_special[-len(without):] == without:
        return with_special[0]
    i = tok.convert_tokens_to_ids("<|bos|>")
    return i if isinstance(i, int) and i >= 0 and i != tok.unk_token_id else None


def _fingerprint(path: Path) -> str:
    """Cheap identity of a model on disk: file names, sizes and modification times."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:12]


class LocalModel:
    """A local Hugging Face causal LM (see the module doc); loads lazily."""

    kind = "local"

    def __init__(self, model: str, *, dtype: str = "float32", batch_size: int = 32, gen_batch_size: int = 32,
                 threads: int = 0, device: str = "cpu"):
        from cleanroom.teachers.transformers_local import resolve_model

        try:
            self.spec = resolve_model(model)
        except TeacherError as e:
            raise (AuditInputError if "not found" in str(e) else AuditError)(str(e)) from None
        target = self.spec.directory / self.spec.gguf_file if self.spec.gguf_file else self.spec.directory
        self.name = self.spec.name
        self.identity = f"local:{self.spec.name}@{_fingerprint(target)}:{dtype}"
        self.dtype, self.batch_size, self.gen_batch_size = dtype, batch_size, gen_batch_size
        self.threads, self.device = threads, device
        self._adapter = None
        self.model_calls = 0  # forward passes + generate calls actually run
        self.load_seconds = 0.0

    def has_chat_template(self) -> bool:
        self._ensure()
        return bool(getattr(self.tok, "chat_template", None))

    def _ensure(self) -> None:
        if self._adapter is not None:
            return
        from cleanroom.evals.adapters import Codec, HFAdapter
        from cleanroom.teachers.transformers_local import load_model

        t0 = time.perf_counter()
        try:
            self.lm, self.tok = load_model(self.spec, self.dtype, self.threads)
        except TeacherError as e:
            raise AuditError(str(e)) from None
        self.lm.to(self.device)
        self._adapter = HFAdapter(self.lm, self.tok, device=self.device, batch_size=self.batch_size,
                                  strategy="packed")
        base = self._adapter.codec
        self._adapter.codec = Codec(self.tok, _bos_convention(self.tok), base.eos_id, base.pad_id)
        self.load_seconds = time.perf_counter() - t0

    def probe(self) -> dict[str, Any]:
        return {"loglikelihood": True, "completion": True, "chat": True}

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest], on_result: OnResult) -> None:
        """Items whose options are all one token (" A".." D") are scored from one context pass each
        (`_next_token`); the rest go to HFAdapter's packed scorer (one pass per item for all options)."""
        self._ensure()
        encoded = self._adapter.encode_requests(list(requests))
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (ctx, _) in enumerate(encoded):
            groups.setdefault(tuple(ctx), []).append(i)
        single = [g for g in groups if all(len(encoded[i][1]) == 1 for i in groups[g])]
        rest = [i for g in groups if g not in set(single) for i in groups[g]]
        if single:
            self._next_token(single, groups, encoded, on_result)
        if rest:
            before = self._adapter.counts.forward_calls
            out = self._adapter.loglikelihood([requests[i] for i in rest])
            self.model_calls += self._adapter.counts.forward_calls - before
            for i, r in zip(rest, out, strict=True):
                on_result(i, r)

    def _next_token(self, contexts: list[tuple[int, ...]], groups: dict, encoded: list, on_result: OnResult) -> None:
        """Log-probabilities of one-token continuations: each context runs once (right-padded, plain causal
        attention: padding never reaches a real position), and only its last position goes through the
        vocabulary head."""
        import torch

        pad, room = self._adapter.codec.pad_id, self._adapter.max_len - 1
        plain = getattr(self.lm.config, "model_type", "") in _PLAIN_HEAD and hasattr(self.lm, "model")
        order = sorted(contexts, key=len, reverse=True)
        for s in range(0, len(order), self.batch_size):
            batch = [list(c)[-room:] for c in order[s:s + self.batch_size]]
            T = max(len(c) for c in batch)
            ids = torch.full((len(batch), T), pad, dtype=torch.long)
            for b, c in enumerate(batch):
                ids[b, :len(c)] = torch.tensor(c)
            rows = torch.arange(len(batch))
            last = torch.tensor([len(c) - 1 for c in batch])
            with torch.inference_mode():
                if plain:  # the head only where it is read (it is the largest matmul of a small model)
                    hidden = self.lm.model(input_ids=ids.to(self.device), use_cache=False).last_hidden_state
                    logits = self.lm.lm_head(hidden[rows, last]).float()
                else:
                    logits = self.lm(input_ids=ids.to(self.device), use_cache=False).logits[rows, last].float()
            self.model_calls += 1
            logp = torch.log_softmax(logits, dim=-1).cpu()
            best = logp.argmax(-1)
            for b, ctx in enumerate(order[s:s + self.batch_size]):
                for i in groups[ctx]:
                    t = encoded[i][1][0]
                    on_result(i, Loglikelihood(float(logp[b, t]), 1, bool(best[b] == t)))

    def _generate(self, texts: list[str], until: Sequence[str], max_tokens: int, add_bos: bool) -> list[str]:
        import torch

        codec = self._adapter.codec
        bos = [codec.bos_id] if add_bos and codec.bos_id is not None else []
        seqs = [bos + ids for ids in codec.encode_batch(texts)]
        T = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), T), codec.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), T), dtype=torch.long)
        for b, s in enumerate(seqs):  # left padding: every row's last prompt token sits at T-1
            ids[b, T - len(s):] = torch.tensor(s)
            mask[b, T - len(s):] = 1
        kw: dict[str, Any] = {"max_new_tokens": max_tokens, "do_sample": False, "pad_token_id": codec.pad_id}
        if until:
            kw.update(stop_strings=list(until), tokenizer=self.tok)
        with torch.inference_mode():
            out = self.lm.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kw)
        self.model_calls += 1
        texts_out = []
        eos = {codec.eos_id, *(_as_list(getattr(self.lm.generation_config, "eos_token_id", None)))}
        for row in out[:, T:].tolist():
            cut = next((k for k, t in enumerate(row) if t in eos), len(row))
            texts_out.append(cut_at_stop(codec.decode(row[:cut]), until))
        return texts_out

    def _batched(self, texts: list[str], until: Sequence[str], max_tokens: int, add_bos: bool,
                 on_result: OnResult) -> None:
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for s in range(0, len(order), self.gen_batch_size):
            idx = order[s:s + self.gen_batch_size]
            for i, t in zip(idx, self._generate([texts[i] for i in idx], until, max_tokens, add_bos), strict=True):
                on_result(i, t)

    def complete(self, requests: Sequence[GenerateRequest], on_result: OnResult) -> None:
        self._ensure()
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.until, r.max_tokens), []).append(i)
        for (until, max_tokens), members in groups.items():
            self._batched([requests[i].context for i in members], until, max_tokens, True,
                          lambda j, t, m=members: on_result(m[j], t))

    def chat(self, prompts: Sequence[str], max_tokens: int, on_result: OnResult) -> None:
        from cleanroom.teachers.transformers_local import render_chat

        self._ensure()
        texts = [render_chat(self.tok, [{"role": "user", "content": p}]) for p in prompts]
        self._batched(texts, (), max_tokens, False, on_result)


def _as_list(x: Any) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [] if x is None else [x]


# ---------------------------------------------------------------------------------------------- endpoint

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


def _client_class():
    """`OpenAITeacher` with a `_call` that also sends echo/logprobs and chat requests (one retry loop)."""
    from cleanroom.teachers.openai_compat import OpenAITeacher

    class AuditClient(OpenAITeacher):
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
                text = json.dumps([[x.logprob, x.n_tokens, x.is_greedy] for x in lls])
                return Completion(text=text, prompt_tokens=0, completion_tokens=0)
            kw: dict[str, Any] = {"model": self.model, "max_tokens": params.max_tokens, "temperature": 0.0}
            if params.stop:
                kw["stop"] = list(params.stop)[:4]
            if kind == "completion":
                r = await client.completions.create(prompt=env["prompt"], **kw)
                choice = (r.choices or [None])[0]
                text = getattr(choice, "text", None)
            else:
                r = await client.chat.completions.create(messages=[{"role": "user", "content": env["prompt"]}],
                                                         **kw)
                choice = (r.choices or [None])[0]
                message = getattr(choice, "message", None)
                if message is None:
                    raise ValueError("no message in the chat response")
                text = message.content or ""  # a reasoning model out of tokens answers nothing: unparseable
            if not isinstance(text, str):
                raise ValueError("no completion text in the response")
            return Completion(text=text, prompt_tokens=0, completion_tokens=0,
                              finish_reason=str(getattr(choice, "finish_reason", None) or "stop"))

    return AuditClient


class EndpointModel:
    """An OpenAI-compatible endpoint (see the module doc)."""

    kind = "endpoint"

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", concurrency: int = 8,
                 timeout: float = 300.0, max_retries: int = 5, backoff: float = 0.5):
        self.base_url, self.name = base_url.rstrip("/"), model
        self.identity = f"endpoint:{self.base_url}:{model}"
        self.api_key_env = api_key_env
        self._checked = False
        self.client = _client_class()(self.base_url, model, api_key_env=api_key_env, concurrency=concurrency,
                                      timeout=timeout, max_retries=max_retries, backoff=backoff)

    @property
    def model_calls(self) -> int:
        return self.client.stats.sent

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def check(self) -> None:
        """Reach `/models` and find the model there: one clear error otherwise."""
        import httpx

        self._checked = True
        try:
            r = httpx.get(f"{self.base_url}/models", headers=self._headers(), timeout=10.0)
        except httpx.HTTPError as e:
            raise AuditError(f"cannot reach the endpoint {self.base_url} ({type(e).__name__}): is the server "
                             f"running and the URL right (it usually ends in /v1)?") from None
        if r.status_code in (401, 403):
            raise AuditError(f"the endpoint {self.base_url} refused the API key (HTTP {r.status_code}); set "
                             f"{self.api_key_env}")
        if r.status_code != 200:
            return  # some servers have no /models; the first real request will tell
        try:
            served = [m.get("id") for m in r.json().get("data", [])]
        except (ValueError, AttributeError):
            return
        if served and self.name not in served:
            raise AuditInputError(f"model `{self.name}` is not served at {self.base_url}; it serves: "
                                  + ", ".join(map(str, served[:10])))

    def probe(self) -> dict[str, Any]:
        """Which protocols the server offers: echo + logprobs on /v1/completions, and /v1/completions at all."""
        import httpx

        body = {"model": self.name, "prompt": "The capital of France is Paris", "max_tokens": 1,
                "temperature": 0, "echo": True, "logprobs": 1}
        try:
            r = httpx.post(f"{self.base_url}/completions", json=body, headers=self._headers(), timeout=60.0)
        except httpx.HTTPError as e:
            raise AuditError(f"cannot reach the endpoint {self.base_url} ({type(e).__name__})") from None
        if r.status_code != 200:
            return {"loglikelihood": False, "completion": r.status_code not in (400, 404, 405), "chat": True,
                    "probe": f"/completions answered HTTP {r.status_code}"}
        try:
            parse_echo_logprobs(r.json()["choices"][0], "The capital of France is", body["prompt"])
            return {"loglikelihood": True, "completion": True, "chat": True, "probe": "echo+logprobs ok"}
        except (ValueError, KeyError, IndexError, TypeError) as e:
            return {"loglikelihood": False, "completion": True, "chat": True, "probe": f"no prompt logprobs ({e})"}

    def _send(self, envelopes: list[str], params: GenParams, on_result: Callable[[int, str], None]) -> None:
        if not self._checked:
            self.check()
        try:
            asyncio.run(self.client.agenerate(envelopes, params, lambda i, c: on_result(i, c.text)))
        except TeacherError as e:
            raise AuditError(str(e)) from None

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest], on_result: OnResult) -> None:
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.context, []).append(i)
        contexts = list(groups)
        envelopes = [json.dumps({"kind": "loglikelihood", "context": c,
                                 "continuations": [requests[i].continuation for i in groups[c]]}) for c in contexts]

        def done(g: int, text: str) -> None:
            for i, (lp, n, greedy) in zip(groups[contexts[g]], json.loads(text), strict=True):
                on_result(i, Loglikelihood(float(lp), int(n), bool(greedy)))

        self._send(envelopes, LL_PARAMS, done)

    def complete(self, requests: Sequence[GenerateRequest], on_result: OnResult) -> None:
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.until, r.max_tokens), []).append(i)
        for (until, max_tokens), members in groups.items():
            envelopes = [json.dumps({"kind": "completion", "prompt": requests[i].context}) for i in members]
            self._send(envelopes, _gen_params(max_tokens, until),
                       lambda j, t, m=members, u=until: on_result(m[j], cut_at_stop(t, u)))

    def chat(self, prompts: Sequence[str], max_tokens: int, on_result: OnResult) -> None:
        envelopes = [json.dumps({"kind": "chat", "prompt": p}) for p in prompts]
        self._send(envelopes, _gen_params(max_tokens), on_result)


# ---------------------------------------------------------------------------------------------- cache

class CachedModel:
    """Answers from the request cache first; what is missing goes to the backend, in chunks, and is
    committed to the cache as each answer arrives (see the module doc)."""

    def __init__(self, backend: LocalModel | EndpointModel, cache: RequestCache, chunk: int = 64):
        self.backend, self.cache, self.chunk = backend, cache, chunk
        self.counts = {"cached": 0, "computed": 0}

    def _key(self, kind: str, prompt: str, params: GenParams) -> str:
        return request_key(f"audit-{kind}", self.backend.identity, prompt, params)

    def _run(self, kind: str, prompts: list[str], params: list[GenParams], send: Callable,
             decode: Callable[[str], Any], encode: Callable[[Any], str], progress: Callable[[int], None],
             group: Callable[[int], str] | None = None) -> list:
        """Answers in request order. Missing requests go out longest first (less padding) in chunks of
        about `chunk`, never splitting a `group` (the options of one item share one prompt pass)."""
        keys = [self._key(kind, p, q) for p, q in zip(prompts, params, strict=True)]
        found = self.cache.get_many(list(dict.fromkeys(keys)))
        out: list[Any] = [None] * len(keys)
        missing = []
        for i, k in enumerate(keys):
            if k in found:
                out[i] = decode(found[k].text)
            else:
                missing.append(i)
        self.counts["cached"] += len(keys) - len(missing)
        progress(len(keys) - len(missing))
        group = group or prompts.__getitem__
        missing.sort(key=lambda i: (-len(group(i)), group(i)))
        chunks: list[list[int]] = []
        for i in missing:
            if not chunks or (len(chunks[-1]) >= self.chunk and group(chunks[-1][-1]) != group(i)):
                chunks.append([])
            chunks[-1].append(i)
        for part in chunks:

            def on_result(j: int, value: Any, part=part) -> None:
                i = part[j]
                out[i] = value
                self.cache.put(f"audit-{kind}", self.backend.identity, prompts[i], params[i],
                               Completion(encode(value), 0, 0))
                self.counts["computed"] += 1

            send(part, on_result)
            progress(len(part))
        return out

    def loglikelihood(self, requests: list[LoglikelihoodRequest], progress: Callable[[int], None]) -> list:
        prompts = [json.dumps([r.context, r.continuation], ensure_ascii=False) for r in requests]
        return self._run("loglikelihood", prompts, [LL_PARAMS] * len(requests),
                         lambda part, cb: self.backend.loglikelihood([requests[i] for i in part], cb),
                         lambda t: Loglikelihood(*json.loads(t)),
                         lambda v: json.dumps([v.logprob, v.n_tokens, v.is_greedy]), progress,
                         group=lambda i: requests[i].context)

    def complete(self, requests: list[GenerateRequest], progress: Callable[[int], None]) -> list[str]:
        return self._run("completion", [r.context for r in requests],
                         [_gen_params(r.max_tokens, r.until) for r in requests],
                         lambda part, cb: self.backend.complete([requests[i] for i in part], cb),
                         lambda t: t, lambda v: v, progress)

    def chat(self, prompts: list[str], max_tokens: int, progress: Callable[[int], None]) -> list[str]:
        return self._run("chat", prompts, [_gen_params(max_tokens)] * len(prompts),
                         lambda part, cb: self.backend.chat([prompts[i] for i in part], max_tokens, cb),
                         lambda t: t, lambda v: v, progress)
