"""Teacher sources: what gives the loss the teacher's signal for a batch (`source.py`: the interface and the live
model; `cache/`: the teacher cache, built once by `distill cache` and read as a source). The signal types live with
the losses that consume them (`losses/signals.py`)."""
