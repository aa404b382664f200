"""Make a random-weight reference checkpoint and its examples from an independent implementation.

The shipped checkpoint in weights/ is the trained one (scripts/train_reference.py); this one has
random weights, for checking a loader on parameters where no mapping mistake can hide.

The reference is Hugging Face ``transformers``' GPT2LMHeadModel (eager attention) with the toolkit's
default configuration (SPEC.md: vocab 512, 1024 positions, d 256, 2 heads, 3 layers, d_mlp 1280,
eps 1e-5, exact GELU, tied embeddings). Its parameters are drawn from one seeded generator, in name
order: weights and embeddings N(0, 0.02) as GPT-2 initialises them, and, so that no mapping mistake
can hide behind a zero or a one, LayerNorm gains 1 + N(0, 0.2), LayerNorm biases N(0, 0.2) and every
linear bias N(0, 0.1). The logits are computed in float64 and stored as float32.

The model is written in the supplied format (docs/reference.md): the other team's key names,
weights stored for ``x @ W`` ([in, out], which is GPT-2's Conv1D layout already), q|k|v fused,
the attention biases as [1, n] and the LM head stored beside the (equal) word embeddings.

Writes (rerunning gives the same bytes):
    reference_model.safetensors     the checkpoint (float32)
    reference_examples.safetensors  input_ids_<i> (int64 [S]) and logits_<i> (float32 [S, V])
    keys_mapping.json               a copy of the built-in mapping (toolkit/data/keys_mapping.json)

    python scripts/make_reference_weights.py [--out-dir checkpoints/random-reference] [--seed 0]
"""

from __future__ import annotations

import argparse
import shutil
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

from toolkit.config import ModelConfig
from toolkit.files import atomic_path
from toolkit.weights import SHIPPED_EXAMPLES, SHIPPED_WEIGHTS, Example, write_examples

SEQ_LENS = (1, 2, 16, 128, 1024)  # 1 and max_seq_len included; 1024 x 512 float32 logits = 2 MB


def gpt2_config(config: ModelConfig) -> GPT2Config:
    """The GPT2Config of ``config``'s function: exact GELU, tied head, no dropout, eager attention."""
    hf_config = GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.max_seq_len,
        n_embd=config.d_model,
        n_layer=config.n_layers,
        n_head=config.n_heads,
        n_inner=config.d_mlp,
        activation_function="gelu",  # exact erf GELU (gelu_new would be tanh)
        layer_norm_epsilon=config.norm_eps,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,
    )
    hf_config._attn_implementation = "eager"
    return hf_config


def reference_gpt2(config: ModelConfig, seed: int) -> GPT2LMHeadModel:
    """GPT2LMHeadModel computing the default toolkit function, with seeded random parameters."""
    model = GPT2LMHeadModel(gpt2_config(config)).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):  # tied: lm_head.weight is wte.weight
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            if ".ln_" in name:
                param.copy_(1.0 + 0.2 * noise if name.endswith("weight") else 0.2 * noise)
            elif name.endswith("bias"):
                param.copy_(0.1 * noise)
            else:
                param.copy_(0.02 * noise)
    return model


def to_supplied_format(model: GPT2LMHeadModel) -> dict[str, torch.Tensor]:
    """GPT-2's tensors under SPEC.md's supplied key names. Conv1D already stores [in, out] for x @ W."""
    gpt = model.transformer
    state = {
        "transformer.word_embeddings.weight": gpt.wte.weight,
        "transformer.positional_embeddings.weight": gpt.wpe.weight,
        "transformer.final_ln.weight": gpt.ln_f.weight,
        "transformer.final_ln.bias": gpt.ln_f.bias,
        "lm_head.weight": model.lm_head.weight,
    }
    for i, block in enumerate(gpt.h):
        prefix = f"transformer.h.{i}."
        state |= {
            prefix + "pre_attn_ln.weight": block.ln_1.weight,
            prefix + "pre_attn_ln.bias": block.ln_1.bias,
            prefix
            + "attn.qkv_proj.weight": block.attn.c_attn.weight,  # [d, 3d]: [Q heads | K heads | V heads]
            prefix + "attn.qkv_proj.bias": block.attn.c_attn.bias.unsqueeze(0),  # [1, 3d]
            prefix + "attn.out_proj.weight": block.attn.c_proj.weight,  # [d, d]
            prefix + "attn.out_proj.bias": block.attn.c_proj.bias.unsqueeze(0),  # [1, d]
            prefix + "pre_mlp_ln.weight": block.ln_2.weight,
            prefix + "pre_mlp_ln.bias": block.ln_2.bias,
            prefix + "mlp.up_proj.weight": block.mlp.c_fc.weight,  # [d, d_mlp]
            prefix + "mlp.up_proj.bias": block.mlp.c_fc.bias,
            prefix + "mlp.down_proj.weight": block.mlp.c_proj.weight,  # [d_mlp, d]
            prefix + "mlp.down_proj.bias": block.mlp.c_proj.bias,
        }
    # Separate, contiguous copies: safetensors refuses tensors that share memory (the tied head).
    return {key: tensor.detach().clone().contiguous() for key, tensor in state.items()}


@torch.no_grad()
def reference_examples(model: GPT2LMHeadModel, config: ModelConfig, seed: int) -> list[Example]:
    """Seeded random token ids of each length in SEQ_LENS and GPT-2's logits for them (float64 math)."""
    generator = torch.Generator().manual_seed(seed + 1)
    model64 = model.to(torch.float64)
    examples = []
    for seq_len in SEQ_LENS:
        ids = torch.randint(0, config.vocab_size, (seq_len,), generator=generator)
        logits = model64(ids.unsqueeze(0)).logits[0]  # (S, V)
        examples.append(Example(ids, logits.to(torch.float32)))
    model.to(torch.float32)
    return examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out-dir", type=Path, default=Path("checkpoints/random-reference"), help="Where to write."
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the parameters and the token ids.")
    args = parser.parse_args()
    config = ModelConfig()
    torch.set_num_threads(1)  # one summation order, whatever the machine
    model = reference_gpt2(config, args.seed)
    examples = reference_examples(model, config, args.seed)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    # One metadata key: safetensors writes several in hash order, which would change the bytes.
    metadata = {
        "made_by": f"scripts/make_reference_weights.py --seed {args.seed} (transformers GPT2LMHeadModel)"
    }
    with atomic_path(args.out_dir / SHIPPED_WEIGHTS) as tmp:
        save_file(to_supplied_format(model), str(tmp), metadata=metadata)
    write_examples(examples, args.out_dir / SHIPPED_EXAMPLES)
    with resources.as_file(resources.files("toolkit").joinpath("data/keys_mapping.json")) as mapping:
        shutil.copyfile(mapping, args.out_dir / "keys_mapping.json")
    lengths = ", ".join(str(e.seq_len) for e in examples)
    print(f"wrote {args.out_dir / SHIPPED_WEIGHTS}, {args.out_dir / SHIPPED_EXAMPLES} (S = {lengths})")


if __name__ == "__main__":
    main()
