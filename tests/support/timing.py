"""The one wall-clock bound a test may assert: a hang guard.

CI runs on a shared, busy 2-core machine, so a test proves behaviour (order, counts, who was in
flight) and never speed; speed is measured in bench/. A bound on time only catches a hang, so it
is generous: at least ten times what the guarded step takes on an idle machine.
"""

# For steps that take under 2 s when the machine is idle.
HANG_GUARD_S = 20.0
# For a whole job on a short clip (idle: well under 20 s).
JOB_HANG_GUARD_S = 200.0
