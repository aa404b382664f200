"""Write the kinds of checkpoint people have, for trying --weights:

- ``DIR/gpt2-hf/``: a Hugging Face GPT-2 directory, as ``GPT2LMHeadModel.save_pretrained`` writes it
  (config.json and model.safetensors);
- ``DIR/nanogpt/ckpt.pt``: the same weights as nanoGPT's train.py saves them (``model`` with
  ``_orig_mod.`` prefixes and nn.Linear's [out, in] layout, ``model_args``, ``optimizer``, ``iter_num``);
- ``DIR/smollm-hf/``: a SmolLM2-shaped Llama (RMSNorm, RoPE theta 1e5, 9 heads sharing 3 kv heads,
  gated SiLU MLP, tied head), shrunk to 4 layers of width 144, as ``LlamaForCausalLM.save_pretrained``
  writes it in bfloat16 (as on the Hub), with the shipped tokenizer.json and held-out text beside it;
  and ``DIR/smollm-examples.safetensors``, the logits LlamaForCausalLM computes for 3 inputs.

Needs ``transformers`` (a test dependency: ``pip install -e '.[dev]'``). Usage:
``python scripts/make_checkpoints.py [DIR] [--layers 2 --d-model 128 --heads 4 --vocab 512 --positions 256]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

from toolkit.weights import Example, shipped_folder, write_examples

try:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
except ModuleNotFoundError:
    sys.exit("make_checkpoints.py needs transformers: pip install -e '.[dev]' first")

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default="checkpoints", type=Path)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--positions", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=args.vocab,
        n_positions=args.positions,
        n_embd=args.d_model,
        n_layer=args.layers,
        n_head=args.heads,
        activation_function="gelu",  # nanoGPT's nn.GELU() is the exact one
        bos_token_id=None,
        eos_token_id=None,
    )
    model = GPT2LMHeadModel(config).eval()
    hf_dir = args.folder / "gpt2-hf"
    model.save_pretrained(hf_dir)
    state = {}
    for key, tensor in model.state_dict().items():
        value = tensor.detach().clone()
        state["_orig_mod." + key] = value.T.contiguous() if key.endswith(CONV1D) else value
    nano_dir = args.folder / "nanogpt"
    nano_dir.mkdir(parents=True, exist_ok=True)
    model_args = {
        "n_layer": args.layers,
        "n_head": args.heads,
        "n_embd": args.d_model,
        "block_size": args.positions,
        "bias": True,
        "vocab_size": args.vocab,
        "dropout": 0.0,
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-4).state_dict()
    checkpoint = {"model": state, "optimizer": optimizer, "model_args": model_args, "iter_num": 0,
                  "best_val_loss": 1e9, "config": {"init_from": "scratch"}}  # fmt: skip
    torch.save(checkpoint, nano_dir / "ckpt.pt")
    size = f"{model.num_parameters():,} parameters"
    print(f"wrote {hf_dir} (Hugging Face GPT-2) and {nano_dir / 'ckpt.pt'} (nanoGPT), {size}")
    write_smollm(args.folder, args.vocab)


def write_smollm(folder: Path, vocab: int) -> None:
    """A SmolLM2-shaped Llama directory in bfloat16, its tokenizer and text, and examples it computed."""
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=144,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    directory = folder / "smollm-hf"
    model.save_pretrained(directory)
    shipped = shipped_folder()
    if shipped is None:
        sys.exit("make_checkpoints.py: run it from the repository (it copies weights/tokenizer.json)")
    for name in ("tokenizer.json", "heldout.txt"):
        shutil.copy(shipped / name, directory / name)
    # the stored bfloat16 weights, computed in float32 (a fresh load: casting the model back would keep
    # its RoPE frequencies rounded to bfloat16)
    reference = LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(0)
    examples = []
    with torch.no_grad():
        for length in (1, 64, 512):
            ids = torch.randint(0, vocab, (length,), generator=generator)
            examples.append(Example(ids, reference(ids[None]).logits[0]))
    write_examples(examples, folder / "smollm-examples.safetensors")
    print(f"wrote {directory} (Hugging Face Llama, SmolLM2-shaped, bfloat16), {model.num_parameters():,} "
          f"parameters, and {folder / 'smollm-examples.safetensors'} (its logits for 3 inputs)")  # fmt: skip


if __name__ == "__main__":
    main()
