"""Evaluation metrics and protocols: perplexity protocols, passkey retrieval,
entity-level NER scores and position-relation images. No benchmark drivers here."""
