"""The scorer and the report: errors are counted against the optimal sequence, after commit only."""

from __future__ import annotations

from maker_workers.domains import hanoi
from orchestrator.engine.runner import CommittedStep
from orchestrator.reports.report import RunReport, Scorer


def committed(step: int, move: hanoi.Move, next_state: hanoi.State, votes: int = 3) -> CommittedStep:
    return CommittedStep(
        step=step,
        state=[],
        answer=hanoi.payload(move, next_state),
        next_state=next_state,
        samples=votes,
        votes=votes,
        winner_votes=votes,
        runner_up_votes=0,
        red_flags=0,
        rounds=1,
    )


def test_a_perfect_run_scores_solved_with_no_errors() -> None:
    scorer, state = Scorer(3), hanoi.initial_state(3)
    for i, move in enumerate(hanoi.optimal_moves(3)):
        state = hanoi.apply_move(state, move)
        scorer.observe(committed(i, move, state, votes=3 if i else 5))
    assert (scorer.steps, scorer.errors, scorer.solved) == (7, 0, True)
    report = RunReport.build(
        "r",
        3,
        scorer,
        {"samples": 40, "red_flag:parse": 2, "red_flag:too_long": 1, "red_flags": 3, "temperature_omitted": 1},
        1.23456,
    )
    assert report.votes_per_step == {"3": 6, "5": 1}
    assert report.red_flags_by_reason == {"parse": 2, "too_long": 1}
    assert report.temperature_omitted and report.wall_s == 1.235 and report.samples == 40


def test_a_committed_wrong_move_is_an_error_and_the_run_is_not_solved() -> None:
    scorer = Scorer(2)
    scorer.observe(committed(0, (1, 0, 2), [[2], [], [1]]))  # optimal for 2 disks is (1, 0, 1)
    assert scorer.errors == 1 and not scorer.solved
    report = RunReport.build("r", 3, scorer, {}, 0.5, failure="step 1 failed: cap")
    assert not report.solved and report.failure == "step 1 failed: cap"
