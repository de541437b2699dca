"""freeze-bench: what freezing layers costs and saves in a PyTorch training step, and which
way of freezing is correct. The measuring side (spec ... runner) imports torch; the analysing
side (results, report, compare, plots, cli) imports pandas and matplotlib, never torch."""
