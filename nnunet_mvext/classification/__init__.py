"""Multi-phase case classification: case labels, case prediction, inference, metrics, cross-validation and splits."""
