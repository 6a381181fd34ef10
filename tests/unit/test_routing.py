"""The semantic router with a real embedder (all-MiniLM-L6-v2 int8, offline): labelled
utterances go to the expected routes, low scores fall back, `fit` learns and is
recorded, and the catalog's route tables are checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentledger.domain.routing.fit import Labelled, accuracy, fit, split
from agentledger.domain.routing.routes import RouterSpec, RouteSpec
from agentledger.domain.routing.scoring import RouteIndex, RouterParams, decide
from agentledger.handlers.catalog import Catalog, CatalogError
from agentledger.handlers.routing.router import Router
from agentledger.infra.embedders import load_embedder

DATA = Path(__file__).resolve().parents[2] / "bench" / "data"


@pytest.fixture(scope="module")
def spec() -> RouterSpec:
    import tomllib

    tables = tomllib.loads((DATA / "router_routes.toml").read_text())["routes"]
    return RouterSpec(routes=tuple(RouteSpec(name=n, **t) for n, t in tables.items()))


@pytest.fixture(scope="module")
def labelled() -> list[Labelled]:
    rows = [json.loads(line) for line in (DATA / "router_set.jsonl").read_text().splitlines()]
    return [Labelled(r["text"], r["route"]) for r in rows if r["kind"] in ("plain", "off_topic")]


@pytest.fixture(scope="module")
def router(spec: RouterSpec) -> Router:
    return Router(spec, load_embedder("minilm"))


@pytest.mark.parametrize(
    ("text", "route"),
    [
        ("I see two identical charges from you on my card statement", "billing"),
        ("the mobile app crashes every time I open the dashboard", "tech_support"),
        ("how much is the enterprise plan for 50 users?", "sales"),
        ("my parcel was supposed to arrive yesterday, where is it?", "shipping"),
        ("I forgot my password and can't get in", "account"),
        ("can we move our onboarding call to Thursday afternoon?", "scheduling"),
        ("please send me a copy of all personal data you hold about me", "privacy"),
    ],
)
def test_labelled_utterances_go_to_the_expected_routes(
    router: Router, text: str, route: str
) -> None:
    decision = router.decide(text)
    assert decision.chosen == route, decision
    assert decision.reason == "matched" and not decision.fallback
    assert decision.scores[route] == max(decision.scores.values())


def test_accuracy_on_the_plain_and_off_topic_utterances(
    router: Router, labelled: list[Labelled]
) -> None:
    embedder = router.embedder
    vectors = embedder.embed([i.text for i in labelled])
    # A floor well under what bench/router.py measures (0.93 plain, 0.79 off-topic),
    # so a change that breaks routing fails here.
    assert accuracy(router.index, router.params, vectors, labelled) >= 0.8


def test_off_topic_falls_back_or_is_no_route(spec: RouterSpec) -> None:
    embedder = load_embedder("minilm")
    joke = "tell me a joke about penguins"
    without = Router(spec, embedder).decide(joke)
    assert (without.chosen, without.reason, without.fallback) == (None, "off_topic", False)
    fallback_spec = spec.model_copy(update={"fallback": "tech_support"})
    taken = Router(fallback_spec, embedder).decide(joke)
    assert (taken.chosen, taken.fallback, taken.best is not None) == ("tech_support", True, True)
    # A route's own threshold applies: above every score, the prompt falls back.
    strict = spec.model_copy(
        update={
            "fallback": "tech_support",
            "routes": tuple(
                r.model_copy(update={"threshold": 0.99}) if r.name == "billing" else r
                for r in spec.routes
            ),
        }
    )
    charged = Router(strict, embedder).decide("I was billed twice this month")
    assert (charged.best, charged.chosen, charged.reason) == (
        "billing",
        "tech_support",
        "below_threshold",
    )


def test_semantic_routers_method_uses_its_threshold(spec: RouterSpec) -> None:
    embedder = load_embedder("minilm")
    index = RouteIndex(spec.routes, embedder)
    text = "refund the annual fee please"
    vector = embedder.embed([text])[0]
    low = decide(index, RouterParams(method="max_example", threshold=0.1), vector, text)
    high = decide(index, RouterParams(method="max_example", threshold=0.95), vector, text)
    assert low.chosen == "billing" and high.chosen is None and high.reason == "below_threshold"


def test_fit_learns_from_labelled_examples_and_serialises(spec: RouterSpec) -> None:
    embedder = load_embedder("minilm")
    rows = [json.loads(line) for line in (DATA / "router_set.jsonl").read_text().splitlines()]
    items = [Labelled(r["text"], r["route"]) for r in rows]
    train, test = split(items, lambda i: i.route, 0.5, seed=3)
    assert {i.route for i in train} == {i.route for i in test}
    index = RouteIndex(spec.routes, embedder)
    vectors = {
        i.text: v for i, v in zip(items, embedder.embed([i.text for i in items]), strict=True)
    }

    def m(subset: list[Labelled]):  # type: ignore[no-untyped-def]
        import numpy as np

        return np.stack([vectors[i.text] for i in subset])

    base = RouterParams()
    params = fit(spec.routes, embedder, base, m(train), train, index.vectors)
    assert sum(len(v) for v in params.examples.values()) == sum(i.route is not None for i in train)
    assert params.logreg is not None and params.off_topic
    learned = RouteIndex(spec.routes, embedder, index.vectors, params.examples)
    before = accuracy(index, base, m(test), test)
    after = accuracy(learned, params, m(test), test)
    assert after >= before - 0.02  # never much worse on utterances it never saw
    again = RouterParams.from_json(json.loads(json.dumps(params.as_json())))
    assert accuracy(learned, again, m(test), test) == after
    with pytest.raises(ValueError, match="not in the catalog"):
        fit(spec.routes, embedder, base, m(test[:1]), [Labelled("x", "nowhere")], index.vectors)


def test_example_vectors_are_cached_and_recomputed_when_examples_change(
    spec: RouterSpec, tmp_path: Path
) -> None:
    class Counting:
        def __init__(self) -> None:
            self.inner = load_embedder("minilm")
            self.texts = 0
            self.name, self.dim = self.inner.name, self.inner.dim

        def embed(self, texts):  # type: ignore[no-untyped-def]
            self.texts += len(texts)
            return self.inner.embed(texts)

    first = Counting()
    Router(spec, first, cache_folder=tmp_path)  # type: ignore[arg-type]
    assert first.texts > 40
    second = Counting()
    Router(spec, second, cache_folder=tmp_path)  # type: ignore[arg-type]
    assert second.texts == 0  # all from the cache
    changed = spec.model_copy(
        update={
            "routes": tuple(
                r.model_copy(update={"examples": (*r.examples[:5], "a brand new example")})
                if r.name == "sales"
                else r
                for r in spec.routes
            )
        }
    )
    third = Counting()
    router = Router(changed, third, cache_folder=tmp_path)  # type: ignore[arg-type]
    assert third.texts == 1
    assert "a brand new example" in router.index.vectors


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ('[routes.x]\ndescription = "d"\n', "exactly one target"),
        ('[routes.x]\nagent = "ghost"\ndescription = "d"\n', "unknown agent 'ghost'"),
        ('[routes.x]\nagent = "greeter"\n', "a description or examples"),
        (
            '[routes.x]\nagent = "greeter"\ndescription = "d"\n[router]\nfallback = "y"\n',
            "fallback 'y'",
        ),
        (
            '[routes.x]\nagent = "greeter"\ndescription = "d"\n[router]\nmethod = "magic"\n',
            "method",
        ),
        ('[routes."a.b"]\nagent = "greeter"\ndescription = "d"\n', "name"),
    ],
)
def test_bad_route_tables_are_catalog_errors(tmp_path: Path, tables: str, message: str) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(
        '[agents.greeter]\nref = "agentledger.catalog.example_agents:greeter"\n' + tables
    )
    with pytest.raises(CatalogError, match=message):
        Catalog.load(catalog)
