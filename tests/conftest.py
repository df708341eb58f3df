"""Test-wide settings: never reach a model hub, keep torch to the machine's two cores."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tuned_lora(tmp_path_factory) -> str:
    """A real LoRA adapter for the shipped TinyWorld generator (random, non-zero), in diffusers format."""
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from studio.pipelines import load_pipeline

    pipe = load_pipeline("tinyworld", cache=False)
    torch.manual_seed(0)
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=8, init_lora_weights="gaussian",
                                            target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():  # peft starts B at zero (a no-op adapter); make it change the model
        for name, p in pipe.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.02)
    out = tmp_path_factory.mktemp("lora")
    type(pipe).save_lora_weights(out, transformer_lora_layers=get_peft_model_state_dict(pipe.transformer))
    return str(out / "pytorch_lora_weights.safetensors")
