"""Engine workers: each loaded model lives in its own process (spawned, never forked), which runs
whole inferences and, on unload, destroys the model explicitly before it exits.

``runners`` (what runs inside a worker), ``worker`` (the process's main loop), ``handle`` (the
front process's side of one worker).
"""
