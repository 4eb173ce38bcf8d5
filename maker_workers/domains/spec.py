"""Spec tasks: a task written as data (YAML or JSON), checked by pydantic, its prompts sandboxed Jinja2.

A spec names the initial state, the prompt templates, how a response is parsed (`answer`), how the winning
answer becomes the next state (`next_state`) and when the task is finished (`done`). Templates see `state`,
`step` (0-based index of the step being decided) and `previous` (the previous winning payload, None on
step 0); `next_state` also sees `answer` (the winning payload). They run in Jinja's immutable sandbox,
because a spec is data and must never reach Python objects.

Every problem with a spec is one `SpecError` whose one-line message starts with the field it is about,
at load time (`load_spec`, `spec_from_data`) and at run time (naming the step).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from jinja2 import StrictUndefined, Template, Undefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from maker_workers.domains.answers import (
    DEFAULT_MAX_CANDIDATES,
    DEFAULT_THRESHOLD,
    FORMATS,
    MAX_MEANINGS,
    MEANINGS_NEEDED,
    AnswerParser,
    HanoiAnswer,
    JsonAnswer,
    RegexAnswer,
    SemanticMatch,
    TextAnswer,
    check_meanings,
    compile_pattern,
    normalize_steps,
    parse_embeddings,
    schema_validator,
)
from maker_workers.domains.base import JSON, Parsed, digest
from maker_workers.errors import ConfigError


class SpecError(ConfigError):
    """A spec that cannot run; the message names the field (e.g. `answer.pattern: ...`) and how to fix it."""


class _FieldError(ValueError):
    """Raised in a model validator to name a field below the model (pydantic only knows the model's place)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# extra="forbid": a typo must not be silently ignored; strict: "3" is not a number of steps.
_MODEL = ConfigDict(extra="forbid", strict=True)


class AnswerSpec(BaseModel):
    """How a response is parsed into a vote: `format` and the options that format takes."""

    model_config = _MODEL

    format: Literal["json", "regex", "text", "hanoi"]
    schema_: Any = Field(default=None, alias="schema")  # json: a JSON Schema the answer must satisfy
    pattern: str | None = None  # regex: the last line it matches whole counts; needs named groups
    whole_line: bool | None = None  # regex: None means true; false takes the last match anywhere, even mid-line
    normalize: bool | list[str] | None = None  # text: None means true (strip, collapse, casefold)
    vote_on: list[str] | None = Field(default=None, min_length=1)  # json, regex: the fields a vote is about
    match: Literal["exact", "semantic"] = "exact"  # semantic: votes on meaning, by embedding similarity
    threshold: float | None = Field(default=None, gt=0, lt=1)  # semantic: cosine similarity that joins a candidate
    embeddings: str | None = None  # semantic: openai:MODEL, ollama:MODEL or sim
    embeddings_base_url: str | None = None  # semantic: the embedding server, when not the completion model's
    exact_fields: list[str] | None = Field(default=None, min_length=1)  # semantic json/regex: never merged
    # semantic: example answers grouped by meaning; the run measures its join rule on them before it starts
    meanings: list[list[str]] | None = Field(default=None, min_length=2, max_length=MAX_MEANINGS)
    # semantic: more meanings than this fail the step; every vote is compared with each candidate in the vote
    # script (about 0.07 ms per 1536-dim candidate), so the cap also bounds how long Redis is busy per vote
    max_candidates: int | None = Field(default=None, ge=2, le=256)

    @field_validator("format", mode="before")
    @classmethod
    def _known_format(cls, value: Any) -> Any:
        if value not in FORMATS:
            raise ValueError(f"unknown format {value!r}; use one of {', '.join(FORMATS)}")
        return value

    @field_validator("match", mode="before")
    @classmethod
    def _known_match(cls, value: Any) -> Any:
        if value not in ("exact", "semantic"):
            raise ValueError(f"unknown match {value!r}; use exact (the default) or semantic")
        return value

    @field_validator("embeddings")
    @classmethod
    def _names_a_model(cls, value: str | None) -> str | None:
        if value is not None:
            parse_embeddings(value)
        return value

    @field_validator("schema_")
    @classmethod
    def _is_schema(cls, value: Any) -> Any:
        if value is not None:
            schema_validator(value)
        return value

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            compile_pattern(value)
        return value

    @field_validator("normalize", mode="before")
    @classmethod
    def _known_steps(cls, value: Any) -> Any:
        if value is not None:
            normalize_steps(value)
        return value

    @model_validator(mode="after")
    def _options_fit_format(self) -> AnswerSpec:
        if self.format == "regex" and self.pattern is None:
            example = "pattern: 'Answer: (?P<answer>\\w+)'"
            raise _FieldError("pattern", f"required when answer.format is regex, e.g. {example}")
        for field, value, owner in (("pattern", self.pattern, "regex"), ("schema", self.schema_, "json")):
            if value is not None and self.format != owner:
                raise _FieldError(field, f"only applies when answer.format is {owner}")
        if self.whole_line is not None and self.format != "regex":
            raise _FieldError("whole_line", "only applies when answer.format is regex")
        if (
            self.format == "regex"
            and self.whole_line is not False
            and self.pattern
            and ("\\n" in self.pattern or "\n" in self.pattern)
        ):
            raise _FieldError(
                "pattern",
                "spans lines (it holds \\n), and a pattern must match a line whole: give answer.whole_line: false "
                "for a match anywhere, or match the last line alone",
            )
        if self.normalize is not None and self.format != "text":
            raise _FieldError("normalize", "only applies when answer.format is text")
        if self.vote_on is not None:
            if self.format not in ("json", "regex"):
                raise _FieldError("vote_on", "only applies when answer.format is json or regex")
            groups = compile_pattern(self.pattern).groupindex if self.pattern is not None else {}
            unknown = [f for f in self.vote_on if groups and f not in groups]
            if unknown:
                why = f"is not a named group of answer.pattern (its groups: {', '.join(groups)})"
                raise _FieldError("vote_on", f"{unknown[0]!r} {why}")
        self._semantic_options_fit()
        return self

    def _semantic_options_fit(self) -> None:
        names = ("threshold", "embeddings", "embeddings_base_url", "exact_fields", "max_candidates", "meanings")
        given = [name for name in names if getattr(self, name)]
        if self.match == "exact":
            if given:
                raise _FieldError(given[0], "only applies when answer.match is semantic")
            return
        if self.format == "hanoi":
            raise _FieldError("match", "semantic matching is for free-text answers, not hanoi moves; use exact")
        if self.embeddings is None:
            raise _FieldError("embeddings", "required when answer.match is semantic: openai:MODEL, ollama:MODEL or sim")
        if self.meanings is not None:
            try:
                check_meanings(self.meanings)
            except ValueError as exc:
                raise _FieldError("meanings", str(exc)) from None
        elif self.threshold is None and self.embeddings != "sim":
            raise _FieldError("meanings", MEANINGS_NEEDED.format(model=self.embeddings))
        if self.exact_fields is not None:
            if self.format not in ("json", "regex"):
                raise _FieldError("exact_fields", "only applies when answer.format is json or regex")
            fields = self.vote_on or list(compile_pattern(self.pattern).groupindex if self.pattern else [])
            if not fields and isinstance(self.schema_, dict) and isinstance(self.schema_.get("properties"), dict):
                fields = list(self.schema_["properties"])  # a json answer votes on the schema's fields
            unknown = [f for f in self.exact_fields if fields and f not in fields]
            if unknown:
                raise _FieldError("exact_fields", f"{unknown[0]!r} is not among the voted fields ({', '.join(fields)})")
            if fields and set(fields) <= set(self.exact_fields):
                raise _FieldError("exact_fields", "leaves no field to compare by meaning; use answer.match: exact")

    def semantic(self) -> SemanticMatch | None:
        """How answers are matched by meaning; None when they are matched exactly."""
        if self.match == "exact" or self.embeddings is None:
            return None
        return SemanticMatch(
            threshold=self.threshold if self.threshold is not None else DEFAULT_THRESHOLD,
            embeddings=self.embeddings,
            embeddings_base_url=self.embeddings_base_url,
            max_candidates=self.max_candidates or DEFAULT_MAX_CANDIDATES,
            exact_fields=tuple(self.exact_fields or ()),
            vote_on=None if self.vote_on is None else tuple(self.vote_on),
            meanings=tuple(tuple(group) for group in self.meanings or ()),
            threshold_set=self.threshold is not None,
        )


class DoneSpec(BaseModel):
    """When the task is finished: after a fixed number of steps, or when an expression becomes true."""

    model_config = _MODEL

    steps: int | None = Field(default=None, ge=1)
    when: str | None = Field(default=None, min_length=1)
    max_steps: int | None = Field(default=None, ge=1)  # a safety bound for `when`: the run fails on reaching it

    @model_validator(mode="after")
    def _exactly_one(self) -> DoneSpec:
        if self.steps is not None and self.when is not None:
            raise ValueError("give exactly one of 'steps: N' or 'when: EXPRESSION', not both")
        if self.steps is None and self.when is None:
            raise ValueError("give one of 'steps: N' (a fixed number of steps) or 'when: EXPRESSION' (on state, step)")
        if self.max_steps is not None and self.when is None:
            raise _FieldError("max_steps", "only applies with done.when (done.steps already bounds the run)")
        return self


class Temperature(BaseModel):
    """Sampling temperature: the first sample of a step, and the samples after it."""

    model_config = _MODEL

    first: float = Field(default=0.0, ge=0, le=2)
    later: float = Field(default=0.1, ge=0, le=2)


class Example(BaseModel):
    """One worked example, sent as a user turn and the assistant's answer before the step's prompt (few-shot): small
    models follow an answer format shown in turns far better than one described in the system prompt."""

    model_config = _MODEL

    user: str = Field(min_length=1)
    assistant: str = Field(min_length=1)


class TaskSpec(BaseModel):
    """A whole task as data. Options left out (None) fall back to the run's own settings."""

    model_config = _MODEL

    name: str = Field(min_length=1)
    initial_state: Any
    system: str | None = None
    prompt: str
    # Other phrasings of `prompt`: a contest's samples rotate through prompt and these, so that a model sampled
    # near T=0 is asked differently rather than answering the same text again (copies are not votes).
    prompt_variants: list[str] | None = Field(default=None, min_length=1, max_length=32)
    examples: list[Example] | None = Field(default=None, min_length=1, max_length=64)  # plain text, not templates
    answer: AnswerSpec
    next_state: str | None = None  # None: the winning payload is the next state
    done: DoneSpec
    k: int | None = Field(default=None, ge=1)
    max_output_tokens: int | None = Field(default=None, ge=1)
    max_samples: int | None = Field(default=None, ge=1)
    max_red_flags: int | None = Field(default=None, ge=1)
    max_errors: int | None = Field(default=None, ge=1)
    temperature: Temperature | None = None

    @field_validator("initial_state")
    @classmethod
    def _is_json(cls, value: Any) -> Any:
        try:
            same = json.loads(json.dumps(value, allow_nan=False)) == value
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not a JSON value ({exc})") from exc
        if not same:
            raise ValueError("not a JSON value (object keys must be strings)")
        return value


_FIELDS_OF: dict[tuple[str, ...], type[BaseModel]] = {
    (): TaskSpec,
    ("answer",): AnswerSpec,
    ("done",): DoneSpec,
    ("temperature",): Temperature,
}


def _one_line(exc: ValidationError) -> str:
    """Pydantic's first error as `field.path: what is wrong`."""
    errors = exc.errors()
    first = errors[0]
    loc = [str(part) for part in first["loc"]]
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, _FieldError):
        loc.append(cause.field)
        message = str(cause)
    elif isinstance(cause, ValueError):
        message = str(cause)
    elif first["type"] == "extra_forbidden":
        model = _FIELDS_OF.get(tuple(loc[:-1]))
        names = [f.alias or name for name, f in model.model_fields.items()] if model else []
        message = "unknown field (a typo?)" + (f"; the fields here are {', '.join(names)}" if names else "")
    elif first["type"] == "missing":
        message = "required field is missing"
    else:
        message = first["msg"]
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{'.'.join(loc) or 'spec'}: {message}{more}"


def _validate(data: Any) -> TaskSpec:
    if not isinstance(data, dict):
        raise SpecError(f"spec: must be a mapping of fields (name, prompt, answer, ...), got {type(data).__name__}")
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_one_line(exc)) from exc


def _recorded_before_meanings(answer: dict[str, Any]) -> bool:
    return (
        answer.get("match") == "semantic"
        and answer.get("embeddings") not in (None, "sim")
        and answer.get("threshold") is None
        and answer.get("meanings") is None
    )


def spec_from_data(data: dict[str, Any], *, literal: bool = False) -> TaskSpec:
    """A checked spec from parsed YAML/JSON: fields, then templates (compiled and rendered on the initial state)."""
    spec = _validate(data)
    SpecTask(spec, literal=literal)  # compiles and renders step 0: template errors surface now, not mid-run
    return spec


def load_spec(path: Path | str, *, literal: bool = False) -> TaskSpec:
    """Read a spec file (.json as JSON, anything else as YAML, which reads JSON too); errors name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SpecError(f"{path}: no such file") from exc
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text") from exc
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the file ({exc.strerror})") from exc
    data = _read_json(path, text) if path.suffix.lower() == ".json" else _read_yaml(path, text)
    if not isinstance(data, dict):
        got = "nothing (the file is empty)" if data is None else f"a {type(data).__name__}"
        raise SpecError(f"{path}: a spec must be a mapping of fields (name, prompt, answer, ...), got {got}")
    try:
        return spec_from_data(data, literal=literal)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _read_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path}: JSON syntax error on line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    except ValueError as exc:
        raise SpecError(f"{path}: JSON error: {exc}") from exc


def _read_yaml(path: Path, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" on line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise SpecError(f"{path}: YAML syntax error{where}: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: YAML error: {exc}") from exc


def parser_for(answer: AnswerSpec) -> AnswerParser:
    """The parser an answer spec describes (regex and schema compiled once, here)."""
    if answer.format == "json":
        return JsonAnswer(answer.schema_, answer.vote_on)
    if answer.format == "regex":
        assert answer.pattern is not None  # AnswerSpec requires it
        return RegexAnswer(answer.pattern, answer.vote_on, answer.whole_line is not False)
    if answer.format == "text":
        return TextAnswer(True if answer.normalize is None else answer.normalize)
    return HanoiAnswer()


# --- the sandbox ----------------------------------------------------------------------------------


MAX_TEXT = 200_000  # characters a rendered prompt (or any string a template builds) may have
MAX_ITERATIONS = 100_000  # items all of a render's range() calls may yield together
_BUDGET: ContextVar[list[int]] = ContextVar("range_budget")  # what is left of MAX_ITERATIONS in this render
_WIDTH_FILTERS = ("center", "indent", "wordwrap", "truncate")  # filters whose numeric argument sizes their result


class _TooMuch(SecurityError):
    """A render past the sandbox's bounds (MAX_TEXT, MAX_ITERATIONS)."""


class _Codegen(CodeGenerator):
    """Jinja's code generator, but `a ~ b` goes through the sandbox (`_Sandbox.concat`), which bounds its length:
    a template doubling a string thirty times must not build a gigabyte."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, which also refuses dunder names that do not exist (`f.__globals__` on a
    builtin), so every escape attempt reads as a refusal rather than as a typo; and bounds the work a render may
    do: a string or list a template builds (`"x" * 50000000`, a concatenation) holds at most MAX_TEXT items, and
    the range() calls of one render yield MAX_ITERATIONS items together (nested loops included)."""

    code_generator_class = _Codegen
    intercepted_binops = frozenset({"*", "**"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        value = super().getattr(obj, attribute)
        if attribute.startswith("__") and isinstance(value, Undefined):
            return self.unsafe_undefined(obj, attribute)
        return value

    def getitem(self, obj: Any, argument: Any) -> Any:
        value = super().getitem(obj, argument)
        if isinstance(argument, str) and argument.startswith("__") and isinstance(value, Undefined):
            return self.unsafe_undefined(obj, argument)
        return value

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int) and len(seq) * times > MAX_TEXT:
                    raise _TooMuch(f"'* {times}' would build {len(seq) * times:,} items, over {MAX_TEXT:,}")
        if operator == "**" and isinstance(right, int) and abs(right) > 1_000:
            raise _TooMuch(f"'** {right}': an exponent over 1,000 is refused (numbers that big are no prompt)")
        return super().call_binop(context, operator, left, right)

    @staticmethod
    def concat(parts: Any) -> str:  # type: ignore[override]  # also joins a whole render's output (Template.render)
        text = "".join(map(str, parts))
        if len(text) > MAX_TEXT:
            raise _TooMuch(f"a concatenation would build {len(text):,} characters, over {MAX_TEXT:,}")
        return text


def _bounded_range(*args: int) -> Iterator[int]:
    items = range(*args)
    budget = _BUDGET.get(None)
    if budget is not None:
        budget[0] -= len(items)
        if budget[0] < 0:
            raise _TooMuch(
                f"the render's loops would run over {MAX_ITERATIONS:,} iterations in all (range() calls together)"
            )
    return iter(items)


def _width_bounded(name: str) -> Any:
    original = _ENV.filters[name]

    def bounded(value: Any, *args: Any, **kwargs: Any) -> Any:
        for given in (*args, *kwargs.values()):
            if isinstance(given, int) and not isinstance(given, bool) and given > MAX_TEXT:
                raise _TooMuch(f"|{name}({given}) would build a text over {MAX_TEXT:,} characters")
        return original(value, *args, **kwargs)

    bounded.jinja_pass_arg = getattr(original, "jinja_pass_arg", None)  # type: ignore[attr-defined]
    return bounded


def _tojson(value: Any, indent: int | None = None) -> str:
    # Jinja's own tojson HTML-escapes <>&' for embedding in HTML; a prompt or a next_state needs exact JSON.
    return json.dumps(value, ensure_ascii=False, indent=indent)


_ENV = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
_ENV.filters["tojson"] = _tojson
_ENV.globals["range"] = _bounded_range
for _name in _WIDTH_FILTERS:
    _ENV.filters[_name] = _width_bounded(_name)


class _Renders(Protocol):
    def render(self, *args: Any, **kwargs: Any) -> str: ...


class _Plain:
    """A prompt taken literally (`maker vote`): the user's `{{` is text, not a template."""

    def __init__(self, text: str) -> None:
        self.text = text

    def render(self, *args: Any, **kwargs: Any) -> str:
        return self.text


def _compile(field: str, source: str) -> Template:
    try:
        return _ENV.from_string(source)
    except TemplateSyntaxError as exc:
        raise SpecError(f"{field}: template syntax error on line {exc.lineno}: {exc.message}") from exc


def _failure(field: str, at: str, exc: Exception, what: str = "template") -> SpecError:
    """A template or expression that failed while running, as one SpecError naming the field and the step."""
    message = str(exc).rstrip(".")
    if isinstance(exc, _TooMuch):
        return SpecError(
            f"{field}: the {what} does too much {at}: {message} (the limits on what a template may build and loop "
            "over are in the README, under Any task)"
        )
    if isinstance(exc, SecurityError) or (isinstance(exc, UndefinedError) and "object is unsafe" in message):
        return SpecError(f"{field}: the {what} tries to reach outside the sandbox ({message}) {at}")
    if isinstance(exc, UndefinedError):
        return SpecError(f"{field}: undefined variable {at}: {message}")
    return SpecError(f"{field}: the {what} failed {at}: {type(exc).__name__}: {message}")


def _render(template: _Renders, field: str, at: str, variables: dict[str, Any]) -> str:
    """The rendered text, within the sandbox's bounds (MAX_ITERATIONS, MAX_TEXT): a spec from anyone (MCP) must not
    keep a server thread and every worker busy for hours, nor send a 50 MB prompt with every sample."""
    token = _BUDGET.set([MAX_ITERATIONS])
    try:
        return template.render(variables)  # its output joined by _Sandbox.concat: at most MAX_TEXT characters
    except Exception as exc:  # a template is the spec author's code: any failure of it is a spec error
        raise _failure(field, at, exc) from exc
    finally:
        _BUDGET.reset(token)


# --- the task -------------------------------------------------------------------------------------


class SpecTask:
    """A `Task` defined by a TaskSpec. Templates, the regex and the schema are compiled once here, so build
    one per run and reuse it for every sample. `literal=True` takes system and prompt as plain text."""

    def __init__(self, spec: TaskSpec, *, literal: bool = False) -> None:
        self.spec = spec
        self.literal = literal
        self.name = spec.name
        self.max_output_tokens = spec.max_output_tokens
        self.max_steps = spec.done.max_steps  # the run loop fails a `when` run that reaches it
        self._parser = parser_for(spec.answer)
        self.semantic = spec.answer.semantic()
        if self.semantic is not None and isinstance(self._parser, TextAnswer):
            # The examples are measured as votes are compared: a text answer normalised as its parser does.
            groups = tuple(tuple(self._parser.normalize(t) for t in group) for group in self.semantic.meanings)
            self.semantic = replace(self.semantic, meanings=groups)
        self._system: _Renders | None
        if literal:
            self._system = None if spec.system is None else _Plain(spec.system)
            self._prompt: _Renders = _Plain(spec.prompt)
        else:
            self._system = None if spec.system is None else _compile("system", spec.system)
            self._prompt = _compile("prompt", spec.prompt)
        self._prompts = [self._prompt] + [
            _Plain(text) if literal else _compile(f"prompt_variants.{i}", text)
            for i, text in enumerate(spec.prompt_variants or [])
        ]
        self._next_state = None if spec.next_state is None else _compile("next_state", spec.next_state)
        self._when = None
        if spec.done.when is not None:
            try:
                self._when = _ENV.compile_expression(spec.done.when, undefined_to_none=False)
            except TemplateSyntaxError as exc:
                raise SpecError(f"done.when: expression syntax error: {exc.message}") from exc
        initial = spec.initial_state
        for variant in range(len(self._prompts)):
            self._messages(initial, 0, None, "at first render", variant)
        self._done(initial, 0, "at first render")

    @classmethod
    def from_definition(cls, definition: dict[str, JSON]) -> SpecTask:
        """The task `definition()` describes, on any machine."""
        if definition.get("kind") != "spec":
            raise SpecError(f"not a spec task definition (kind {definition.get('kind')!r})")
        spec = definition.get("spec")
        answer = spec.get("answer") if isinstance(spec, dict) else None
        if isinstance(answer, dict) and _recorded_before_meanings(answer):
            # Recorded before a real embedding model needed meanings or a threshold: it voted at the default.
            spec = spec | {"answer": answer | {"threshold": DEFAULT_THRESHOLD}}
        return cls(_validate(spec), literal=bool(definition.get("literal", False)))

    def definition(self) -> dict[str, JSON]:
        spec = self.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        spec["initial_state"] = self.spec.initial_state  # a null state is a state, not a missing field
        return {"kind": "spec", "spec": spec, "literal": self.literal}

    def initial_state(self) -> JSON:
        return self.spec.initial_state

    def total_steps(self) -> int | None:
        return self.spec.done.steps

    def messages(self, state: JSON, step: int, previous: JSON, variant: int = 0) -> list[dict[str, str]]:
        return self._messages(state, step, previous, f"at step {step}", variant)

    def _messages(self, state: JSON, step: int, previous: JSON, at: str, variant: int = 0) -> list[dict[str, str]]:
        variables = {"state": state, "step": step, "previous": previous}
        out = []
        if self._system is not None:
            out.append({"role": "system", "content": _render(self._system, "system", at, variables)})
        for example in self.spec.examples or []:
            out += [{"role": "user", "content": example.user}, {"role": "assistant", "content": example.assistant}]
        which = variant % len(self._prompts)
        field = "prompt" if which == 0 else f"prompt_variants.{which - 1}"
        out.append({"role": "user", "content": _render(self._prompts[which], field, at, variables)})
        return out

    def parse(self, text: str, state: JSON) -> Parsed:
        return self._parser.parse(text, state)

    def residue(self, text: str) -> str:
        return self._parser.residue(text)

    def next_state(self, state: JSON, step: int, previous: JSON, answer: JSON) -> JSON:
        if self._next_state is None:
            return answer
        variables = {"state": state, "step": step, "previous": previous, "answer": answer}
        text = _render(self._next_state, "next_state", f"at step {step}", variables)
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except ValueError as exc:
            raise SpecError(
                f"next_state: the output at step {step} is not JSON ({exc}): {text[:200]!r}; "
                "build it with the tojson filter, e.g. {{ answer | tojson }}"
            ) from exc

    def done(self, state: JSON, step: int) -> bool:
        return self._done(state, step, f"at step {step}")

    def _done(self, state: JSON, step: int, at: str) -> bool:
        if self._when is None:
            assert self.spec.done.steps is not None  # DoneSpec requires one of the two
            return step >= self.spec.done.steps
        try:
            return bool(self._when(state=state, step=step))
        except Exception as exc:  # the expression is the spec author's code
            raise _failure("done.when", at, exc, "expression") from exc

    def input_hash(self, state: JSON, step: int, previous: JSON) -> str:
        return digest(state, step, previous)
