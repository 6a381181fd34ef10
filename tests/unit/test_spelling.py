"""Spelling correction before routing: typos are corrected towards the routes' own words
and English, names, contractions and real words are left alone, and a typo'd prompt is
routed where its correct spelling goes."""

from __future__ import annotations

import numpy as np
import pytest

from agentledger.domain.routing.fit import _robust_best
from agentledger.domain.routing.routes import RouterSpec, RouteSpec
from agentledger.domain.routing.scoring import RouterParams
from agentledger.domain.routing.spelling import Speller, distance
from agentledger.handlers.routing.router import Router
from agentledger.infra.embedders import load_embedder

ROUTES = (
    RouteSpec(
        name="shipping",
        agent="shipping",
        description="Order status, tracking, delivery and damaged parcels.",
        examples=("Where is my package?", "My parcel never arrived", "Tracking shows no update"),
    ),
    RouteSpec(
        name="scheduling",
        agent="scheduling",
        description="Booking, moving and cancelling appointments and calls with our staff.",
        examples=("Can I book a call with my consultant?", "Please reschedule my appointment"),
    ),
    RouteSpec(
        name="billing",
        agent="billing",
        description="Invoices, charges, refunds and receipts.",
        examples=("I was charged twice", "Send me my receipt"),
    ),
)


@pytest.fixture(scope="module")
def speller() -> Speller:
    return Speller(t for r in ROUTES for t in (r.description, *r.examples))


@pytest.mark.parametrize(
    ("text", "fixed"),
    [
        ("wheres my pakage", "wheres my package"),  # insertion; contraction kept
        ("parcle lost by the courrier", "parcel lost by the courier"),  # swap, deletion
        ("need to resceduel my apointmnt", "need to reschedule my appointment"),  # 2 edits
        ("can u resend the reciept", "can u resend the receipt"),
        ("Shedule a call", "Schedule a call"),  # the first word may be capitalised
    ],
)
def test_typos_are_corrected_towards_the_routes_words(
    speller: Speller, text: str, fixed: str
) -> None:
    assert speller.correct(text) == fixed


@pytest.mark.parametrize(
    "text",
    [
        "SSO via Okta fails for Priya",  # names inside a sentence
        "Our OAuth tokens expire, the JSON body is malformed",  # mixed case, real words
        "it doesn't work and I can't log in",  # contractions
        "the spam, the vegan chili and the debit card",  # real words the tokenizer splits
        "order #12345 shipped on 2026-12-01",  # digits
        "u r gr8",  # too short to guess
    ],
)
def test_names_contractions_and_real_words_are_left_alone(speller: Speller, text: str) -> None:
    assert speller.correct(text) == text


def test_distance_counts_a_swap_as_one_edit() -> None:
    assert distance("parcle", "parcel") == 1
    assert distance("apointmnt", "appointment") == 2
    assert distance("", "abc") == 3


def test_a_typo_is_routed_where_its_correct_spelling_goes() -> None:
    router = Router(RouterSpec(routes=ROUTES), load_embedder("minilm"))
    for typo in ("wheres my pakage", "need to resceduel my apointmnt", "resend the reciept"):
        decision = router.decide(typo)
        right = router.decide(router.index.speller.correct(typo))
        assert decision.chosen == right.chosen is not None, (typo, decision)
    # `[router] spelling = false`: the prompt is scored as written.
    off = Router(RouterSpec(routes=ROUTES, spelling=False), router.embedder)
    assert off.params.spelling is False
    typo = "resend the reciept"
    written = off.index.embedder.embed([typo])[0]
    assert np.allclose(off.index.embed_queries([typo], off.params.spelling)[0], written)
    assert not np.allclose(router.index.embed_queries([typo])[0], written)
    plain = RouterParams(spelling=False)
    assert RouterParams.from_json(plain.as_json()).spelling is False
    assert RouterParams.from_json({}).spelling is True


def test_fit_keeps_the_defaults_unless_a_setting_wins_clearly_and_not_on_a_cliff() -> None:
    grid = [(b, None, 0.0) for b in (-0.02, -0.01, 0.0, 0.01, 0.02)]
    # -0.01 wins by 10 utterances, but one step further is a cliff: the default stays.
    assert grid[_robust_best(grid, np.array([20.0, 110.0, 100.0, 100.0, 100.0]), 200)] == grid[2]
    # A win by one utterance is not enough to leave the defaults.
    assert grid[_robust_best(grid, np.array([100.0, 100.0, 100.0, 101.0, 101.0]), 200)] == grid[2]
    # A broad plateau that beats the default by more than 1% of 200 utterances wins.
    best = _robust_best(grid, np.array([80.0, 80.0, 80.0, 90.0, 90.0]), 200)
    assert grid[best][0] in (0.01, 0.02)
