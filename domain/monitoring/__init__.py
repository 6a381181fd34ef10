"""Live monitoring: threshold rules over rolling windows of each agent's runs, and the
alerts they raise and clear."""
