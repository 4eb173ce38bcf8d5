"""`maker mcp`: MAKER as tools of any MCP host (Claude Desktop, Claude Code, ...), on the official `mcp` SDK.

The tool names are a contract: `submit_hanoi` and `submit_task` start a job and return its id at once;
`job_status`, `job_result`, `cancel_job` and `list_jobs` follow jobs (`orchestrator.interfaces.jobs`); `vote` takes one
error-corrected decision; `validate` red-flags one response; `plan` gives k and the expected cost from the
MAKER formulas. Each input is a pydantic model whose JSON Schema is what the host sees, each output one
too. A bad input (out of range, too large, a spec that does not load) is a tool error with a message.

The server runs the prompts its host sends: every question, spec and job is sampled on the cluster's
model, at the cluster's cost. A job outlives its submit call, so progress is followed with `job_status`:
with `wait_s` the call waits for the job to end (or the time to pass) and, when the host sent a progress
token, a progress notification goes out at each new step count (progress = steps done, total = all steps).
"""

from __future__ import annotations

import hmac
import inspect
import json
import random
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.types import ToolAnnotations
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    computed_field,
    create_model,
    field_validator,
    model_validator,
)

from maker_workers.domains.base import JSON, RedFlag
from maker_workers.domains.hanoi import HanoiTask
from maker_workers.domains.spec import AnswerSpec, parser_for
from maker_workers.errors import ConfigError, MakerError
from maker_workers.simllm.model import count_tokens
from orchestrator import VERSION, api
from orchestrator.cluster.connect import ClusterOptions
from orchestrator.cluster.listen import is_loopback
from orchestrator.engine.runner import VotingConfig
from orchestrator.interfaces.jobs import MAX_ACTIVE_JOBS, Jobs, JobState, JobStatus, Kind, SharedCluster
from orchestrator.planning import plan as planning
from orchestrator.planning.calibrate import Calibration, calibrate, draw_steps
from orchestrator.planning.method import k_min
from orchestrator.reports.report import RunReport, TaskReport

# Limits of what one host may ask: the server spends the cluster's samples on its behalf.
MAX_TEXT_CHARS = 64 * 1024  # a prompt, a system message, a response to validate
MAX_SPEC_CHARS = 256 * 1024  # a spec as JSON (its initial state included)
MAX_K = 50
MAX_SAMPLES = 1000  # max_samples and max_red_flags
MAX_ERRORS = 100
MAX_DISKS = 20  # 2^20 - 1 steps
MAX_SPECULATE = 8
MAX_OUTPUT_TOKENS = 32_000
MAX_WAIT_S = 60.0  # job_status's wait
CANCEL_WAIT_S = 15.0  # how long cancel_job waits for a job it drives to end
CLOSE_WAIT_S = 3.0  # at exit, how long jobs on a shared cluster get to record that they were cancelled
DEFAULT_P = 0.99  # the simulated model's default: 1% of its well-formed answers are wrong

T = TypeVar("T")
_INPUT = ConfigDict(extra="forbid")  # a misspelt option must not be silently ignored


# --- inputs ---------------------------------------------------------------------------------------


class _Caps(BaseModel):
    model_config = _INPUT

    max_samples: int | None = Field(
        None, ge=1, le=MAX_SAMPLES, description="a step undecided after this many samples fails [200]"
    )
    max_red_flags: int | None = Field(None, ge=1, le=MAX_SAMPLES, description="a step with this many red flags fails")
    max_errors: int | None = Field(None, ge=1, le=MAX_ERRORS, description="a step with this many failed calls fails")
    max_cost_usd: float | None = Field(None, gt=0, description="stop sending samples once the run has spent this")

    def caps(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _Caps.model_fields if getattr(self, name) is not None}


class _ModelChoice(BaseModel):
    model_config = _INPUT

    provider: str | None = Field(
        None, max_length=64, description="leave out: the server's own (maker mcp --provider); anything else is refused"
    )
    model: str | None = Field(None, max_length=256, description="leave out: the server's own (maker mcp --model)")


class _Reliability(BaseModel):
    model_config = _INPUT

    k: int | None = Field(None, ge=1, le=MAX_K, description="votes the winner needs ahead of the runner-up [3]")
    target_reliability: float | None = Field(
        None, gt=0, lt=1, description="instead of k: the chance the whole run is right; k is the least that gets there"
    )
    p: float = Field(
        DEFAULT_P, gt=0.5, le=1, description="with target_reliability: the chance one valid sample is right"
    )
    speculate: int | None = Field(
        None,
        ge=0,
        le=MAX_SPECULATE,
        description="vote this many steps ahead (hides latency; 0: off); omitted: adapted to what it wastes",
    )

    @model_validator(mode="after")
    def _k_or_target(self) -> _Reliability:
        if self.k is not None and self.target_reliability is not None:
            raise ValueError("give k or target_reliability, not both")
        return self

    def k_for(self, steps: int | None) -> int | None:
        """k as given, or the least whose whole-run success at p reaches target_reliability over `steps`."""
        if self.target_reliability is None:
            return self.k
        if steps is None:
            raise ConfigError("target_reliability needs the number of steps: give the spec done.steps, or give k")
        k = k_min(self.p, steps, self.target_reliability)
        if k > MAX_K:
            raise ConfigError(
                f"target_reliability {self.target_reliability} over {steps} steps at p={self.p} needs k={k}, "
                f"above this server's limit of {MAX_K}: aim lower or use a better model (higher p)"
            )
        return k


class SubmitHanoi(_Reliability, _Caps, _ModelChoice):
    """Towers of Hanoi with `disks` disks: 2^disks - 1 moves, each decided by a vote of LLM samples."""

    disks: int = Field(ge=1, le=MAX_DISKS, description="number of disks")


class SubmitTask(_Reliability, _Caps, _ModelChoice):
    """Any task written as a spec (the fields of examples/*.yaml, as a JSON object)."""

    spec: dict[str, Any] = Field(description="name, initial_state, system, prompt, answer, next_state, done, ...")

    @field_validator("spec")
    @classmethod
    def _small_enough(cls, spec: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(spec))
        if size > MAX_SPEC_CHARS:
            raise ValueError(f"the spec is {size} characters as JSON, over the limit of {MAX_SPEC_CHARS}")
        return spec


class JobRef(BaseModel):
    """One job, by the id its submit returned."""

    model_config = _INPUT

    job_id: str = Field(pattern=r"^[0-9a-f]{12}$", description="the job_id submit_hanoi or submit_task returned")


class JobQuery(JobRef):
    """One job; with wait_s, wait for it to end (progress notifications meanwhile)."""

    wait_s: float = Field(0.0, ge=0, le=MAX_WAIT_S, description="wait up to this long for the job to end")


class ListJobs(BaseModel):
    """The latest jobs on this server's cluster, newest first."""

    model_config = _INPUT

    limit: int = Field(20, ge=1, le=100)


class _Answer(BaseModel):
    model_config = _INPUT

    format: Literal["json", "regex", "text", "hanoi"] = Field(
        "text", description="json: the last JSON object counts; regex: the last match; text: the whole answer"
    )
    schema_: dict[str, Any] | None = Field(None, alias="schema", description="json: a JSON Schema the answer must meet")
    pattern: str | None = Field(None, max_length=4096, description="regex: a pattern with named groups")
    vote_on: list[str] | None = Field(None, min_length=1, description="json, regex: the fields that form the vote")
    normalize: bool | list[str] | None = Field(None, description="text: strip, collapse, casefold (true: all)")

    def answer_spec(self) -> AnswerSpec:
        """Checked as a spec's `answer`: a problem is a SpecError naming `answer.<field>`."""
        fields = ("format", "schema", "pattern", "vote_on", "normalize")
        given = self.model_dump(by_alias=True, exclude_none=True)
        return api.answer_spec({name: given[name] for name in fields if name in given})


class VoteQuestion(_Answer, _Caps, _ModelChoice):
    """One question, sampled until one answer leads by k votes; never a plurality guess."""

    prompt: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, description="the question, taken literally")
    system: str | None = Field(None, max_length=MAX_TEXT_CHARS)
    k: int = Field(3, ge=1, le=MAX_K, description="votes the winner needs ahead of the runner-up")
    max_output_tokens: int | None = Field(
        None, ge=1, le=MAX_OUTPUT_TOKENS, description="longer answers are red flags [750]"
    )


class CheckResponse(_Answer):
    """One response, checked as a worker checks a sample: length first, then a strict parse."""

    response: str = Field(max_length=MAX_TEXT_CHARS)
    max_output_tokens: int = Field(750, ge=1, le=MAX_OUTPUT_TOKENS, description="longer answers are red flags")
    pegs: list[list[int]] | None = Field(
        None, max_length=3, description="hanoi: the current state, which says how many disks there are"
    )


class CalibrateQuery(_ModelChoice):
    """Measure the model: `per_step` samples on each of samples/per_step random Hanoi steps, scored against the
    right move."""

    disks: int = Field(10, ge=2, le=MAX_DISKS, description="the puzzle whose steps are drawn")
    samples: int = Field(200, ge=10, le=2000, description="samples drawn in all")
    per_step: int = Field(
        1,
        ge=1,
        le=20,
        description="samples on each drawn step; 2 or more measure how p spreads across steps and how alike "
        "samples are (the result's spread)",
    )
    seed: int | None = Field(None, description="which steps are drawn (random when left out)")


class PlanQuery(BaseModel):
    """What a run needs, from the MAKER formulas (one rival answer, the worst case)."""

    model_config = _INPUT

    p: float = Field(gt=0.5, le=1, description="the chance one valid sample is right")
    steps: int = Field(ge=1, le=10**12)
    target: float = Field(gt=0, lt=1, description="the chance the whole run must be right")
    valid_rate: float = Field(1.0, gt=0, le=1, description="the share of samples that pass the red flags")
    price_in: float | None = Field(None, ge=0, description="$ per million input tokens")
    price_out: float | None = Field(None, ge=0, description="$ per million output tokens")
    tokens_in: int | None = Field(None, ge=0, description="input tokens of one sample")
    tokens_out: int | None = Field(None, ge=0, description="output tokens of one sample")
    price_cached: float | None = Field(None, ge=0, description="$ per million input tokens read from the prompt cache")
    cached_share: float = Field(0.0, ge=0, le=1, description="the share of input tokens read from the prompt cache")

    @model_validator(mode="after")
    def _all_or_no_cost(self) -> PlanQuery:
        given = [v is not None for v in (self.price_in, self.price_out, self.tokens_in, self.tokens_out)]
        if any(given) and not all(given):
            raise ValueError("for a cost give price_in, price_out, tokens_in and tokens_out together")
        if self.cached_share and self.price_cached is None:
            raise ValueError("cached_share needs price_cached (the price of an input token read from the cache)")
        return self


# --- outputs --------------------------------------------------------------------------------------


class JobSubmitted(BaseModel):
    """A job that has started: follow it with job_status."""

    job_id: str
    kind: Kind
    title: str
    k: int
    total_steps: int | None


class JobResult(BaseModel):
    """How a job ended, with its run's report."""

    job_id: str
    state: JobState
    report: RunReport | TaskReport | None = None  # None when the job failed before its run could report
    error: str | None = None


class JobList(BaseModel):
    """The latest jobs, newest first."""

    jobs: list[JobStatus]


class RedFlagFound(BaseModel):
    """One reason a worker would discard the response."""

    reason: str  # parse, schema or too_long: what a run counts it by
    detail: str


class Validation(BaseModel):
    """What a worker would make of the response: red flags, or the vote it would count as."""

    valid: bool
    output_tokens: int  # estimated as the simulated model counts: about 4 characters a token
    red_flags: list[RedFlagFound]
    vote_key: str | None = None  # what votes are counted by (canonical JSON)
    answer: JSON = None  # the parsed answer (the winner's payload, were it to win)


class Plan(planning.Plan):
    """What a run needs: `maker plan`'s plan (orchestrator/planning/plan.py), its total also under the name hosts
    read."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def expected_samples_total(self) -> float:
        return self.expected_samples


# --- the work -------------------------------------------------------------------------------------


class MakerTools:
    """What the tools do, apart from the protocol: one shared cluster and its jobs, for a server's lifetime.

    Each public method is a tool of the same name; its docstring is the description the host sees.
    """

    def __init__(self, cluster: ClusterOptions, max_jobs: int = MAX_ACTIVE_JOBS) -> None:
        self.cluster = SharedCluster(cluster)
        self.jobs = Jobs(self.cluster, max_jobs)

    def close(self) -> None:
        # An embedded cluster's runs die with it; on a shared cluster, each job should record that it was cancelled.
        self.jobs.close(wait_s=0.0 if self.cluster.embedded else CLOSE_WAIT_S)
        self.cluster.close()

    def submit_hanoi(self, given: SubmitHanoi) -> JobSubmitted:
        """Start solving Towers of Hanoi, one voted LLM call per move, as a background job; returns its job_id at
        once. Follow it with job_status (wait_s to wait), read its report with job_result, stop it with
        cancel_job."""
        self._check_models(given)
        task = HanoiTask(given.disks)
        k = given.k_for(task.total_steps())
        given_k = {"k": k} if k else {}  # else VotingConfig's default
        voting = _checked(lambda: VotingConfig(**given_k, speculate=given.speculate, **given.caps()))

        def run(job_id: str, cluster: ClusterOptions, hooks: api.Hooks) -> RunReport:
            return api.run_hanoi(given.disks, voting=voting, cluster=cluster, run_id=job_id, hooks=hooks)

        record = self.jobs.submit("hanoi", f"hanoi, {given.disks} disks", task, voting, run)
        return JobSubmitted(
            job_id=record.job_id, kind="hanoi", title=record.title, k=voting.k, total_steps=task.total_steps()
        )

    def submit_task(self, given: SubmitTask) -> JobSubmitted:
        """Start any task written as a spec (see examples/*.yaml; give it as a JSON object) as a background job;
        returns its job_id at once. Options given here win over the spec's own."""
        self._check_models(given)
        task = api.spec_task(given.spec)
        k = given.k_for(task.total_steps() or task.max_steps)
        voting = _checked(lambda: api.voting_for(task.spec, k=k, speculate=given.speculate, **given.caps()))

        def run(job_id: str, cluster: ClusterOptions, hooks: api.Hooks) -> TaskReport:
            return api.run_spec(task.spec, voting=voting, cluster=cluster, run_id=job_id, hooks=hooks)

        record = self.jobs.submit("task", f"task {task.name}", task, voting, run)
        return JobSubmitted(
            job_id=record.job_id, kind="task", title=record.title, k=voting.k, total_steps=task.total_steps()
        )

    def job_status(self, given: JobQuery, on_step: Callable[[JobStatus], None] = lambda _: None) -> JobStatus:
        """Where a job stands: queued, running, done, failed or cancelled; steps done of all, samples, red flags,
        tokens and cost so far, elapsed time and an ETA. With wait_s, waits for the job to end (up to wait_s)."""
        if given.wait_s == 0:
            return self.jobs.status(given.job_id)
        return self.jobs.wait(given.job_id, given.wait_s, on_step)

    def job_result(self, given: JobRef) -> JobResult:
        """A finished job's report: for Hanoi steps, solved and errors (moves unlike the optimal ones); for a
        spec, final_state and done; for both samples, red flags by reason, tokens, cost and any failure."""
        record = self.jobs.record(given.job_id)
        if record.state is None:
            status = self.jobs.status(given.job_id)
            raise ConfigError(
                f"job {given.job_id} has no result yet: it is {status.state} ({status.steps_done} steps done); "
                "job_status with wait_s waits for it"
            )
        report = record.report
        shape = RunReport if record.kind == "hanoi" else TaskReport
        return JobResult(
            job_id=record.job_id,
            state=record.state,
            report=None if report is None else shape.model_validate(report),
            error=record.error,
        )

    def cancel_job(self, given: JobRef) -> JobStatus:
        """Stop a job: no new samples are sent, the ones in flight are counted, and the status says what was done.
        A cancelled run can be resumed from the command line (maker hanoi|run --resume JOB_ID --redis-url URL)."""
        return self.jobs.cancel(given.job_id, CANCEL_WAIT_S)

    def list_jobs(self, given: ListJobs) -> JobList:
        """The latest jobs on this server's cluster, newest first, with their status (jobs of servers that ran
        before this one included)."""
        return JobList(jobs=self.jobs.latest(given.limit))

    def vote(self, given: VoteQuestion) -> api.VoteResult:
        """One error-corrected decision: sample the question until one answer leads by k votes, red-flagging
        answers that are too long or do not parse. Returns the winner, the tally of every candidate, samples,
        red flags, tokens and cost; when a cap is reached first, decided is false: it never guesses."""
        self._check_models(given)
        answer = given.answer_spec()
        voting = _checked(lambda: VotingConfig(k=given.k, **given.caps()))
        return api.vote(
            given.prompt,
            system=given.system,
            answer=answer,
            voting=voting,
            cluster=self.cluster.for_run(),
            max_output_tokens=given.max_output_tokens,
        )

    def validate(self, given: CheckResponse) -> Validation:
        """Red-flag check of one response under an answer format and a token limit, as a worker checks a sample:
        each flag with its reason, or the vote key and answer it would count as. Uses no model."""
        parser = parser_for(given.answer_spec())
        tokens = count_tokens(given.response)
        flags: list[RedFlagFound] = []
        if tokens > given.max_output_tokens:
            detail = f"about {tokens} tokens (4 characters a token), over the limit of {given.max_output_tokens}"
            flags.append(RedFlagFound(reason="too_long", detail=detail))
        try:
            key, answer = parser.parse(given.response, given.pegs)
        except RedFlag as flag:
            flags.append(RedFlagFound(reason=flag.reason, detail=flag.detail))
            return Validation(valid=False, output_tokens=tokens, red_flags=flags)
        return Validation(valid=not flags, output_tokens=tokens, red_flags=flags, vote_key=key, answer=answer)

    def calibrate(self, given: CalibrateQuery) -> Calibration:
        """Measure the server's model on Hanoi through the cluster: p among valid answers with its 95%
        interval, the valid rate, red flags by reason, output tokens, the error rate by answer length and
        the cost per sample: what `plan` needs (use p_low, the interval's low end, to be safe)."""
        self._check_models(given)
        drawn = draw_steps(given.disks, -(-given.samples // given.per_step), random.Random(given.seed))
        task = HanoiTask(given.disks)
        cluster = self.cluster.for_run()
        return calibrate(task, drawn, steps=task.total_steps(), cluster=cluster, per_step=given.per_step)

    def plan(self, given: PlanQuery) -> Plan:
        """Plan a run from the MAKER formulas: the least k that makes all steps right with chance target, the
        expected samples per step and in all, and (with prices and tokens per sample) the projected cost."""
        per_sample = None
        if given.price_in is not None and given.price_out is not None:
            assert given.tokens_in is not None and given.tokens_out is not None  # PlanQuery wants all four
            per_sample = planning.sample_cost_usd(
                given.price_in,
                given.price_out,
                given.tokens_in,
                given.tokens_out,
                price_cached=given.price_cached,
                cached_share=given.cached_share,
            )
        planned = planning.plan(
            given.p, given.steps, given.target, valid_rate=given.valid_rate, cost_per_sample_usd=per_sample
        )
        return Plan(**planned.model_dump())

    def _check_models(self, given: _ModelChoice) -> None:
        """The CLI's rule: the embedded workers call what the server started them with, a cluster's what its
        workers' settings name; a call cannot choose another."""
        if given.provider is None and given.model is None:
            return
        if not self.cluster.embedded:
            raise ConfigError(
                "provider/model: this server uses a cluster, whose workers call the model their own settings "
                "name (MAKER_PROVIDER, MAKER_MODEL on the workers); leave provider and model out"
            )
        env = self.cluster.options.models.worker_env(None)
        if env["MAKER_ENSEMBLE"]:
            raise ConfigError(
                f"provider/model: this server's workers take turns among {env['MAKER_ENSEMBLE']}; "
                "leave provider and model out"
            )
        have = (env["MAKER_PROVIDER"], env["MAKER_MODEL"])
        wanted = (given.provider or have[0], given.model or have[1])
        if wanted != have:
            raise ConfigError(
                f"provider/model {wanted[0]}:{wanted[1]}: this server's workers call {have[0]}:{have[1]}, "
                f"chosen when it started; start it with `maker mcp --provider {wanted[0]} --model {wanted[1]}` "
                "to call another"
            )


def _checked(make: Callable[[], VotingConfig]) -> VotingConfig:
    """The voting config, within this server's limits (a spec's own k and caps included)."""
    try:
        voting = make()
    except ValidationError as exc:
        raise ConfigError("; ".join(str(e["msg"]) for e in exc.errors())) from exc
    if voting.k > MAX_K:
        raise ConfigError(f"k={voting.k} is above this server's limit of {MAX_K}")
    if max(voting.max_samples, voting.max_red_flags) > MAX_SAMPLES:
        raise ConfigError(f"max_samples and max_red_flags must be at most {MAX_SAMPLES} here")
    return voting


# --- the protocol ---------------------------------------------------------------------------------


class _Whole(ArgModelBase):
    """Hands a tool its whole input model, rather than the model's fields one by one."""

    def model_dump_one_level(self) -> dict[str, Any]:
        return {"given": self}


def _tool(name: str, call: Callable[..., Awaitable[BaseModel]], given: type[BaseModel], description: str) -> Tool:
    """A tool whose input schema is exactly `given`'s (the SDK's default would nest it under a parameter name)
    and whose output schema is that of `call`'s return type."""
    arguments = create_model(given.__name__, __base__=(given, _Whole), __doc__=given.__doc__)
    output = inspect.signature(call, eval_str=True).return_annotation
    read_only = name in ("job_status", "job_result", "list_jobs", "validate", "plan")
    return Tool(
        fn=call,
        name=name,
        description=description,
        parameters=arguments.model_json_schema(by_alias=True),
        fn_metadata=FuncMetadata(arg_model=arguments, output_model=output),
        is_async=True,
        context_kwarg="ctx",
        annotations=ToolAnnotations(read_only_hint=read_only),
    )


async def _off_loop(work: Callable[..., T], *args: Any) -> T:
    """Run blocking work (Redis, Celery, a cluster's start) in a thread; our errors become tool errors."""
    try:
        return await anyio.to_thread.run_sync(work, *args)
    except MakerError as exc:
        raise ToolError(str(exc)) from exc


class _BearerToken:
    """The one token `--token` sets: what every streamable-HTTP request must carry as `Authorization: Bearer`."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self._token):
            return AccessToken(token=token, client_id="maker-mcp", scopes=[])
        return None


def mcp_server(tools: MakerTools, *, token: str | None = None, url: str = "http://127.0.0.1") -> MCPServer:
    """The MCP server over `tools`; with `token`, HTTP requests without it are refused (401). `url` is where it
    listens, named as the token's issuer."""

    async def submit_hanoi(given: SubmitHanoi, ctx: Context) -> JobSubmitted:
        return await _off_loop(tools.submit_hanoi, given)

    async def submit_task(given: SubmitTask, ctx: Context) -> JobSubmitted:
        return await _off_loop(tools.submit_task, given)

    async def job_status(given: JobQuery, ctx: Context) -> JobStatus:
        def on_step(status: JobStatus) -> None:
            message = f"{status.title}: {status.state}, {status.samples} samples"
            anyio.from_thread.run(ctx.report_progress, status.steps_done, status.total_steps, message)

        return await _off_loop(tools.job_status, given, on_step)

    async def job_result(given: JobRef, ctx: Context) -> JobResult:
        return await _off_loop(tools.job_result, given)

    async def cancel_job(given: JobRef, ctx: Context) -> JobStatus:
        return await _off_loop(tools.cancel_job, given)

    async def list_jobs(given: ListJobs, ctx: Context) -> JobList:
        return await _off_loop(tools.list_jobs, given)

    async def vote(given: VoteQuestion, ctx: Context) -> api.VoteResult:
        return await _off_loop(tools.vote, given)

    async def validate(given: CheckResponse, ctx: Context) -> Validation:
        return await _off_loop(tools.validate, given)

    async def plan(given: PlanQuery, ctx: Context) -> Plan:
        return await _off_loop(tools.plan, given)

    async def calibrate(given: CalibrateQuery, ctx: Context) -> Calibration:
        return await _off_loop(tools.calibrate, given)

    calls = [submit_hanoi, submit_task, job_status, job_result, cancel_job, list_jobs, vote, validate, plan, calibrate]
    registered = [
        _tool(
            call.__name__,
            call,
            inspect.signature(call, eval_str=True).parameters["given"].annotation,
            inspect.getdoc(getattr(tools, call.__name__)) or "",
        )
        for call in calls
    ]
    auth: dict[str, Any] = {}
    if token is not None:
        auth = {"auth": AuthSettings(issuer_url=url, resource_server_url=None), "token_verifier": _BearerToken(token)}
    return MCPServer(
        "maker",
        version=VERSION,
        instructions=(
            "MAKER: long tasks of dependent LLM steps with zero errors, each step decided by a vote of samples. "
            "Start a job (submit_hanoi, submit_task), follow it (job_status, with wait_s to wait), read its report "
            "(job_result). vote takes one error-corrected decision; validate and plan use no model."
        ),
        tools=registered,
        log_level="WARNING",
        **auth,
    )


# Where a server may listen without a token: loopback names the SDK's Host-header check (against DNS rebinding) is
# on for. Another loopback address (127.0.0.2) is served without that check, so it needs the token like any host.
UNGUARDED_HOSTS = ("127.0.0.1", "localhost", "::1")


def serve(
    cluster: ClusterOptions,
    *,
    transport: str = "stdio",
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
) -> None:
    """Serve until the host disconnects (stdio), or Ctrl-C or SIGTERM; an embedded cluster, if a call started
    one, stops with the server. Bad options raise ConfigError before anything starts."""
    if transport not in ("stdio", "streamable-http"):
        raise ConfigError(f"--transport {transport}: use stdio or streamable-http")
    if transport == "stdio" and token is not None:
        raise ConfigError(
            "--token (or MAKER_MCP_TOKEN) guards --transport streamable-http; stdio has no network side: leave it out"
        )
    if transport == "streamable-http" and token is None and host not in UNGUARDED_HOSTS:
        why = (
            "is a loopback address the MCP SDK's DNS-rebinding check (the Host header) does not cover"
            if is_loopback(host)
            else "is reachable from other machines"
        )
        raise ConfigError(
            f"--host {host} {why}: give --token TOKEN (or MAKER_MCP_TOKEN), which every request must then carry as "
            f"'Authorization: Bearer TOKEN', or listen on {', '.join(UNGUARDED_HOSTS)}"
        )
    tools = MakerTools(cluster)
    where = f"[{host}]" if ":" in host else host  # an IPv6 address is bracketed in a URL
    server = mcp_server(tools, token=token, url=f"http://{where}:{port}")
    try:
        if transport == "stdio":
            server.run("stdio")
        else:
            server.run("streamable-http", host=host, port=port)
    finally:
        tools.close()
