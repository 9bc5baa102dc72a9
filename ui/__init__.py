"""The Gradio app; it talks to an `engine.protocol.Backend` only."""
