"""Alerts and notifications (issue 11 item 3): the spec's `error_handling.alerts` rules evaluated
(engine/alerts/conditions.py, evaluator.py), their lifecycle raise -> acknowledge -> clear stored
durably (store.py), and their notifications delivered by email (email_target.py) and webhook
through the same outbox as the data (delivery.py). See docs/alerts.md."""
