"""Test helpers for teachers and `cleanroom serve`: a tiny HF model and a scriptable fake endpoint."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TRAIN_TEXT = [
    "The river runs to the sea. A kite flies over the garden. Students learn about volcanoes and rocks.",
    "Exercise 1: What is two plus three? Solution: two plus three is five.",
    "Q: Why is the sky blue? A: Sunlight scatters in the air, and blue light scatters the most.",
] * 20


def make_tiny_model(directory: Path, vocab: int = 300) -> Path:
    """A random 2-layer LlamaForCausalLM + a trained byte-level BPE tokenizer, saved HF-style."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TRAIN_TEXT, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=fast.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                      eos_token_id=fast.eos_token_id, bos_token_id=fast.bos_token_id,
                      pad_token_id=fast.pad_token_id)
    model = LlamaForCausalLM(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeEndpoint:
    """A stdlib OpenAI-ish server whose answers a test scripts: `behave(n, body) -> (kind, arg)`.

    kinds: "ok" (arg = text), "status" (arg = HTTP code), "malformed", "hang" (arg = seconds).
    Records every request body and every prompt it answered with 200 (`answered`), and the
    Authorization header it saw. Bounded: it stops on `close()` (or context exit).
    """

    def __init__(self, behave: Callable[[int, dict], tuple[str, object]] | None = None, delay: float = 0.0):
        self.behave = behave or (lambda n, body: ("ok", None))
        self.delay = delay
        self.requests: list[dict] = []
        self.answered: list[str] = []
        self.auth: list[str] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def _handler(self):
        ep = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a) -> None:
                pass

            def _json(self, code: int, obj) -> None:
                data = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout, killed)
                    pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with ep._lock:
                    n = len(ep.requests)
                    ep.requests.append(body)
                    ep.auth.append(self.headers.get("Authorization", ""))
                kind, arg = ep.behave(n, body)
                if ep.delay:
                    time.sleep(ep.delay)
                if kind == "status":
                    self._json(int(arg), {"error": {"message": f"scripted {arg}", "type": "test"}})
                elif kind == "malformed":
                    self._json(200, b'{"choices": [ {"message": ')
                elif kind == "hang":
                    time.sleep(float(arg))
                    self._json(200, {"choices": []})
                else:
                    prompt = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
                    text = arg if isinstance(arg, str) else f"Answer about: {prompt[-200:]} " * 3
                    with ep._lock:
                        ep.answered.append(prompt)
                    self._json(200, {
                        "id": f"x{n}", "object": "chat.completion", "created": 0, "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": text}}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split()),
                                  "total_tokens": 10 + len(text.split())}})

        return H

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> FakeEndpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
