"""Who spoke when: speaker diarization (``model``, in its worker) and what the front makes of its
turns (``speakers``: labels, known speakers' names, speakers on a transcript's segments, RTTM)."""
