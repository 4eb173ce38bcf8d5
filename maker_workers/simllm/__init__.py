"""A simulated LLM, served over OpenAI's chat completions API: answers any task it has an oracle for."""
