"""Gates: the human-in-the-loop operators, and the question loops that ask one question after another."""
