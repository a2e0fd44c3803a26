"""The randomized, model-based test of issues 9 and 10, in pieces.

- :mod:`.catalogue`: every provider fault and emulator switch a history may draw;
- :mod:`.runners`: real ``manage.py`` processes (killed, skewed, slowed, cut off from the database);
- :mod:`.invariants`: what must hold after every step and after a history has settled;
- :mod:`.machine`: the Hypothesis state machine that strings them together;
- :mod:`.tally`: a pytest plugin (``-p tests.model_based.tally``) printing what a run covered.
"""
