"""CPU kernels: pure functions on arrays, one module per family, forward and backward side by side.

Conventions (after llm.c): outputs first, then inputs, then sizes and hyper-parameters;
outputs are preallocated by the caller and written in place; nothing here allocates
per call except where a docstring says so. ``fastnn/cuda/`` mirrors these modules name
for name.
"""
