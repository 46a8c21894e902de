"""Tests for kerapos.metrics.ner against hand-computed conlleval scores."""

import random

import pytest

from kerapos.metrics.ner import entity_scores
from kerapos.metrics.ner import token_accuracy


def scores(precision, recall, f1, support):
    return {
        "precision": pytest.approx(precision),
        "recall": pytest.approx(recall),
        "f1": pytest.approx(f1),
        "support": support,
    }


def test_perfect_match():
    tags = [["B-PER", "I-PER", "O", "B-LOC"]]
    result = entity_scores(tags, tags)
    assert result["overall"] == scores(1, 1, 1, 2)
    assert result["per_type"] == {"LOC": scores(1, 1, 1, 1), "PER": scores(1, 1, 1, 1)}


def test_partial_span_is_wrong():
    result = entity_scores([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])
    assert result["overall"] == scores(0, 0, 0, 1)


def test_type_mismatch_counts_against_both_types():
    result = entity_scores([["B-PER", "O"]], [["B-LOC", "O"]])
    assert result["overall"] == scores(0, 0, 0, 1)
    # PER: 1 true, 0 predicted -> precision 0 (not NaN); LOC: 1 predicted, 0 true.
    assert result["per_type"] == {"LOC": scores(0, 0, 0, 0), "PER": scores(0, 0, 0, 1)}


def test_i_tag_starts_an_entity_like_conlleval():
    # O I-PER I-PER is the entity PER[1..2], the same span as B-PER I-PER.
    result = entity_scores([["O", "I-PER", "I-PER", "O"]], [["O", "B-PER", "I-PER", "O"]])
    assert result["overall"] == scores(1, 1, 1, 1)
    # I-PER after B-LOC ends LOC[0..0] and starts PER[1..1].
    result = entity_scores([["B-LOC", "I-PER"]], [["B-LOC", "B-PER"]])
    assert result["overall"] == scores(1, 1, 1, 2)


def test_adjacent_b_tags_are_separate_entities():
    # Truth: PER[0..0] and PER[1..1]; prediction: PER[0..1]. 0 of 1 right.
    result = entity_scores([["B-PER", "B-PER"]], [["B-PER", "I-PER"]])
    assert result["overall"] == scores(0, 0, 0, 2)


def test_entities_do_not_cross_sentences():
    # Two sentences: [B-PER] and [I-PER] are two entities, not one.
    result = entity_scores([["B-PER"], ["I-PER"]], [["B-PER"], ["B-PER"]])
    assert result["overall"] == scores(1, 1, 1, 2)


def test_empty_predictions_give_zero_not_nan():
    result = entity_scores([["B-PER", "O"], ["B-LOC"]], [["O", "O"], ["O"]])
    assert result["overall"] == scores(0, 0, 0, 2)
    assert result["per_type"]["PER"] == scores(0, 0, 0, 1)
    no_entities = entity_scores([["O"]], [["O"]])
    assert no_entities == {"overall": scores(0, 0, 0, 0), "per_type": {}}


def test_mixed_case_by_hand():
    true = [["B-PER", "I-PER", "O", "B-ORG"], ["B-LOC", "O", "B-PER"]]
    pred = [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "B-MISC", "O"]]
    # True: PER(s0 0-1) ORG(s0 3) LOC(s1 0) PER(s1 2) = 4.
    # Pred: PER(s0 0-1) ok, LOC(s0 3) wrong, LOC(s1 0) ok, MISC(s1 1) wrong = 4.
    result = entity_scores(true, pred)
    assert result["overall"] == scores(0.5, 0.5, 0.5, 4)
    assert result["per_type"] == {
        "LOC": scores(0.5, 1.0, 2 / 3, 1),  # 1 right of 2 predicted, 1 true
        "MISC": scores(0, 0, 0, 0),
        "ORG": scores(0, 0, 0, 1),
        "PER": scores(1.0, 0.5, 2 / 3, 2),  # 1 right of 1 predicted, 2 true
    }
    # Tokens: sentence 0 has 3 of 4 equal, sentence 1 has 1 of 3.
    assert token_accuracy(true, pred) == pytest.approx(4 / 7)


def test_hyphenated_types_keep_their_name():
    result = entity_scores([["B-geo-loc", "I-geo-loc"]], [["B-geo-loc", "I-geo-loc"]])
    assert list(result["per_type"]) == ["geo-loc"]


def _random_bio(rng, length):
    return [rng.choice(["O", "O", "B-A", "I-A", "B-B", "I-B"]) for _ in range(length)]


def test_properties_on_random_sequences():
    rng = random.Random(0)
    for _ in range(50):
        true = [_random_bio(rng, rng.randint(0, 8)) for _ in range(3)]
        pred = [_random_bio(rng, len(tags)) for tags in true]
        forward, backward = entity_scores(true, pred), entity_scores(pred, true)
        # Swapping truth and prediction swaps precision and recall.
        assert forward["overall"]["precision"] == pytest.approx(backward["overall"]["recall"])
        assert forward["overall"]["f1"] == pytest.approx(backward["overall"]["f1"])
        for value in ("precision", "recall", "f1"):
            assert 0.0 <= forward["overall"][value] <= 1.0
        itself = entity_scores(true, true)["overall"]
        if itself["support"]:
            assert itself["f1"] == 1.0
        # Per-type supports add up to the overall support.
        assert sum(s["support"] for s in forward["per_type"].values()) == forward["overall"]["support"]


def test_bad_input():
    with pytest.raises(ValueError, match="2 true and 1 predicted sentences"):
        entity_scores([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match="sentence 0 has 2 true and 1 predicted tags"):
        entity_scores([["O", "O"]], [["O"]])
    for bad_tag in ("E-PER", "B-", "PER", "b-PER"):
        with pytest.raises(ValueError, match=f"tag '{bad_tag}' .*sentence 0, token 1.* is not BIO"):
            entity_scores([["O", "O"]], [["O", bad_tag]])
    with pytest.raises(ValueError, match="sentence 0 is a string"):
        entity_scores(["B-PER"], ["B-PER"])
    with pytest.raises(ValueError, match="at least one token"):
        token_accuracy([[]], [[]])
