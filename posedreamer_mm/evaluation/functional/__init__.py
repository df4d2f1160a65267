"""Pure numpy/torch evaluation maths, each tested against a reference implementation on the same numbers."""
