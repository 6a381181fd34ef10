"""The agent catalog: a TOML file naming agents by `module:attribute`.

A team brings its own agents by pointing `AGENTLEDGER_CATALOG` at its own file; nothing
in the service changes. References are imported with the catalog file's own folder and
the working directory first on `sys.path` (or `AGENTLEDGER_APP_DIR`, like uvicorn's
`--app-dir`), so a module beside the catalog is found however agentledger was installed.
A worker checks every reference when it starts (`Catalog.check`); a bad one stops it with
the list of what is wrong, instead of failing each task.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_ai import Agent
from pydantic_ai.models import Model

from agentledger.domain.errors import first_problem
from agentledger.domain.memory.recall import RecallSpec
from agentledger.domain.monitoring.rules import AlertRule
from agentledger.domain.pricing import ModelPrice
from agentledger.domain.routing.routes import RouterSpec
from agentledger.domain.streaming.spec import StreamSpec
from agentledger.domain.tools.policies import MiddlewareSpec
from agentledger.handlers.evaluation.datasets import DatasetEntry, dataset_entries
from agentledger.handlers.graphs.catalog import GraphEntry, check_graphs, graph_entries
from agentledger.handlers.monitoring.catalog import alert_rules
from agentledger.handlers.orchestration.catalog import workflow_entries
from agentledger.handlers.refs import CatalogError, load_ref
from agentledger.handlers.routing.catalog import router_spec
from agentledger.handlers.streaming.catalog import stream_spec
from agentledger.handlers.tools.catalog import middleware_spec

__all__ = [
    "Catalog",
    "CatalogEntry",
    "CatalogError",
    "GraphEntry",
    "ModelFactory",
    "UnknownAgent",
    "put_on_import_path",
]

ModelFactory = Callable[[str, str | None], Model]
"""Builds a model from a catalog entry's `model` string and optional `base_url`."""


class UnknownAgent(CatalogError):
    """A task named an agent the catalog does not have."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown agent {name!r}; the catalog has: {', '.join(known) or 'none'}")
        self.name = name


@dataclass(kw_only=True)
class CatalogEntry:
    """One agent of the catalog."""

    name: str
    """The name tasks use (`<prefix>.tasks.run.<name>`)."""
    ref: str
    """`module:attribute` of the pydantic-ai Agent."""
    description: str = ""
    price: ModelPrice | None = None
    """Price per million tokens, when known: runs then record their cost."""
    model: Model | None = None
    """A model that replaces the agent's own (from the entry's `model` / `base_url`)."""
    recall: RecallSpec | None = None
    """Past turns recalled from the memory view before each run (`recall = {...}`)."""
    middleware: MiddlewareSpec | None = None
    """Policies around the agent's tool calls (`[agents.<name>.middleware]`)."""
    stream: StreamSpec | None = None
    """How the agent's streamed runs are processed (`[agents.<name>.stream]`)."""
    _agent: Agent[Any, Any] | None = field(default=None, repr=False)

    @property
    def agent(self) -> Agent[Any, Any]:
        if self._agent is None:
            self._agent = _load_agent(self.ref)
        return self._agent


def _recall_spec(path: Path, name: str, value: Any) -> RecallSpec | None:
    """An agent's `recall`: `true` (the defaults), `false`/absent, or a table of
    `RecallSpec` fields."""
    if value is None or value is False:
        return None
    if value is True:
        return RecallSpec()
    if not isinstance(value, dict):
        raise CatalogError(f"catalog {path}: agent {name!r}: recall must be true or a table")
    try:
        return RecallSpec.model_validate(value)
    except ValidationError as e:
        raise CatalogError(
            f"catalog {path}: agent {name!r}: recall: {first_problem(e, 'recall')}"
        ) from None


def put_on_import_path(folders: list[Path]) -> None:
    """Put `folders` first on `sys.path` (each once), where catalog references are looked
    up: a user's `mycompany/agents.py` beside the catalog must import without PYTHONPATH."""
    for folder in reversed(folders):
        entry = str(folder.resolve())
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)


def _load_agent(ref: str) -> Agent[Any, Any]:
    obj = load_ref(ref)
    if not isinstance(obj, Agent):
        raise CatalogError(f"{ref!r} is a {type(obj).__name__}, not a pydantic_ai.Agent")
    return obj


@dataclass(kw_only=True)
class Catalog:
    """The agents a worker can run, and the demo's tasks."""

    path: Path
    entries: dict[str, CatalogEntry]
    graphs: dict[str, GraphEntry] = field(default_factory=dict)
    demo_tasks: list[tuple[str, str, str | None]] = field(default_factory=list)
    router: RouterSpec = field(default_factory=RouterSpec)
    """The routes a `RouteTask` chooses from (`[routes.*]`, `[router]`)."""
    alerts: list[AlertRule] = field(default_factory=list)
    """Alert rules (`[alerts.*]`), checked by `agentledger project`."""
    datasets: dict[str, DatasetEntry] = field(default_factory=dict)
    """Evaluation datasets (`[datasets.*]`), run by `agentledger eval run`."""

    @classmethod
    def load(cls, path: str | Path, model_factory: ModelFactory | None = None) -> Catalog:
        """Read a catalog file; `model_factory` builds the models of entries that name one
        (`model = "provider:name"`, optional `base_url`)."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise CatalogError(f"catalog file not found: {path}") from None
        except tomllib.TOMLDecodeError as e:
            raise CatalogError(f"catalog {path} is not valid TOML: {e}") from None
        entries: dict[str, CatalogEntry] = {}
        for name, spec in data.get("agents", {}).items():
            if "ref" not in spec:
                raise CatalogError(f"catalog {path}: agent {name!r} has no 'ref'")
            price = spec.get("price")
            model = None
            if "model" in spec:
                if model_factory is None:
                    raise CatalogError(
                        f"catalog {path}: agent {name!r} names a model, but no model factory was given"
                    )
                try:
                    model = model_factory(spec["model"], spec.get("base_url"))
                except Exception as e:
                    raise CatalogError(f"catalog {path}: agent {name!r}: {e}") from None
            entries[name] = CatalogEntry(
                name=name,
                ref=spec["ref"],
                description=spec.get("description", ""),
                price=ModelPrice(**price) if price else None,
                model=model,
                recall=_recall_spec(path, name, spec.get("recall")),
                middleware=middleware_spec(path, name, spec.get("middleware")),
                stream=stream_spec(path, name, spec.get("stream")),
            )
        demo = [
            (agent, prompt, session or None)
            for agent, prompt, session in data.get("demo", {}).get("tasks", [])
        ]
        graphs = graph_entries(path, data)
        graphs.update(workflow_entries(path, data, set(entries), set(graphs)))
        router = router_spec(path, data, set(entries), set(graphs))
        alerts = alert_rules(path, data, set(entries))
        datasets = dataset_entries(path, data, set(entries))
        return cls(
            path=path,
            entries=entries,
            graphs=graphs,
            demo_tasks=demo,
            router=router,
            alerts=alerts,
            datasets=datasets,
        )

    def check(self) -> None:
        """Import every agent and graph now; raise one `CatalogError` naming each bad one.

        A worker calls this when it starts, so a typo in a reference is a start-up error
        with the catalog's path, not a traceback per task later.
        """
        problems = []
        for name in self.names():
            try:
                self.entries[name].agent  # noqa: B018 (imports and caches the agent)
            except CatalogError as e:
                problems.append(f"agent {name!r}: {e}")
        problems += check_graphs(self.graphs)
        if problems:
            raise CatalogError(f"catalog {self.path}: " + "; ".join(problems))

    def get(self, name: str) -> CatalogEntry:
        try:
            return self.entries[name]
        except KeyError:
            raise UnknownAgent(name, sorted(self.entries)) from None

    def names(self) -> list[str]:
        return sorted(self.entries)
