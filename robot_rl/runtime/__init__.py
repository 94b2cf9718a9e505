"""Actor loop, learner loop, session launcher."""
