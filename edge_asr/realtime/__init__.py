"""OpenAI's Realtime API, transcription sessions: ``events`` (the event shapes), ``turns`` (the
input audio cut into turns and transcribed as it arrives), ``session`` (one WebSocket, and the
registry that bounds them). The upgrade itself is ``server.realtime``'s route."""
