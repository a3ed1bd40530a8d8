"""Orchestration: runs that drive the other layers end to end (the demo, the detection benchmark, the speed
benchmark) and the generated subjects they share. Nothing below this package imports it."""
