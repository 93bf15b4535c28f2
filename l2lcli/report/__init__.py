"""The reproduction report: the paper's claims, matched to run folders, with verdicts."""
