"""Batch reranking on Ray Data: a callable class for ``Dataset.map_batches`` and the savings over a dataset.

Each Ray Data worker (an actor) builds one scorer from the model path and the scorer options (the per-process
model cache holds its weights) and runs the same :class:`~zerank_integrations.rerank.RerankStep` as every
other caller, one row at a time, so a row's scores are exactly what an in-process ``RerankStep.run`` gives:

>>> ds = ray.data.from_items([{"query": q, "documents": docs, "ids": ids}, ...])
>>> out = ds.map_batches(RerankBatches, fn_constructor_kwargs={"model": path, "top_n": 5, "llm": "gpt-4o"},
...                      compute=ray.data.ActorPoolStrategy(size=2), num_gpus=1, batch_size=8).materialize()
>>> dataset_savings(out)["tokens_saved"]

(``compute=ActorPoolStrategy(size=N)`` is what ``concurrency=N`` was before Ray 2.51 deprecated it.)

:func:`rerank_dataset` does the same with its options checked on the driver first (a typo fails there, in one
line, not inside a worker), and :class:`RayRerankStage` runs the rerank stage of ``evaluate`` through it.
Ray is imported lazily (through :mod:`zerank_integrations.ray_support`): importing this module needs no Ray.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from zerank_integrations.base import DEFAULT_MODEL, rounded_percent, validate_instruction
from zerank_integrations.options import SCORER_OPTIONS
from zerank_integrations.ray_support import ray_cluster, require_ray
from zerank_integrations.rerank import DEFAULT_BUDGET_ENCODING, RerankResult, RerankStep
from zerank_integrations.selection import SelectionPolicy

if TYPE_CHECKING:
    from ray.data import Dataset

    from zerank_integrations.accounting import TokenLedger

__all__ = [
    "SAVINGS_COLUMNS",
    "BatchRerankSettings",
    "RayRerankStage",
    "RerankBatches",
    "dataset_savings",
    "ray_session",
    "rerank_dataset",
]

#: The per-row token columns :class:`RerankBatches` writes (what ``TokenLedger.record`` counts for the row).
logger = logging.getLogger("zerank_integrations.ray")
SAVINGS_COLUMNS: tuple[str, ...] = ("n_candidates", "n_kept", "tokens_in", "tokens_kept", "tokens_saved")
_SCORER_OPTION_NAMES = frozenset(option.name for option in SCORER_OPTIONS)
_DEFAULT_ROWS_PER_BATCH = 4  # rows, each a query with its candidates: small batches keep every worker busy
#: Workers are not restarted by default. Ray Data puts each worker's constructor arguments in the object store
#: on purpose (it ``ray.put``s the map function, ray-project/ray#57733) and Ray cannot promise to restart an
#: actor whose arguments live there (#53727: it logs an error for every such worker); a worker that dies fails
#: the job with Ray's error instead. ``max_restarts=-1`` gives Ray Data's default (restart forever) back.
DEFAULT_MAX_RESTARTS = 0


@dataclass(frozen=True)
class BatchRerankSettings:
    """Everything a worker needs, checked where it is built (on the driver) so a worker never fails on a typo.

    ``scorer_options`` are ``ZerankScorer`` keyword options (the names of
    :data:`~zerank_integrations.options.SCORER_OPTIONS`); ``llm``/``encoding``/``price_per_million_input``/
    ``separator`` are the ``TokenLedger`` settings the per-row token counts are made with (o200k_base when
    neither ``llm`` nor ``encoding`` is given).
    """

    model: str = DEFAULT_MODEL
    top_n: int | None = None
    score_threshold: float | None = None
    max_prompt_tokens: int | None = None
    instruction: str | None = None
    llm: str | None = None
    encoding: str | None = None
    price_per_million_input: float | None = None
    separator: str | None = None
    scorer_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"model must be a hub id or a local checkpoint folder, got {self.model!r}")
        unknown = sorted(set(self.scorer_options) - _SCORER_OPTION_NAMES)
        if unknown:
            raise TypeError(
                f"unknown scorer option(s) {', '.join(unknown)}; known: {', '.join(sorted(_SCORER_OPTION_NAMES))}"
            )
        object.__setattr__(self, "scorer_options", dict(self.scorer_options))
        object.__setattr__(self, "instruction", validate_instruction(self.instruction))
        self.policy  # noqa: B018 - validates threshold, top_n and budget now, on the driver
        self.ledger()  # and the LLM / encoding / price: a worker must not be the first to find them wrong

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> BatchRerankSettings:
        """Split flat keyword arguments (``RerankBatches``'s constructor) into settings and scorer options."""
        own = {name for name in cls.__dataclass_fields__ if name != "scorer_options"}
        return cls(
            **{k: v for k, v in kwargs.items() if k in own},
            scorer_options={k: v for k, v in kwargs.items() if k not in own},
        )

    def to_kwargs(self) -> dict[str, Any]:
        """The flat ``fn_constructor_kwargs`` for ``map_batches`` (only what differs from the defaults)."""
        own = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "scorer_options"}
        defaults = BatchRerankSettings()
        flat = {k: v for k, v in own.items() if v != getattr(defaults, k) or k == "model"}
        return {**flat, **self.scorer_options}

    @property
    def policy(self) -> SelectionPolicy:
        return SelectionPolicy(
            score_threshold=self.score_threshold, top_n=self.top_n, max_prompt_tokens=self.max_prompt_tokens
        )

    def ledger(self) -> TokenLedger:
        """A ledger that only counts (no history kept): the worker reports each row's counts instead."""
        from zerank_integrations.accounting import TokenLedger

        extra: dict[str, Any] = {} if self.separator is None else {"separator": self.separator}
        encoding = self.encoding if self.encoding is not None or self.llm is not None else DEFAULT_BUDGET_ENCODING
        return TokenLedger(
            llm=self.llm,
            encoding=encoding,
            price_per_million_input=self.price_per_million_input,
            max_records=0,
            **extra,
        )

    @classmethod
    def for_step(cls, step: RerankStep, model: str, scorer_options: Mapping[str, Any]) -> BatchRerankSettings:
        """The settings that make a worker run ``step`` (its policy, instruction and ledger) on ``model``."""
        ledger = step.ledger
        if ledger is not None and getattr(ledger, "formatter", None) is not None:
            raise ValueError("a ledger with a formatter cannot be rebuilt in Ray workers; count plain documents")
        summary = ledger.summary() if ledger is not None and hasattr(ledger, "summary") else {}
        return cls(
            model=model,
            top_n=step.policy.top_n,
            score_threshold=step.policy.score_threshold,
            max_prompt_tokens=step.policy.max_prompt_tokens,
            instruction=step.instruction,
            llm=getattr(ledger, "llm", None),
            encoding=getattr(ledger, "encoding", None),
            # an explicit price travels; a table price is looked up again from ``llm`` in the worker
            price_per_million_input=summary.get("price_per_million_input")
            if summary.get("price_source") == "override"
            else None,
            separator=getattr(ledger, "separator", None),
            scorer_options=scorer_options,
        )


class RerankBatches:
    """Callable class for ``Dataset.map_batches``: rows of ``query``, ``documents`` (and optional ``ids``) in;
    per row the ranking, the scores, the kept documents and the token counts the ledger would record out.

    Constructor keywords: ``model``, the selection policy (``top_n``, ``score_threshold``,
    ``max_prompt_tokens``), ``instruction``, the ledger settings (``llm``, ``encoding``,
    ``price_per_million_input``, ``separator``) and any ``ZerankScorer`` option (``device``, ``dtype``,
    ``batch_tokens``, ...). Output columns, added to the input ones:

    * ``ranking``: document indexes, best first; ``scores``: each document's probability, in input order;
    * ``kept``: the documents the policy keeps, best first (``kept_indexes``; ``kept_ids`` with ``ids``);
    * ``over_budget``: indexes that passed threshold and ``top_n`` but not ``max_prompt_tokens``;
    * :data:`SAVINGS_COLUMNS` and ``cost_saved_usd`` (``None`` without a price).
    """

    def __init__(self, **kwargs: Any) -> None:
        self.settings = BatchRerankSettings.from_kwargs(kwargs)
        from zerank_integrations.scoring import ZerankScorer

        scorer = ZerankScorer(self.settings.model, **self.settings.scorer_options)
        self.step = RerankStep(
            scorer, self.settings.policy, ledger=self.settings.ledger(), instruction=self.settings.instruction
        )

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """One batch (``batch_format="numpy"`` or ``"pandas"``): each row is reranked as one ``RerankStep.run``."""
        for column in ("query", "documents"):
            if column not in batch:
                raise KeyError(f"RerankBatches needs a {column!r} column; got columns {sorted(batch)}")
        queries = list(batch["query"])
        documents = [_strings(docs, "documents", row) for row, docs in enumerate(batch["documents"])]
        ids = (
            [None if _missing(i) else _strings(i, "ids", row) for row, i in enumerate(batch["ids"])]
            if "ids" in batch
            else None
        )
        rows = [
            self._row(query, docs, None if ids is None else ids[k], ids is not None)
            for k, (query, docs) in enumerate(zip(queries, documents, strict=True))
        ]
        out: dict[str, Any] = {name: _column(batch[name]) for name in batch}
        for name in rows[0] if rows else ():
            out[name] = _column([row[name] for row in rows])
        return out

    def _row(self, query: str, documents: list[str], ids: list[str] | None, with_ids: bool) -> dict[str, Any]:
        if ids is not None and len(ids) != len(documents):
            raise ValueError(f"ids has {len(ids)} entries for {len(documents)} documents (query {query!r})")
        result = self.step.run(str(query), documents)
        row = row_columns(result, documents, ids)
        if with_ids and ids is None:  # a row without ids in a dataset that has them
            row["kept_ids"] = None
        return row


def row_columns(result: RerankResult, documents: Sequence[str], ids: Sequence[str] | None) -> dict[str, Any]:
    """The output columns of one row (see :class:`RerankBatches`) from its :class:`RerankResult`."""
    scores = [0.0] * len(documents)
    for index, score in result.ranking:
        scores[index] = float(score)
    savings = result.savings
    row: dict[str, Any] = {
        "ranking": [index for index, _ in result.ranking],
        "scores": scores,
        "kept": [documents[index] for index, _ in result.kept],
        "kept_indexes": [index for index, _ in result.kept],
        "over_budget": list(result.over_budget),
        "n_candidates": savings.candidates,
        "n_kept": savings.kept,
        "tokens_in": savings.tokens_in,
        "tokens_kept": savings.tokens_kept,
        "tokens_saved": savings.tokens_saved,
        "cost_saved_usd": savings.cost_saved_usd,
    }
    if ids is not None:
        row["kept_ids"] = [ids[index] for index, _ in result.kept]
    return row


def _strings(values: Any, column: str, row: int) -> list[str]:
    """A list cell (a numpy array or list of str) as a list of str, naming the row when it is not one."""
    if isinstance(values, (str, bytes)) or values is None or not hasattr(values, "__iter__"):
        raise TypeError(f"{column} of row {row} must be a list of strings, got {type(values).__name__}")
    items = list(values)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"{column}[{index}] of row {row} is {type(item).__name__}, expected str")
    return [str(item) for item in items]  # np.str_ -> str


def _missing(value: Any) -> bool:
    """A cell a row left empty: ``None`` (numpy batches) or NaN (pandas batches)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _column(values: Iterable[Any]) -> Any:
    """A 1-D numpy column; lists stay one object per row (``np.array`` would stack equal-length lists)."""
    import numpy as np

    items = list(values)
    lists = [isinstance(v, (list, tuple, np.ndarray)) for v in items]
    if any(lists) and all(is_list or v is None for is_list, v in zip(lists, items, strict=True)):
        column = np.empty(len(items), dtype=object)
        for index, value in enumerate(items):
            column[index] = None if value is None else list(value)
        return column
    return np.asarray(items, dtype=object if any(v is None for v in items) else None)


# -- the driver side -----------------------------------------------------------------------------------------


def rerank_dataset(
    dataset: Dataset,
    model: str = DEFAULT_MODEL,
    *,
    workers: int = 1,
    num_gpus: float | None = None,
    batch_size: int = _DEFAULT_ROWS_PER_BATCH,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
    **options: Any,
) -> Dataset:
    """``dataset.map_batches(RerankBatches, ...)`` with ``options`` checked here first (lazy, like map_batches).

    ``workers`` is the size of the actor pool (one scorer each; ``concurrency`` in Ray before 2.51);
    ``num_gpus`` is per worker (1 puts each on its own GPU); ``batch_size`` counts rows (queries);
    ``max_restarts`` is Ray's per-worker restart count (see :data:`DEFAULT_MAX_RESTARTS`).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1 (rows per batch), got {batch_size!r}")
    settings = BatchRerankSettings.from_kwargs({"model": model, **options})
    data = require_ray("rerank_dataset", "ray.data")
    gpus: dict[str, Any] = {} if not num_gpus else {"num_gpus": num_gpus}
    with warnings.catch_warnings():
        # Ray 2.60 takes max_restarts only among the **ray_remote_args it deprecates (no named parameter yet)
        warnings.filterwarnings("ignore", message=".*ray_remote_args. is deprecated")
        return dataset.map_batches(
            RerankBatches,
            fn_constructor_kwargs=settings.to_kwargs(),
            compute=data.ActorPoolStrategy(size=workers),  # Ray >= 2.51 deprecates concurrency= for this
            batch_size=batch_size,
            batch_format="numpy",
            **gpus,
            **_restarts(dataset, max_restarts),
        )


def _restarts(dataset: Dataset, max_restarts: int) -> dict[str, int]:
    """``max_restarts`` as this Ray's ``map_batches`` takes it: a named parameter, or one of the remote args;
    a Ray that takes neither restarts workers its own way."""
    import inspect

    parameters = inspect.signature(dataset.map_batches).parameters
    if "max_restarts" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return {"max_restarts": max_restarts}
    logger.debug("this Ray Data's map_batches takes no max_restarts: workers restart as it decides")
    return {}


def dataset_savings(dataset: Dataset) -> dict[str, Any]:
    """Token savings summed over a reranked dataset, with the keys of ``TokenLedger.summary()``'s totals.

    Runs the dataset if it is lazy: ``materialize()`` it first when you also want its rows, or the reranking
    runs twice.
    """
    totals = dict.fromkeys(("calls", "candidates", "kept", "tokens_in", "tokens_kept"), 0)
    costs: list[float] = []
    columns = ["n_candidates", "n_kept", "tokens_in", "tokens_kept", "cost_saved_usd"]
    for batch in dataset.select_columns(columns).iter_batches(batch_format="numpy"):
        totals["calls"] += len(batch["tokens_in"])
        totals["candidates"] += int(batch["n_candidates"].sum())
        totals["kept"] += int(batch["n_kept"].sum())
        totals["tokens_in"] += int(batch["tokens_in"].sum())
        totals["tokens_kept"] += int(batch["tokens_kept"].sum())
        priced = [float(c) for c in batch["cost_saved_usd"] if c is not None and c == c]  # c == c: not NaN
        if priced:
            costs.extend(priced)
    saved = totals["tokens_in"] - totals["tokens_kept"]
    percent = rounded_percent(saved, totals["tokens_in"])  # as the ledger's summary rounds it
    cost = math.fsum(costs) if costs else None  # per-row costs: equal to the ledger's up to float rounding
    return {**totals, "tokens_saved": saved, "percent_saved": percent, "cost_saved_usd": cost}


class RayRerankStage:
    """The rerank stage of :func:`~zerank_integrations.evaluation.evaluate` on Ray Data workers.

    The queries become one dataset, :class:`RerankBatches` reranks them on ``workers`` workers with the step's
    policy, instruction and ledger settings, and each row's scores come back to the driver, where
    ``step.finish`` records them on the evaluation's ledger (so its totals are the ones an in-process run
    records); the worker's kept documents and token counts are checked against the driver's.
    """

    def __init__(
        self,
        model: str,
        scorer_options: Mapping[str, Any] | None = None,
        *,
        workers: int = 1,
        num_gpus: float | None = None,
        batch_size: int = _DEFAULT_ROWS_PER_BATCH,
    ) -> None:
        BatchRerankSettings(model=model, scorer_options=scorer_options or {})
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        self.model = model
        self.scorer_options = dict(scorer_options or {})
        self.workers = workers
        self.num_gpus = num_gpus
        self.batch_size = batch_size

    def __call__(
        self,
        step: RerankStep,
        requests: Sequence[tuple[str, list[str]]],
        progress: Callable[[int], None] | None = None,
    ) -> list[RerankResult]:
        data = require_ray("the Ray rerank stage", "ray.data")
        settings = BatchRerankSettings.for_step(step, self.model, self.scorer_options)
        rows = [{"row": k, "query": q, "documents": list(docs)} for k, (q, docs) in enumerate(requests)]
        if not rows:
            return []
        blocks = min(len(rows), self.workers * 4)
        dataset = data.from_items(rows, override_num_blocks=blocks)
        reranked = rerank_dataset(
            dataset,
            workers=self.workers,
            num_gpus=self.num_gpus,
            batch_size=self.batch_size,
            **settings.to_kwargs(),
        )
        answers: dict[int, dict[str, Any]] = {}
        for batch in reranked.iter_batches(batch_format="numpy", batch_size=None):
            for k, row in enumerate(batch["row"]):
                answers[int(row)] = {name: batch[name][k] for name in ("scores", "kept_indexes", *SAVINGS_COLUMNS)}
            if progress is not None:
                progress(len(batch["row"]))
        return [self._finish(step, rows[k]["query"], rows[k]["documents"], answers[k]) for k in range(len(rows))]

    @staticmethod
    def _finish(step: RerankStep, query: str, documents: list[str], answer: Mapping[str, Any]) -> RerankResult:
        result = step.finish(query, documents, [float(s) for s in answer["scores"]])
        if result.savings is None:  # no ledger on the driver: nothing to check the worker's counts against
            return result
        worker = (list(map(int, answer["kept_indexes"])), int(answer["tokens_in"]), int(answer["tokens_kept"]))
        here = ([i for i, _ in result.kept], result.savings.tokens_in, result.savings.tokens_kept)
        if worker != here:
            raise RuntimeError(
                f"a Ray worker and the driver disagree on query {query!r}: kept/tokens_in/tokens_kept {worker} "
                f"there, {here} here (different ledger settings?)"
            )
        return result


@contextlib.contextmanager
def ray_session(num_cpus: int | None = None, *, feature: str = "Ray Data") -> Iterator[ModuleType]:
    """``ray`` for a Ray Data job (:func:`~zerank_integrations.ray_support.ray_cluster`: the Ray already
    initialised, ``$RAY_ADDRESS`` joined, or a local cluster of ``num_cpus`` CPUs on loopback, shut down after).

    Ray Data's progress bars and INFO logs are silenced: the caller reports progress itself.
    """
    with ray_cluster(feature, num_cpus=num_cpus) as ray:
        data = require_ray(feature, "ray.data")
        context = data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        # ...and the warning that says they are off (logged once per process when a dataset runs)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
        yield ray
