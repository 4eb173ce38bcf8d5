"""Planning: the method's formulas, k for a target, calibration against a model, the live reliability reading."""
