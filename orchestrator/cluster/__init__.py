"""The cluster: the embedded default, connections to a real one, Flower, local models, Prometheus, the bench."""
