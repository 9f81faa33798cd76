"""identity-dpo: give a small chat model a new identity with DPO, and measure it."""
