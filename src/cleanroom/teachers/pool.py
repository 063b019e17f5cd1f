"""Several teachers serving one model, used as one: requests fanned out over endpoints or workers.

`TeacherPool(members)` answers `generate(prompts, params, on_result)` like a single teacher. Every member
pulls the next chunk of prompts from a shared queue as soon as it is free, so a slow endpoint takes fewer
and a fast one more. Completions reach `on_result` (the driver's request cache, `collect/teacher.py`) the
moment they exist, whichever member wrote them; the cache key does not name the endpoint or worker
(`request_key`: teacher kind, model, prompt, params), so a rerun with other endpoints or more workers finds
every finished request and a killed job repeats none. A member that fails (an endpoint still down after
its retries, a dead worker) stops; its unanswered prompts go back to the queue for the members still
working; the pool raises only when prompts are left that no member can answer.

`RayTeacher` is one member living in a Ray actor: the actor builds its own teacher with `make_teacher`
(a local model, on whichever node Ray places it) and answers one chunk per call, so a killed job loses at
most the chunks in flight. OpenAI-compatible endpoints need no Ray: an async client per endpoint in the
driver keeps many requests in flight each (serve the model with vLLM on every GPU and list the endpoints).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

from cleanroom.errors import ModelError
from cleanroom.teachers.protocol import Completion, GenParams, OnResult, Teacher


def capacity(teacher: Any) -> int:
    """Prompts a member usefully takes at once: an endpoint's concurrency, a local model's batch."""
    return max(1, int(getattr(teacher, "concurrency", 0) or getattr(teacher, "batch_size", 0) or 16))


class TeacherPool:
    """Members that serve the same model (same teacher kind and model name), as one teacher."""

    def __init__(self, members: Sequence[Teacher]) -> None:
        if not members:
            raise ModelError("a teacher pool needs at least one teacher")
        served = {(m.name, m.model) for m in members}
        if len(served) != 1:
            raise ModelError("the teachers of a pool must serve one model; got "
                             + ", ".join(f"{n}:{m}" for n, m in sorted(served)))
        self.members = list(members)
        self.name, self.model = self.members[0].name, self.members[0].model
        self.concurrency = sum(capacity(m) for m in self.members)  # what the driver should hand over at once

    def generate(self, prompts: Sequence[str], params: GenParams,
                 on_result: OnResult | None = None) -> list[Completion]:
        results: list[Completion | None] = [None] * len(prompts)
        queue: deque[int] = deque(range(len(prompts)))
        cond = threading.Condition()
        state = {"in_flight": 0}
        errors: list[str] = []
        unexpected: list[BaseException] = []  # a bug, not a teacher failure: re-raised as it is

        def next_chunk(size: int) -> list[int]:
            """Up to `size` prompts; [] once the queue is empty and nothing in flight can come back to it."""
            with cond:
                while not queue and state["in_flight"]:
                    cond.wait()
                chunk = [queue.popleft() for _ in range(min(size, len(queue)))]
                state["in_flight"] += bool(chunk)
                return chunk

        def work(member: Teacher) -> None:
            size = capacity(member)
            while chunk := next_chunk(size):
                answered: set[int] = set()

                def got(j: int, c: Completion, chunk: list[int] = chunk, answered: set[int] = answered) -> None:
                    results[chunk[j]] = c
                    answered.add(j)
                    if on_result is not None:
                        on_result(chunk[j], c)

                failed = None
                try:
                    out = member.generate([prompts[i] for i in chunk], params, on_result=got)
                    for j, c in enumerate(out):  # members that do not call on_result
                        if j not in answered:
                            got(j, c)
                except ModelError as e:
                    failed = str(e)
                except Exception as e:  # never leave the other members waiting on this chunk
                    failed = f"{type(e).__name__}: {e}"
                    unexpected.append(e)
                with cond:
                    state["in_flight"] -= 1
                    if failed is not None:
                        errors.append(failed)
                        queue.extendleft(reversed([i for j, i in enumerate(chunk) if j not in answered]))
                    cond.notify_all()
                if failed is not None:
                    return  # this member is done; the others take its prompts

        threads = [threading.Thread(target=work, args=(m,), name=f"teacher-{k}", daemon=True)
                   for k, m in enumerate(self.members)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        missing = sum(r is None for r in results)
        if missing and unexpected:
            raise unexpected[0]
        if missing:
            raise ModelError(f"{errors[0] if errors else 'the teacher pool stopped'} — every teacher of the pool "
                             f"failed ({len(prompts) - missing} of {len(prompts)} requests finished and were kept)")
        return results  # type: ignore[return-value]


class _TeacherActor:
    """The body of a Ray actor: one teacher, built where the actor runs."""

    def __init__(self, kind: str, model: str | None, kwargs: dict[str, Any]) -> None:
        from cleanroom.teachers import make_teacher

        self.teacher = make_teacher(kind, model, **kwargs)

    def served(self) -> tuple[str, str]:
        return self.teacher.name, self.teacher.model

    def generate(self, prompts: list[str], params: GenParams) -> list[Completion]:
        return self.teacher.generate(prompts, params)


class RayTeacher:
    """A pool member in a Ray actor (`ray` must be initialised: `cleanroom.ray_cluster.ray_session`)."""

    def __init__(self, ray: Any, kind: str, model: str | None, *, batch_size: int = 64, num_cpus: float = 1,
                 num_gpus: float = 0, **kwargs: Any) -> None:
        self._ray = ray
        self.batch_size = batch_size
        actor = ray.remote(_TeacherActor).options(num_cpus=num_cpus, num_gpus=num_gpus)
        self.actor = actor.remote(kind, model, {"batch_size": batch_size, **kwargs} if kind == "transformers"
                                  else kwargs)
        try:
            self.name, self.model = ray.get(self.actor.served.remote())
        except ray.exceptions.RayError as e:
            raise ModelError(f"a Ray teacher worker could not start: {_first_line(e)}") from None

    def generate(self, prompts: Sequence[str], params: GenParams,
                 on_result: OnResult | None = None) -> list[Completion]:
        try:
            out = self._ray.get(self.actor.generate.remote(list(prompts), params))
        except self._ray.exceptions.RayError as e:
            raise ModelError(f"a Ray teacher worker failed: {_first_line(e)}") from None
        if on_result is not None:
            for i, c in enumerate(out):
                on_result(i, c)
        return out


def _first_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return lines[-1][:300] if lines else type(e).__name__
