"""One-off integer arithmetic (`maker vote --prompt "Compute: 12 * (3 + 4)"`).

Reads a `Compute: <expression>` line (integers, + - * and parentheses, evaluated by walking its `ast`, never
`eval`). The response is a line of reasoning, then `{"answer": N}` on a line of its own, so json, regex and
text formats all parse it.
"""

from __future__ import annotations

import ast
import json
import operator
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from maker_workers.simllm.oracles.base import FILLER, Oracle

_LINE = re.compile(r"^Compute:\s*(.+?)\s*$", re.M)
_MAX_CHARS = 500  # keeps the recursion of `_value` (one level per operator) and the numbers small
_BINARY: dict[type[ast.operator], Callable[[int, int], int]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
}
_UNARY: dict[type[ast.unaryop], Callable[[int], int]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def evaluate(expression: str) -> int:
    """The value of an integer expression with + - * and parentheses; ValueError for anything else."""
    if len(expression) > _MAX_CHARS:
        raise ValueError(f"the expression is over {_MAX_CHARS} characters")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from exc
    return _value(tree.body)


def _value(node: ast.expr) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_value(node.left), _value(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand))
    raise ValueError(f"only integers, + - * and parentheses are allowed, not {ast.unparse(node)!r}")


@dataclass(frozen=True)
class ArithmeticProblem:
    expression: str
    value: int
    filler: str = FILLER

    def right(self, rng: random.Random) -> int:
        return self.value

    def mistake(self) -> int:
        """Off by one: the slip of a carry or a sign."""
        return self.value + 1

    def corrupt(self, right: int) -> int:
        return right - 10

    def other(self, right: int, mistake: int | None, rng: random.Random) -> int:
        while True:
            answer = right + rng.choice((-1, 1)) * rng.randint(2, 99)
            if answer not in (right, mistake):
                return answer

    def render(self, answer: int) -> str:
        return f"Working through {self.expression} step by step gives {answer}.\n" + json.dumps({"answer": answer})

    def malformed(self, answer: int, rng: random.Random) -> str:
        return rng.choice(
            [
                f'{{"answer": {answer}',
                json.dumps({"result": answer}),
                json.dumps({"answer": str(answer)}),
                f"The result is {answer}.",
            ]
        )


def read(prompt: str) -> ArithmeticProblem | None:
    lines = _LINE.findall(prompt)
    if not lines:
        return None
    return ArithmeticProblem(lines[-1], evaluate(lines[-1]))


ORACLE = Oracle("arithmetic", "a 'Compute: <integer expression>' line", read)
