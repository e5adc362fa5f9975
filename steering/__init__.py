"""steering: finding and applying steering directions (directions, interventions, InnerPiSSA)."""
