"""Reports: what a run did (text, JSON, HTML, plots), its audit, its samples and phrasings, progress and status."""
