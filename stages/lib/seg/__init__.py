"""Stage 4's segmenter in parts: device set-up, network, training, validation,
post-processing and its search, prediction, checkpoint and plots. Stage 6 predicts
with the same parts, so its masks are stage 4's."""
