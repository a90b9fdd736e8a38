"""What a run changed: ranked pairs, drift, the answers' checks, checked questions, the win rate."""
