"""`agentledger graph list|show`: the catalog's graphs, and each one drawn as Mermaid."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from agentledger.handlers.cli_support import (
    CliError,
    console,
    one_line_errors,
    print_json,
    settings_from_env,
)

if TYPE_CHECKING:
    from agentledger.handlers.catalog import Catalog

__all__ = ["register"]

graph_app = typer.Typer(
    help="Durable graph workflows: the catalog's graphs (list, show as Mermaid).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _catalog() -> Catalog:
    from agentledger.handlers.bootstrap import load_catalog

    return load_catalog(settings_from_env())


@graph_app.command("list")
@one_line_errors
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the catalog's graphs (each is loaded and checked)."""
    catalog = _catalog()
    rows: list[dict[str, Any]] = []
    for name in sorted(catalog.graphs):
        entry = catalog.graphs[name]
        graph = entry.graph
        steps = sorted(str(n) for n in graph.nodes if not str(n).startswith("__"))
        rows.append(
            {
                "name": name,
                "ref": entry.ref,
                "description": entry.description,
                "max_steps": entry.max_steps,
                "nodes": steps,
            }
        )
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"Graphs in {catalog.path} ({len(rows)})")
    for column in ("name", "nodes", "max steps", "description"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["name"], ", ".join(row["nodes"]), str(row["max_steps"]), row["description"]
        )
    console.print(table)


@graph_app.command()
@one_line_errors
def show(
    name: str = typer.Argument(..., help="The graph's catalog name."),
    direction: str = typer.Option("TB", help="Mermaid direction: TB, LR, RL or BT."),
) -> None:
    """Print the graph as a Mermaid state diagram (pydantic-graph's own rendering)."""
    catalog = _catalog()
    if name not in catalog.graphs:
        known = ", ".join(sorted(catalog.graphs)) or "none"
        raise CliError(f"unknown graph {name!r}; the catalog has: {known}")
    if direction not in ("TB", "LR", "RL", "BT"):
        raise CliError(f"invalid --direction {direction!r}: use TB, LR, RL or BT")
    print(catalog.graphs[name].graph.render(title=name, direction=direction))  # type: ignore[arg-type]


def register(app: typer.Typer) -> None:
    app.add_typer(graph_app, name="graph")
