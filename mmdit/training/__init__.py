"""The Lightning side: the training module, data, step noise, callbacks, EMA, export, evaluation."""
