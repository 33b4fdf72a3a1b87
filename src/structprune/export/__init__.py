"""Serving formats: GGUF files and running them in llama.cpp."""
