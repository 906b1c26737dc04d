"""Human agents at run time: who is available (an operator's CLI, `python -m workers.humans`),
who may be rung for a transfer, the atomic claim of a call by the first person to answer (in
the capacity store, so exactly one winner across workers), and the ring legs and warm
hand-over a persona's `transfer_to_human` runs."""
