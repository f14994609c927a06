"""Cluster alerts and restock orders: rules (``config``), the evaluation runner (``runner``),
alert areas and explanations (``areas``), the order lifecycle (``orders``), outbox delivery to
warehouse webhooks (``delivery``) and the reference warehouse receiver (``receiver``)."""
