"""A run's persistence in Redis: its definition, checkpoint, answer log and counters.

Beside the vote book (which owns the contests), this owns everything else a run keeps, so the run
loop holds no state that a new orchestrator could not read back: resume needs Redis alone.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from typing import Any

import redis
from pydantic import BaseModel

from maker_workers import keys
from maker_workers.domains.base import JSON, canonical
from maker_workers.errors import ConfigError, LeaseLost, StoreError, store_errors
from maker_workers.keys import StepKeys

_COMMIT = resources.files("maker_workers").joinpath("lua/commit_step.lua").read_text()
_LEASE = resources.files("maker_workers").joinpath("lua/lease.lua").read_text()
_FENCED = resources.files("maker_workers").joinpath("lua/fenced.lua").read_text()


class Checkpoint(BaseModel):
    step: int  # the next step to decide
    state: JSON
    previous: JSON = None  # the winning answer of the step before


class RunStore:
    """`generation` is the lease this store's orchestrator holds (None until `hold`, and for a store that drives no
    run, such as a calibration's): once set, every run-level write carries it and is refused in Redis when another
    orchestrator has taken the run since (LeaseLost)."""

    def __init__(self, client: redis.Redis, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.generation: int | None = None
        self._commit = client.register_script(_COMMIT)
        self._lease = client.register_script(_LEASE)
        self._fence = client.register_script(_FENCED)

    def _write(self, doing: str, op: str, *args: str | int | float) -> None:
        """A write to the run's meta, fenced by the lease's generation once this store holds one."""
        with store_errors(doing):
            if self.generation is None:
                meta = keys.meta(self.run_id)
                if op == "hset":
                    self.client.hset(meta, mapping=dict(zip(args[::2], args[1::2], strict=True)))
                elif op == "hsetnx":
                    self.client.hsetnx(meta, str(args[0]), args[1])
                else:
                    self.client.hdel(meta, *map(str, args))
                return
            written = self._fence(keys=[keys.meta(self.run_id)], args=[self.generation, op, *args])
        if written != 1:
            raise self._lost()

    def _lost(self, holder: str = "") -> LeaseLost:
        by = f" ({holder.split(' #')[0]})" if holder else ""
        return LeaseLost(
            f"run {self.run_id} was taken over by another orchestrator{by} while this one was away (frozen, paused "
            "or cut off from Redis past its lease): that one drives it now, and this one stopped without writing "
            f"anything more. Follow the run with `maker status {self.run_id}`"
        )

    def exists(self) -> bool:
        with store_errors(f"looking up run {self.run_id}"):
            return self.client.exists(keys.meta(self.run_id)) == 1

    def start(self, task: dict[str, Any], config: dict[str, Any]) -> None:
        """Record a new run, or check that a resumed one is the same task with the same k."""
        meta = keys.meta(self.run_id)
        with store_errors(f"starting run {self.run_id}"), self.client.pipeline(transaction=True) as pipe:
            # One transaction: a run never exists with its task but without the k it votes with.
            pipe.hsetnx(meta, "task", canonical(task)).hsetnx(meta, "config", json.dumps(config))
            pipe.hsetnx(meta, "started", time.time()).hmget(meta, ["task", "config"])
            pipe.hget(keys.checkpoint(self.run_id), "step")
            *_, stored, at = pipe.execute()
        self._check_same(task, config, stored)
        self._write(f"starting run {self.run_id}", "hdel", "ended", "failure", "stop")  # a resumed run goes again
        # Where and when this attempt began: `maker status` measures steps/s over it, not the whole run.
        self._write(f"starting run {self.run_id}", "hset", "resumed", time.time(), "resumed_step", int(at or 0))

    def _check_same(self, task: dict[str, Any], config: dict[str, Any], stored: list[bytes]) -> None:
        stored_task = json.loads(stored[0])
        if stored_task != json.loads(canonical(task)):
            raise ConfigError(
                f"run {self.run_id} is a different task ({_describe(stored_task)}), not {_describe(task)}: "
                "resume it with the same task and options it started with"
            )
        stored_k = json.loads(stored[1] or "{}").get("k")
        if stored_k is not None and stored_k != config.get("k"):
            raise ConfigError(
                f"run {self.run_id} votes with k={stored_k}; resume it with --k {stored_k} "
                "(a different k would change how its remaining steps are decided)"
            )

    def hold(self, holder: str, ttl_s: float) -> None:
        """Take or renew the run's lease: one orchestrator drives a run. The first hold takes a new generation
        (fencing off every earlier orchestrator's writes); later ones keep it, and raise LeaseLost once another
        orchestrator has taken the run. Also the run loop's write every few seconds, so a full Redis fails the
        run with that reason instead of leaving it waiting on workers that cannot record."""
        mine = "" if self.generation is None else self.generation
        with store_errors(f"renewing the lease of run {self.run_id}"):
            got, generation = self._lease(
                keys=[keys.lease(self.run_id), keys.meta(self.run_id)],
                args=[holder, round(ttl_s * 1000), "hold", mine],
            )
        got = got.decode() if isinstance(got, bytes) else str(got)
        if got == holder:
            self.generation = int(generation)
            return
        if self.generation is not None:
            raise self._lost(got)
        raise ConfigError(
            f"run {self.run_id} is driven by another orchestrator ({got.split(' #')[0]}); "
            f"stop that one, or wait until its lease lapses ({ttl_s:.0f} s after it last renewed)"
        )

    def raise_k(self, k: int) -> None:
        """Keep a k that adaptive k raised: a resumed run goes on at it, never below."""
        self._write(f"raising the k of run {self.run_id}", "hset", "k_raised", k)

    def raised_k(self) -> int | None:
        with store_errors(f"reading run {self.run_id}"):
            raw = self.client.hget(keys.meta(self.run_id), "k_raised")
        return None if raw is None else int(raw)

    def release(self, holder: str) -> None:
        with store_errors(f"releasing the lease of run {self.run_id}"):
            self._lease(keys=[keys.lease(self.run_id), keys.meta(self.run_id)], args=[holder, 0, "release", ""])

    def finish(self, failure: str | None) -> None:
        """Mark the run ended (done, or failed with the reason), for anyone following it."""
        self._write(f"finishing run {self.run_id}", "hset", "ended", time.time(), "failure", failure or "")

    def cancel(self) -> None:
        """Ask the run's orchestrator, wherever it is, to stop sending samples and end the run; the
        workers skip its queued samples from now on."""
        with store_errors(f"cancelling run {self.run_id}"):
            self.client.hset(keys.meta(self.run_id), "stop", "cancelled")

    def stop(self, reason: str) -> None:
        """Tell the workers the run sends no more samples: the queued ones are skipped, not paid for."""
        self._write(f"stopping run {self.run_id}", "hsetnx", "stop", reason)

    def stopped(self) -> str | None:
        """Why the run stopped sending samples (\"cancelled\" when someone cancelled it), or None."""
        with store_errors(f"reading run {self.run_id}"):
            raw = self.client.hget(keys.meta(self.run_id), "stop")
        return None if raw is None else raw.decode()

    def finished(self) -> str | None:
        """None while the run goes; once it ended, its failure ("" when it reached its done condition)."""
        with store_errors(f"reading run {self.run_id}"):
            ended, failure = self.client.hmget(keys.meta(self.run_id), ["ended", "failure"])
        return None if ended is None else (failure or b"").decode()

    def semantic_rule(self) -> dict[str, Any] | None:
        """The join rule measured on answer.meanings as the run began (orchestrator/engine/meanings.py), if any."""
        with store_errors(f"reading run {self.run_id}"):
            raw = self.client.hget(keys.meta(self.run_id), "semantic_rule")
        return None if raw is None else json.loads(raw)

    def set_semantic_rule(self, rule: str) -> None:
        """Written before the first sample is sent: every worker reads it with the task. Never replaced: workers
        may already hold the first one."""
        self._write(f"starting run {self.run_id}", "hsetnx", "semantic_rule", rule)

    def task(self) -> dict[str, Any] | None:
        """The stored task definition (what workers read)."""
        with store_errors(f"reading the task of run {self.run_id}"):
            raw = self.client.hget(keys.meta(self.run_id), "task")
        return None if raw is None else json.loads(raw)

    def saved(self) -> Checkpoint | None:
        """The last checkpoint, if the run has committed a step."""
        with store_errors(f"reading the checkpoint of run {self.run_id}"):
            raw = self.client.hgetall(keys.checkpoint(self.run_id))
        if not raw:
            return None
        return Checkpoint(
            step=int(raw[b"step"]), state=json.loads(raw[b"state"]), previous=json.loads(raw[b"previous"])
        )

    def commit(
        self,
        step: int,
        next_state: JSON,
        answer: JSON,
        contest: StepKeys,
        winner: str,
        keep: bool = False,
        rounds: int = 0,
        samples: int = 0,
        linger_s: int = 60,
    ) -> None:
        """Checkpoint step `step`'s result and log its answer, once, even if this call is repeated;
        the winner's votes are credited to the models that cast them, the step's `rounds` are counted, and
        the contest's votes are dropped and its status lingers `linger_s` (unless `keep`); `samples` (the
        contest's) are counted as committed, so the rest of the run's samples are what it wasted."""
        with store_errors(f"checkpointing step {step}"):
            at = self._commit(
                keys=[
                    keys.checkpoint(self.run_id),
                    keys.answers(self.run_id),
                    contest.voters,
                    keys.stats(self.run_id),
                    contest.seen,
                    contest.tally,
                    contest.payloads,
                    contest.first,
                    contest.vectors,
                    contest.status,
                    contest.texts,
                    keys.meta(self.run_id),
                ],
                args=[
                    step,
                    canonical(next_state),
                    canonical(answer),
                    winner,
                    "keep" if keep else "",
                    rounds,
                    samples,
                    linger_s,
                    "" if self.generation is None else self.generation,
                ],
            )
        if int(at) == -1:
            raise self._lost()
        if int(at) != step + 1:
            raise StoreError(
                f"run {self.run_id}'s checkpoint is at step {at}, not {step}: is another orchestrator driving it?"
            )

    def answers(self) -> list[JSON]:
        """Every committed step's winning answer, in order (what a resumed run's scorer replays)."""
        with store_errors(f"reading the answers of run {self.run_id}"):
            return [json.loads(a) for a in self.client.lrange(keys.answers(self.run_id), 0, -1)]

    def forget(self, contests: list[StepKeys], linger_s: int = 60) -> None:
        """Let dropped guesses' keys expire within `linger_s` (they were kept for the contest's TTL). All of them
        together, the claim of the T=0 sample with the votes: a guess opened again finds both or neither, so it
        never counts two T=0 votes."""
        self._expire(contests, linger_s, "expiring dropped guesses")

    def revive(self, contest: StepKeys, ttl_s: int) -> None:
        """A dropped guess opened again keeps its keys the contest's TTL again (`forget` had shortened it)."""
        self._expire([contest], ttl_s, "reviving a guess")

    def _expire(self, contests: list[StepKeys], seconds: int, doing: str) -> None:
        if not contests:
            return
        with store_errors(doing), self.client.pipeline(transaction=False) as pipe:
            for contest in contests:
                for key in contest.every():
                    pipe.expire(key, seconds)
            pipe.execute()

    def stats(self) -> dict[str, int]:
        """The run's counters as the vote script keeps them (samples, red flags by reason, tokens...)."""
        with store_errors(f"reading the stats of run {self.run_id}"):
            raw = self.client.hgetall(keys.stats(self.run_id))
        return {k.decode(): int(v) for k, v in raw.items() if k != b"fatal"}


def _describe(task: dict[str, Any]) -> str:
    if task.get("kind") == "hanoi":
        return f"hanoi with {task.get('disks')} disks"
    return f"{task.get('kind')} {task.get('spec', {}).get('name', '')!r}".strip()
