"""Data: tasks (questions, gold answers and rationales, answer checking), the prompts that put a question to a model in each mode, and the typed records that cross boundaries."""
