"""Tiny random text-to-image pipelines of each family, built from configs (no downloads): a word-level
tokenizer made in memory, CLIP / T5 text encoders of width 16, and UNets / an SD3 transformer of a few
thousand parameters, plus LoRA adapters made with peft."""

from __future__ import annotations

import torch

from untrained import tiny_vae

WORDS = "a photo of cat dog red blue house tree the an on in painting small big".split()
VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
WIDTH = 16  # text encoders' hidden size


def tokenizer(max_length: int = 8):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=max_length,
    )


def _clip(seed: int, projection: bool = False, width: int = WIDTH):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        hidden_size=width,
        intermediate_size=2 * width,
        num_attention_heads=2,
        num_hidden_layers=1,
        vocab_size=len(VOCAB),
        max_position_embeddings=8,
        projection_dim=width,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval()


def vae(seed: int = 0, channels: int = 4, shift: float | None = None, scaling: float = 0.5):
    return tiny_vae(seed, channels, scaling_factor=scaling, shift_factor=shift)


def sd_unet(seed: int, cross: int = WIDTH, in_channels: int = 4, widths=(8, 16)):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=widths,
        layers_per_block=1,
        sample_size=8,
        in_channels=in_channels,
        out_channels=in_channels,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross,
        norm_num_groups=4,
        attention_head_dim=4,
    ).eval()


def euler(prediction: str = "epsilon"):
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
        steps_offset=1,
        prediction_type=prediction,
    )


def sd(seed: int = 0, prediction: str = "epsilon", cross: int = WIDTH, with_text: bool = True):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae(),
        text_encoder=_clip(100) if with_text else None,
        tokenizer=tokenizer() if with_text else None,
        unet=sd_unet(seed, cross),
        scheduler=euler(prediction),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def sdxl_unet(seed: int):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=6 * 4 + WIDTH,
        cross_attention_dim=2 * WIDTH,
        norm_num_groups=4,
    ).eval()


def sdxl(seed: int = 0):
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline(
        vae=vae(),
        text_encoder=_clip(100),
        text_encoder_2=_clip(101, projection=True),
        tokenizer=tokenizer(),
        tokenizer_2=tokenizer(),
        unet=sdxl_unet(seed),
        scheduler=euler(),
        force_zeros_for_empty_prompt=True,
    )


# IF's UNet (stage I, and stage II with the low-res image beside the noisy one): eps and learned variance
# out, T5 embeddings projected in, text added to the time embedding.
IF_UNET = dict(
    layers_per_block=1,
    block_out_channels=(8, 16),
    down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
    mid_block_type="UNetMidBlock2DSimpleCrossAttn",
    up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
    out_channels=6,
    cross_attention_dim=32,
    attention_head_dim=4,
    addition_embed_type="text",
    addition_embed_type_num_heads=2,
    cross_attention_norm="group_norm",
    resnet_time_scale_shift="scale_shift",
    act_fn="gelu",
    norm_num_groups=4,
)


def if_unet(seed: int, text_width: int = WIDTH):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**IF_UNET, sample_size=8, in_channels=3, encoder_hid_dim=text_width).eval()


def if_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        thresholding=True,
        dynamic_thresholding_ratio=0.95,
        sample_max_value=1.5,
        prediction_type="epsilon",
        variance_type="learned_range",
    )


def t5(seed: int = 100):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    return T5EncoderModel(
        T5Config(
            vocab_size=len(VOCAB),
            d_model=WIDTH,
            d_kv=8,
            d_ff=32,
            num_layers=1,
            num_heads=2,
            pad_token_id=0,
            eos_token_id=2,
            decoder_start_token_id=0,
        )
    ).eval()


def deepfloyd_if(seed: int = 0, with_text: bool = True):
    from diffusers import IFPipeline

    return IFPipeline(
        tokenizer=tokenizer(77) if with_text else None,
        text_encoder=t5() if with_text else None,
        unet=if_unet(seed),
        scheduler=if_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )


def if_stage2(seed: int = 5):
    from diffusers import DDPMScheduler, IFSuperResolutionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        **IF_UNET, sample_size=16, in_channels=6, encoder_hid_dim=WIDTH, class_embed_type="timestep"
    ).eval()
    return IFSuperResolutionPipeline(
        tokenizer=None,
        text_encoder=None,
        unet=unet,
        scheduler=if_scheduler(),
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )


def if_stage3(seed: int = 6):
    """A tiny Stable Diffusion x4 upscaler (IF's stage III): latents beside the low-res image, a VAE of
    three levels (factor 4), the noise level as class label."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableDiffusionUpscalePipeline,
        UNet2DConditionModel,
    )

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=16,
        in_channels=7,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=WIDTH,
        norm_num_groups=4,
        attention_head_dim=4,
        num_class_embeds=1000,
    ).eval()
    vae3 = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=32,
        scaling_factor=0.08333,
    ).eval()
    return StableDiffusionUpscalePipeline(
        vae=vae3,
        text_encoder=_clip(100),
        tokenizer=tokenizer(),
        unet=unet,
        low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(prediction_type="v_prediction"),
        max_noise_level=350,
    )


def sd3_transformer(seed: int, joint: int = 2 * WIDTH, in_channels: int = 4, layers: int = 2):
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=in_channels,
        num_layers=layers,
        attention_head_dim=8,
        num_attention_heads=2,
        caption_projection_dim=16,
        joint_attention_dim=joint,
        pooled_projection_dim=2 * WIDTH,
        out_channels=in_channels,
    ).eval()


def sd3(seed: int = 0, shift: float = 3.0):
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    return StableDiffusion3Pipeline(
        transformer=sd3_transformer(seed),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
        vae=vae(shift=0.06, scaling=1.5),
        text_encoder=_clip(100, True),
        tokenizer=tokenizer(),
        text_encoder_2=_clip(101, True),
        tokenizer_2=tokenizer(),
        text_encoder_3=None,
        tokenizer_3=None,
    )


BUILDERS = {"sd": sd, "sdxl": sdxl, "if": deepfloyd_if, "sd3": sd3}


def lora_state(network, seed: int, rank: int = 2, scale: float = 0.3) -> dict:
    """A random (non-zero) peft LoRA for `network` (made on a copy: `network` is left as it was), as a
    state dict in diffusers' layout."""
    import copy

    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    network = copy.deepcopy(network)

    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    network.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False), "tmp"
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in network.named_parameters():
            if "lora_" in name and ".tmp." in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    state = get_peft_model_state_dict(network, adapter_name="tmp")
    return {k: v.clone() for k, v in state.items()}


def save_lora(pipe, network_attr: str, state: dict, folder) -> str:
    """Write a LoRA made by `lora_state` as diffusers' pytorch_lora_weights.safetensors in `folder`."""
    key = "unet_lora_layers" if network_attr == "unet" else "transformer_lora_layers"
    type(pipe).save_lora_weights(str(folder), **{key: state})
    return str(folder)


NETWORK = {"sd": "unet", "sdxl": "unet", "if": "unet", "sd3": "transformer"}


def text_pipeline(family: str, seed: int = 0, pipe=None):
    """The tiny pipeline of `family` as the package's TextPipeline (what load_text_pipeline returns)."""
    from autoguidance.wrappers.diffusers import schedule_from_scheduler
    from autoguidance.wrappers.text import TextDenoiser
    from autoguidance.wrappers.text_pipelines import FAMILIES, TextPipeline

    pipe = pipe or BUILDERS[family](seed)
    fam = next(f for f in FAMILIES.values() if f.name == family)
    network = getattr(pipe, NETWORK[family])
    prediction, schedule, scale = schedule_from_scheduler(pipe.scheduler)
    den = TextDenoiser(network, prediction, schedule, timestep_scale=scale)
    codec = None
    vae_cfg = None
    if getattr(pipe, "vae", None) is not None:
        from autoguidance.wrappers.latents import LatentCodec

        codec, vae_cfg = LatentCodec.from_vae_config(pipe.vae), dict(pipe.vae.config)
    return TextPipeline(fam, family, pipe, network, den, codec, vae_cfg)
