"""Audio synthesis: noise banks, SNR mixing, virtual car noise, audio diversity checks."""
