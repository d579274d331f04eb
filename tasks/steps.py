"""One declaration per pipeline step: `@step(name, modules)` on a typed function.

From that one declaration and the function's signature come the Prefect task (named
`name`), its cache key (the step's inputs, and the source of `modules` and every project
module they import: tasks/caching.py) and, when the function takes a keyword-only
`work`, its content-addressed work folder `<data_dir>/work/<name_>/<key>/` (`name_`:
the name with `_` for `-`), keyed exactly as the cache is. A new parameter joins both at
once: they cannot drift apart.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from tickercast.fanout import Outcomes, batch_result
from tickercast.records import Record
from tickercast.tasks.caching import content_cache_key
from tickercast.tasks.workfiles import work_dir


def step(
    name: str,
    modules: Sequence[str],
    *,
    cacheable: Callable[[dict[str, Any]], bool] | None = None,
    **options: Any,
) -> Callable[[Callable[..., Any]], Any]:
    """A cached pipeline step running the library code of `modules`.

    `cacheable(params)` may veto caching a call (a live source is fetched every run);
    `options` go to Prefect's `task`. The function's `work` parameter (keyword-only, if
    it has one) is filled with the step's work folder; callers never pass it, and it is
    no part of the task's parameters. Every other parameter is, `data_dir` among them.
    """
    modules = tuple(modules)
    folder_name = name.replace("-", "_")

    def declare(fn: Callable[..., Any]) -> Any:
        signature = inspect.signature(fn)
        takes_work = "work" in signature.parameters
        public = signature.replace(
            parameters=[p for p in signature.parameters.values() if p.name != "work"]
        )

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            if not takes_work:
                return fn(*args, **kwargs)
            bound = public.bind(*args, **kwargs)
            bound.apply_defaults()
            params = dict(bound.arguments)
            folder = work_dir(params["data_dir"], folder_name, modules, params)
            return fn(*bound.args, **bound.kwargs, work=folder)

        run.__signature__ = public  # type: ignore[attr-defined]
        key = content_cache_key(folder_name, modules, cacheable)
        return task(name=name, cache_key_fn=key, **options)(run)

    return declare


def batch_of(
    outcomes: Outcomes, records: Callable[[Any], Iterable[Record]], failed_as: str
) -> dict:
    """What a step that ran several tickers returns: `fanout.batch_result` (`fanout.Share`
    hands each ticker its part), with the files of every record of each ticker's value
    (`records(value)`) under "outputs", so a cached batch whose files changed runs again.
    Each failed ticker is logged with its traceback, as a failed task run logs it
    (`"<ticker>: <failed_as>: <error>"`), and each skipped one as a warning."""
    logger = get_run_logger()
    for failed in outcomes.failed():
        logger.error(
            "%s: %s: %s", failed.ticker, failed_as, failed.error, exc_info=failed.exception
        )
    for skipped in outcomes.skipped():
        logger.warning("%s: skipped: %s", skipped.ticker, skipped.error)
    files = {
        path: digest
        for value in outcomes.values().values()
        for record in records(value)
        for path, digest in record.outputs.items()
    }
    return {**batch_result(outcomes), "outputs": files}
