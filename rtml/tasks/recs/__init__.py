"""recs: the Open Bandit Dataset loader, stage-1 batch recommendations, offline evaluation."""
