"""What `aggregator serve` needs besides HTTP: the data-directory lock, schedules, file watching,
supervision, systemd notification, metrics, logs and the API token."""
