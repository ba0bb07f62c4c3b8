"""The paper's claims on real models: judging them on a stage's runs (`claims`)."""
