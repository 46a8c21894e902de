"""Entity-level precision/recall/F1 for BIO tags, with conlleval semantics.

An entity is a maximal run ``B-X I-X I-X ...`` of one type X. Following the
CoNLL shared-task script ``conlleval`` (Tjong Kim Sang & De Meulder 2003), a
run also STARTS at an ``I-X`` that does not continue an entity of type X
(after ``O``, after another type, or at the start of a sentence), and an
``I-Y`` after ``B-X``/``I-X`` ends the X entity and starts a Y one. A
predicted entity is correct only if a true entity has exactly the same span
(sentence, first and last token) and type.

Precision = correct / predicted, recall = correct / true, F1 their harmonic
mean; each is 0.0 (never NaN) when its denominator is 0, as conlleval
reports. Scores are fractions in [0, 1] (conlleval prints percentages).
"""

VALID_PREFIXES = ("B", "I")


def _parse_tag(tag, sentence_index, token_index):
    """`"O"` -> (None, None); `"B-X"` -> ("B", "X"); else a ValueError."""
    if tag == "O":
        return None, None
    prefix, separator, entity_type = str(tag).partition("-")
    if not separator or prefix not in VALID_PREFIXES or not entity_type:
        raise ValueError(
            f"tag {tag!r} (sentence {sentence_index}, token {token_index}) is "
            "not BIO; use 'O', 'B-<type>' or 'I-<type>'"
        )
    return prefix, entity_type


def _entities(tags, sentence_index):
    """Set of (sentence_index, start, end_inclusive, type) in one sentence."""
    entities = set()
    start, current_type = None, None
    for token_index, tag in enumerate(tags):
        prefix, entity_type = _parse_tag(tag, sentence_index, token_index)
        continues = prefix == "I" and entity_type == current_type
        if current_type is not None and not continues:
            entities.add((sentence_index, start, token_index - 1, current_type))
            current_type = None
        if prefix is not None and not continues:
            start, current_type = token_index, entity_type
    if current_type is not None:
        entities.add((sentence_index, start, len(tags) - 1, current_type))
    return entities


def _check_pairs(true_tag_seqs, pred_tag_seqs):
    true_tag_seqs, pred_tag_seqs = list(true_tag_seqs), list(pred_tag_seqs)
    if len(true_tag_seqs) != len(pred_tag_seqs):
        raise ValueError(
            f"got {len(true_tag_seqs)} true and {len(pred_tag_seqs)} predicted "
            "sentences; pass one predicted tag sequence per true one"
        )
    pairs = []
    for sentence_index, (true_tags, pred_tags) in enumerate(
        zip(true_tag_seqs, pred_tag_seqs)
    ):
        if isinstance(true_tags, str) or isinstance(pred_tags, str):
            raise ValueError(
                f"sentence {sentence_index} is a string; pass a list of tag "
                "sequences (a list of lists of tags), one per sentence"
            )
        true_tags, pred_tags = list(true_tags), list(pred_tags)
        if len(true_tags) != len(pred_tags):
            raise ValueError(
                f"sentence {sentence_index} has {len(true_tags)} true and "
                f"{len(pred_tags)} predicted tags; they must align token by token"
            )
        pairs.append((true_tags, pred_tags))
    return pairs


def _scores(num_correct, num_predicted, num_true):
    precision = num_correct / num_predicted if num_predicted else 0.0
    recall = num_correct / num_true if num_true else 0.0
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision + recall
        else 0.0
    )
    return {"precision": precision, "recall": recall, "f1": f1, "support": num_true}


def entity_scores(true_tag_seqs, pred_tag_seqs):
    """Entity-level precision, recall and F1, overall and per entity type.

    Args:
        true_tag_seqs: one BIO tag sequence per sentence (list of lists of
            ``"O"``, ``"B-X"``, ``"I-X"``).
        pred_tag_seqs: the predictions, aligned token by token.

    Returns:
        ``{"overall": S, "per_type": {TYPE: S, ...}}`` where each ``S`` is
        ``{"precision", "recall", "f1", "support"}`` and ``support`` counts
        true entities. ``per_type`` has every type seen in either the truth
        or the predictions, sorted.

    Raises:
        ValueError: sentence counts or lengths differ, or a tag is not BIO.

    Example:

    >>> scores = entity_scores([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])
    >>> scores["overall"]["f1"]
    0.0
    """
    true_entities, pred_entities = set(), set()
    for sentence_index, (true_tags, pred_tags) in enumerate(
        _check_pairs(true_tag_seqs, pred_tag_seqs)
    ):
        true_entities |= _entities(true_tags, sentence_index)
        pred_entities |= _entities(pred_tags, sentence_index)
    correct = true_entities & pred_entities

    def count(entities, entity_type):
        return sum(1 for entity in entities if entity[3] == entity_type)

    entity_types = sorted({entity[3] for entity in true_entities | pred_entities})
    return {
        "overall": _scores(len(correct), len(pred_entities), len(true_entities)),
        "per_type": {
            entity_type: _scores(
                count(correct, entity_type),
                count(pred_entities, entity_type),
                count(true_entities, entity_type),
            )
            for entity_type in entity_types
        },
    }


def token_accuracy(true_tag_seqs, pred_tag_seqs):
    """Fraction of tokens whose predicted tag equals the true tag.

    Raises:
        ValueError: sentence counts or lengths differ, or there are no tokens.
    """
    pairs = _check_pairs(true_tag_seqs, pred_tag_seqs)
    num_tokens = sum(len(true_tags) for true_tags, _ in pairs)
    if num_tokens == 0:
        raise ValueError("token_accuracy needs at least one token; got none")
    num_equal = sum(
        true_tag == pred_tag
        for true_tags, pred_tags in pairs
        for true_tag, pred_tag in zip(true_tags, pred_tags)
    )
    return num_equal / num_tokens
