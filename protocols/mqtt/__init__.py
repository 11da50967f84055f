"""MQTT source: JSON payloads and Sparkplug B (see README.md)."""
