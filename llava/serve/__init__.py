"""Interactive serving on the shared inference engine: `session.ChatSession`, the CLI chat and the gradio demo."""
