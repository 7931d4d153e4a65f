"""The thieves of the distillation game (docs/defenses.md): what a student who distils a defended teacher does with
its traces — plain SFT, value-reweighted (adaptive) or verifier-filtered."""
