"""A simulated LLM for Hanoi steps, served over OpenAI's chat completions API."""
