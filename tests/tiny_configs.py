"""Small training configurations shared by several test files (not a test module)."""
from ranvier.config import build_config


def tiny_lm(data_dir, out_root, model, **overrides):
    """A 2-layer language model on real PTB that trains in about a second."""
    settings = dict(task="ptb", model=model, hidden_size=24, embedding_size=16, num_layers=2, batch_size=8, bptt=12,
                    epochs=0, max_steps=6, checkpoint_every=2, eval_every=3, eval_samples=100, progress=False,
                    threads=1, lr=0.003, data_dir=data_dir, out=str(out_root / model), dropout=0.1,
                    dropout_embedding=0.1, dropconnect=0.1 if model == "egru" else 0.0, gamma=0.7)
    settings.update(overrides)
    return build_config(settings)
