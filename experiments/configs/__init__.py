"""Run configurations: the defaults, and one module per paper mapping its flags."""
