"""What every HTTP provider shares: one JSON POST with every failure mapped onto our tree, and the
temperature fallback for models that refuse one.

What a failed POST becomes, by what another try can do about it:

    429 (rate limit)                                  RateLimited, with the server's Retry-After
    5xx, 408, 409, timeouts, resets, refused          Unavailable, with the server's Retry-After
    401, 403, 404, 402, other 4xx, no credit left     Rejected: the message names the provider, the URL,
                                                      the status and what to do
    400 about the temperature we sent                 asked again without one (HttpProvider)
    200 that is not a JSON object                     ProviderError: counted against the sample
"""

from __future__ import annotations

import math
import re
import time
from abc import ABC, abstractmethod
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from maker_workers import metrics
from maker_workers.errors import ProviderError, RateLimited, Rejected, Unavailable
from maker_workers.providers.base import Completion

RETRY_AFTER_CAP_S = 120.0  # a longer wait is the run's business (its own caps), not one sample's

# The environment variables that may hold each provider's key, most specific first.
_KEY_VARIABLES = {"openai": ("OPENAI_API_KEY", "MAKER_API_KEY"), "anthropic": ("ANTHROPIC_API_KEY", "MAKER_API_KEY")}

_ADVICE = {
    401: "check {keys}",
    403: "check that the key in {keys} may use this model",
    404: "check --model and --base-url",
}
_OUT_OF_CREDIT = "add credit to the account"
_KEY_LIKE = re.compile(r"\bsk-[\w*.-]+")  # OpenAI and Anthropic keys, masked or not, as servers echo them


class _TemperatureRefused(ProviderError):
    """A 400 about the temperature we sent; HttpProvider asks again without one, so it never leaves here."""


def key_variables(provider: str) -> tuple[str, ...]:
    return _KEY_VARIABLES.get(provider, ("MAKER_API_KEY",))


def post_json(
    client: httpx.Client, url: str, body: dict[str, Any], headers: dict[str, str], *, provider: str
) -> dict[str, Any]:
    """POST and decode; every failure is raised as the class the table above gives, naming `provider`.
    Each call's time, and each failure's status, go to the worker's metrics."""
    with metrics.PROVIDER_LATENCY.labels(provider).time():
        try:
            response = client.post(url, json=body, headers=headers)
        except httpx.UnsupportedProtocol as exc:
            metrics.PROVIDER_ERRORS.labels(provider, "unreachable").inc()
            raise Rejected(f"{provider} at {url}: {exc}: check --base-url") from exc
        except httpx.TimeoutException as exc:
            metrics.PROVIDER_ERRORS.labels(provider, "timeout").inc()
            raise Unavailable(f"{provider} at {url} did not answer in time ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            metrics.PROVIDER_ERRORS.labels(provider, "unreachable").inc()
            raise Unavailable(f"{provider} at {url}: {type(exc).__name__}: {exc}") from exc
    if response.status_code >= 400:
        metrics.PROVIDER_ERRORS.labels(provider, str(response.status_code)).inc()
        raise _failure(provider, url, response, headers, sent_temperature="temperature" in body)
    try:
        data = response.json()
    except ValueError as exc:
        raise ProviderError(f"{provider} at {url}: answer is not JSON: {response.text[:200]!r}") from exc
    if not isinstance(data, dict):
        raise ProviderError(f"{provider} at {url}: answer is not a JSON object")
    return data


def _failure(
    provider: str, url: str, response: httpx.Response, headers: dict[str, str], *, sent_temperature: bool
) -> ProviderError:
    status = response.status_code
    message, kinds = _error_of(response)
    message = _redact(message, headers)[:200]
    said = f"{provider} at {url} answered {status} {response.reason_phrase}".rstrip()
    if message:
        said += f" ({message})"
    if status == 402 or "insufficient_quota" in kinds or "credit balance is too low" in message.lower():
        return Rejected(f"{said}: {_OUT_OF_CREDIT}")
    if status == 429:
        return RateLimited(said, retry_after(response.headers))
    if status >= 500 or status in (408, 409):
        return Unavailable(said, retry_after(response.headers))
    if status == 400 and sent_temperature and "temperature" in message.lower():
        return _TemperatureRefused(said)
    advice = _ADVICE.get(status, "the provider will not take this request as sent; check --model and the settings")
    return Rejected(f"{said}: {advice.format(keys=' / '.join(key_variables(provider)))}")


def _error_of(response: httpx.Response) -> tuple[str, set[str]]:
    """The error's message and its type and code, from the shapes servers use: OpenAI's and Anthropic's
    {"error": {"message", "type", "code"}}, Ollama's {"error": "..."}; else the body."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, str):
        return error, set()
    if isinstance(error, dict):
        kinds = {str(error[field]) for field in ("type", "code") if error.get(field)}
        return str(error.get("message") or " ".join(sorted(kinds))), kinds
    return response.text.strip(), set()


def _redact(text: str, headers: dict[str, str]) -> str:
    """No key in a message: not the one we sent, nor what a server echoes of one."""
    for name, value in headers.items():
        if name.lower() in ("authorization", "x-api-key"):
            secret = value.removeprefix("Bearer ").strip()
            if secret:
                text = text.replace(secret, "<key>")
    return _KEY_LIKE.sub("<key>", text)


def retry_after(headers: httpx.Headers) -> float | None:
    """The wait a server asks for, in seconds, capped: OpenAI's retry-after-ms, else Retry-After as
    seconds or as an HTTP date."""
    try:
        if millis := headers.get("retry-after-ms"):
            seconds = float(millis) / 1000
        elif value := headers.get("retry-after"):
            seconds = _seconds_until(value)
        else:
            return None
    except (ValueError, TypeError):
        return None
    return None if math.isnan(seconds) else min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


def _seconds_until(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        when = parsedate_to_datetime(value)
    if when.tzinfo is None:  # "-0000": UTC, says RFC 5322
        when = when.replace(tzinfo=UTC)
    return when.timestamp() - time.time()


class HttpProvider(ABC):
    """A provider over HTTP. Subclasses say how to ask (`_ask`); this class handles temperature."""

    def __init__(self) -> None:
        self._omit_temperature = False  # set once the model has refused a temperature

    def complete(self, messages: list[dict[str, str]], *, temperature: float | None, max_tokens: int) -> Completion:
        omit = temperature is None or self._omit_temperature
        try:
            completion = self._ask(messages, None if omit else temperature, max_tokens)
        except _TemperatureRefused:
            # Some models (reasoning models among them) answer 400 to any temperature but their default.
            self._omit_temperature = omit = True
            completion = self._ask(messages, None, max_tokens)
        completion.temperature_omitted = omit and temperature is not None
        return completion

    @abstractmethod
    def _ask(self, messages: list[dict[str, str]], temperature: float | None, max_tokens: int) -> Completion:
        """One request; temperature None means: send none."""
