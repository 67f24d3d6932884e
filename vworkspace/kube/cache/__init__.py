"""The cache room: list-then-watch informers into indexed in-memory stores, and the update
predicates that decide which changes are worth a reconcile. Built on ``rest``; knows nothing of
controllers or work queues.
"""
