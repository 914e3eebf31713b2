"""Model workers: each loaded model lives in its own process (spawned, never forked), which runs
whole requests and, on unload, destroys the model explicitly before it exits.

``protocol`` (every message between the two sides, typed), ``runners`` (what runs inside a
worker), ``worker`` (the process's main loop), ``handle`` (the front process's side of one worker).
"""
