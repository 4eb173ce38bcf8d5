"""Real models from one command: `--provider/--model/--base-url/--rpm/--tpm/--ensemble`, prices and budgets.

Runs go through the embedded cluster's real worker processes to the simulated LLM over HTTP, speaking
each provider's own API shape.
"""

from __future__ import annotations

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize(
    ("args", "env", "mention"),
    [
        (["--provider", "openai", "--model", "gpt-4.1-mini"], {}, "OPENAI_API_KEY"),
        (["--provider", "anthropic", "--model", "claude-haiku-4-5"], {}, "ANTHROPIC_API_KEY"),
        (["--ensemble", "sim:a,anthropic:claude-haiku-4-5"], {}, "ANTHROPIC_API_KEY"),
        (["--provider", "openai"], {"OPENAI_API_KEY": "sk-x"}, "--model"),
        (["--provider", "gemini", "--model", "m"], {}, "gemini"),
        (["--ensemble", "openai"], {}, "provider:model"),
        (["--rpm", "0"], {}, "--rpm"),
        (["--price-in", "0.4"], {}, "--price-out"),
        (["--provider", "ollama", "--model", "llama3.2", "--sim-error-rate", "0.1"], {}, "--sim-"),
        (
            ["--provider", "openai", "--model", "gpt-9", "--max-cost-usd", "1"],
            {"OPENAI_API_KEY": "sk-x"},
            "price table",
        ),
        (["--redis-url", "redis://127.0.0.1:1/0", "--model", "m"], {}, "MAKER_MODEL"),
    ],
)
def test_a_model_that_cannot_be_called_is_named_before_anything_starts(
    args: list[str], env: dict[str, str], mention: str
) -> None:
    result = run_cli("hanoi", "--disks", "2", *args, timeout=60, **env)
    assert result.returncode == 2, result.stderr
    assert mention in result.stderr and "Traceback" not in result.stderr
    assert "embedded cluster up" not in result.stderr  # nothing was started
