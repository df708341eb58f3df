"""Gradio wiring, one module per tab; handlers live in the library."""
