"""Modbus TCP and RTU: config model, codec, request planner, polling connector and simulator."""
