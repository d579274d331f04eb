"""Running a search's trials: keep `parallel_trials` in flight until the oracle or the
budget stops, telling the oracle each outcome.

The oracle is asked and told only here, in the caller's thread (Keras Tuner's oracle is not
meant to be shared between threads); the trials themselves run wherever `submit` sends
them (the flow: a Prefect task each, on its task runner). A trial's future is anything
whose `result()` returns its result or raises its error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tickercast.tuning.config import OBJECTIVE
from tickercast.tuning.search import Proposal, Search

Submit = Callable[[Proposal], Any]  # a proposal -> its running trial's future
NextDone = Callable[[list[Any]], Any]  # running futures -> the next one to end


def describe(proposal: Proposal) -> str:
    c = proposal.settings
    text = (
        f"trial {proposal.trial_id}"
        + (" (again: it did not finish last time)" if proposal.retry else "")
        + f": {c.model} units {c.units}, lookback {c.lookback}, batch {c.batch_size}, "
        f"lr {c.learning_rate:.3g}, dropout {c.dropout:.3g}, l2 {c.l2:.3g}, "
        f"{proposal.epochs} epochs"
    )
    if proposal.resume_from:
        text += f" (continues trial {proposal.values['tuner/trial_id']})"
    return text


def run_trials(
    search: Search,
    parallel: int,
    submit: Submit,
    next_done: NextDone,
    say: Callable[[str], None] = print,
) -> None:
    """Run trials until the oracle has none left or the budget is spent, at most
    `parallel` at once; each outcome is recorded in `search` as it ends."""
    free = [f"slot-{i}" for i in reversed(range(parallel))]
    running: dict[Any, tuple[str, Proposal]] = {}
    exhausted = False
    while True:
        while free and not exhausted:
            proposal = search.propose(free[-1])
            if proposal == "idle" and running:
                break  # the oracle waits for a running trial to end first
            if isinstance(proposal, str):
                exhausted = True
                break
            say(describe(proposal))
            running[submit(proposal)] = (free.pop(), proposal)
        if not running:
            return
        future = next_done(list(running))
        slot, proposal = running.pop(future)
        free.append(slot)
        _settle(search, proposal, future, say)


def _settle(search: Search, proposal: Proposal, future: Any, say: Callable[[str], None]) -> None:
    """Record a trial that ended: its result, or its failure (the search decides whether
    it is tried again)."""
    try:
        result = future.result()
    except Exception as error:
        say(f"trial {proposal.trial_id} failed: {type(error).__name__}: {error}")
        search.fail(proposal.trial_id, error)
        return
    search.record(proposal.trial_id, result)
    say(
        f"trial {proposal.trial_id}: {OBJECTIVE} {result[OBJECTIVE]:.6g} after "
        f"{result['epochs_run']} epoch(s), {result['seconds']:.1f} s "
        f"[{len(search.oracle.trials)}/{search.config.budget.max_trials}]"
    )
