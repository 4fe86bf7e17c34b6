"""Run configurations: defaults, and one module per paper mapping its flags."""
