//! Tensor and module names of the Wan transformer in the original Wan layout (the `wan` package,
//! ComfyUI, lightx2v and musubi-tuner checkpoints and LoRAs) mapped to the diffusers names the
//! loader reads. One table serves single-file checkpoints and LoRA keys alike.

use std::collections::HashMap;

/// Prefixes single-file checkpoints put before the original names.
const ORIGINAL_PREFIXES: [&str; 2] = ["model.diffusion_model.", "diffusion_model."];

/// Original -> diffusers names inside a block (`blocks.N.` / `vace_blocks.N.`), longest first so
/// `cross_attn.k_img` is tried before `cross_attn.k`. Wan's `norm3` (before cross-attention) is
/// diffusers' `norm2` and Wan's `norm2` (before the FFN) is diffusers' `norm3`.
const BLOCK_RENAMES: [(&str, &str); 21] = [
    ("self_attn.norm_q", "attn1.norm_q"),
    ("self_attn.norm_k", "attn1.norm_k"),
    ("self_attn.q", "attn1.to_q"),
    ("self_attn.k", "attn1.to_k"),
    ("self_attn.v", "attn1.to_v"),
    ("self_attn.o", "attn1.to_out.0"),
    ("cross_attn.norm_k_img", "attn2.norm_added_k"),
    ("cross_attn.k_img", "attn2.add_k_proj"),
    ("cross_attn.v_img", "attn2.add_v_proj"),
    ("cross_attn.norm_q", "attn2.norm_q"),
    ("cross_attn.norm_k", "attn2.norm_k"),
    ("cross_attn.q", "attn2.to_q"),
    ("cross_attn.k", "attn2.to_k"),
    ("cross_attn.v", "attn2.to_v"),
    ("cross_attn.o", "attn2.to_out.0"),
    ("ffn.0", "ffn.net.0.proj"),
    ("ffn.2", "ffn.net.2"),
    ("norm3", "norm2"),
    ("norm2", "norm3"),
    ("before_proj", "proj_in"),
    ("after_proj", "proj_out"),
];

/// The block parameter `modulation` is diffusers' `scale_shift_table` (a parameter, no suffix).
const BLOCK_PARAMETERS: [(&str, &str); 1] = [("modulation", "scale_shift_table")];

/// Original -> diffusers names outside the blocks.
const TOP_RENAMES: [(&str, &str); 12] = [
    (
        "time_embedding.0",
        "condition_embedder.time_embedder.linear_1",
    ),
    (
        "time_embedding.2",
        "condition_embedder.time_embedder.linear_2",
    ),
    (
        "text_embedding.0",
        "condition_embedder.text_embedder.linear_1",
    ),
    (
        "text_embedding.2",
        "condition_embedder.text_embedder.linear_2",
    ),
    ("time_projection.1", "condition_embedder.time_proj"),
    ("head.head", "proj_out"),
    ("img_emb.proj.0", "condition_embedder.image_embedder.norm1"),
    (
        "img_emb.proj.1",
        "condition_embedder.image_embedder.ff.net.0.proj",
    ),
    (
        "img_emb.proj.3",
        "condition_embedder.image_embedder.ff.net.2",
    ),
    ("img_emb.proj.4", "condition_embedder.image_embedder.norm2"),
    ("patch_embedding", "patch_embedding"),
    ("vace_patch_embedding", "vace_patch_embedding"),
];

/// Parameters outside the blocks (no `.weight` suffix).
const TOP_PARAMETERS: [(&str, &str); 2] = [
    ("head.modulation", "scale_shift_table"),
    (
        "img_emb.emb_pos",
        "condition_embedder.image_embedder.pos_embed",
    ),
];

/// A component's tensors under the names the loaders read: a checkpoint in the original Wan
/// layout (a `diffusion_model.` prefix, or bare `blocks.N.self_attn...` / `head.head` keys) gets
/// its diffusers names; fp8 files' `X.scale_weight` becomes `X.weight_scale` (its `scale_input`
/// and `scaled_fp8` marker, which only GPU fp8 matmuls use, are left out). A name of the
/// original layout that maps to nothing keeps its name, so the loader reports it as unread.
pub(crate) fn rename_to_diffusers<T>(tensors: HashMap<String, T>) -> HashMap<String, T> {
    let original = tensors.keys().any(|k| {
        strip_original_prefix(k).is_some()
            || (k.starts_with("blocks.") && k.contains(".self_attn."))
            || k.starts_with("head.head.")
    });
    let mut out = HashMap::with_capacity(tensors.len());
    for (name, value) in tensors {
        if name == "scaled_fp8" || name.ends_with(".scale_input") {
            continue;
        }
        let bare = strip_original_prefix(&name).unwrap_or(&name);
        let (bare, scale) = match bare.strip_suffix(".scale_weight") {
            Some(module) => (format!("{module}.weight"), "_scale"),
            None => (bare.to_string(), ""),
        };
        let renamed = match original {
            true => diffusers_name(&bare).unwrap_or(bare),
            false => bare,
        };
        out.insert(format!("{renamed}{scale}"), value);
    }
    out
}

/// The name without the single-file prefix (`diffusion_model.`), if it had one.
pub fn strip_original_prefix(name: &str) -> Option<&str> {
    ORIGINAL_PREFIXES.iter().find_map(|p| name.strip_prefix(p))
}

/// A tensor or module path in the original Wan layout (prefix already stripped) as diffusers
/// names it: `blocks.3.self_attn.q.weight` -> `blocks.3.attn1.to_q.weight`,
/// `head.modulation` -> `scale_shift_table`. None for names the layout does not have.
pub fn diffusers_name(original: &str) -> Option<String> {
    if let Some((block, rest)) = split_block(original) {
        if let Some((_, to)) = BLOCK_PARAMETERS.iter().find(|(from, _)| rest == *from) {
            return Some(format!("{block}{to}"));
        }
        return rename(rest, &BLOCK_RENAMES).map(|r| format!("{block}{r}"));
    }
    if let Some((_, to)) = TOP_PARAMETERS.iter().find(|(from, _)| original == *from) {
        return Some(to.to_string());
    }
    rename(original, &TOP_RENAMES)
}

/// `blocks.N.` or `vace_blocks.N.` and the rest of the name.
fn split_block(name: &str) -> Option<(&str, &str)> {
    for stem in ["blocks.", "vace_blocks."] {
        let Some(after) = name.strip_prefix(stem) else {
            continue;
        };
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && after[digits..].starts_with('.') {
            let split = stem.len() + digits + 1;
            return Some((&name[..split], &name[split..]));
        }
    }
    None
}

/// `from[.suffix]` -> `to[.suffix]` for the first entry whose `from` is the whole name or a
/// dotted prefix of it.
fn rename(name: &str, table: &[(&str, &str)]) -> Option<String> {
    table.iter().find_map(|(from, to)| {
        let rest = name.strip_prefix(from)?;
        (rest.is_empty() || rest.starts_with('.')).then(|| format!("{to}{rest}"))
    })
}

/// Every module name the kohya / musubi-tuner underscore form can spell inside a block or at
/// the top, in both layouts (original and diffusers), with dots: the underscore form of a name
/// is looked up among these to put its dots back.
pub fn module_names_for_underscores() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for (from, to) in BLOCK_RENAMES.iter().chain(TOP_RENAMES.iter()) {
        names.push(from);
        names.push(to);
    }
    names.extend([
        "attn2.add_k_proj",
        "attn2.add_v_proj",
        "condition_embedder.time_proj",
        "proj_out",
        "proj_in",
    ]);
    names.sort();
    names.dedup();
    names
}

/// A kohya / musubi-tuner module name (`blocks_0_cross_attn_k_img`, `head_head`) with its
/// dots restored (`blocks.0.cross_attn.k_img`), in whichever layout it was spelled. None when
/// no known module has that underscore form.
pub fn dotted_from_underscores(name: &str) -> Option<String> {
    let known = module_names_for_underscores();
    let lookup = |rest: &str| {
        known
            .iter()
            .find(|n| n.replace('.', "_") == rest)
            .map(|n| n.to_string())
    };
    for stem in ["vace_blocks_", "blocks_"] {
        let Some(after) = name.strip_prefix(stem) else {
            continue;
        };
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || !after[digits..].starts_with('_') {
            return None;
        }
        let block = format!("{}.{}.", stem.trim_end_matches('_'), &after[..digits]);
        return lookup(&after[digits + 1..]).map(|rest| format!("{block}{rest}"));
    }
    lookup(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_names_map_to_diffusers_names() {
        let cases = [
            ("blocks.3.self_attn.q.weight", "blocks.3.attn1.to_q.weight"),
            ("blocks.3.self_attn.o.bias", "blocks.3.attn1.to_out.0.bias"),
            (
                "blocks.0.self_attn.norm_q.weight",
                "blocks.0.attn1.norm_q.weight",
            ),
            (
                "blocks.10.cross_attn.k_img.weight",
                "blocks.10.attn2.add_k_proj.weight",
            ),
            (
                "blocks.1.cross_attn.norm_k_img.weight",
                "blocks.1.attn2.norm_added_k.weight",
            ),
            ("blocks.1.cross_attn.k.weight", "blocks.1.attn2.to_k.weight"),
            ("blocks.1.ffn.0.weight", "blocks.1.ffn.net.0.proj.weight"),
            ("blocks.1.ffn.2.bias", "blocks.1.ffn.net.2.bias"),
            ("blocks.1.norm3.weight", "blocks.1.norm2.weight"),
            ("blocks.1.modulation", "blocks.1.scale_shift_table"),
            (
                "vace_blocks.0.before_proj.weight",
                "vace_blocks.0.proj_in.weight",
            ),
            (
                "vace_blocks.1.after_proj.bias",
                "vace_blocks.1.proj_out.bias",
            ),
            ("head.head.weight", "proj_out.weight"),
            ("head.modulation", "scale_shift_table"),
            (
                "time_projection.1.weight",
                "condition_embedder.time_proj.weight",
            ),
            (
                "text_embedding.2.bias",
                "condition_embedder.text_embedder.linear_2.bias",
            ),
            (
                "img_emb.proj.3.weight",
                "condition_embedder.image_embedder.ff.net.2.weight",
            ),
            (
                "img_emb.emb_pos",
                "condition_embedder.image_embedder.pos_embed",
            ),
            ("patch_embedding.weight", "patch_embedding.weight"),
            ("vace_patch_embedding.bias", "vace_patch_embedding.bias"),
        ];
        for (original, diffusers) in cases {
            assert_eq!(
                diffusers_name(original).as_deref(),
                Some(diffusers),
                "{original}"
            );
        }
        for unknown in [
            "blocks.1.mystery.weight",
            "blocks.x.ffn.0.weight",
            "freqs",
            "head",
        ] {
            assert_eq!(diffusers_name(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn underscore_names_get_their_dots_back() {
        let cases = [
            ("blocks_0_self_attn_q", "blocks.0.self_attn.q"),
            ("blocks_12_cross_attn_k_img", "blocks.12.cross_attn.k_img"),
            ("blocks_2_ffn_0", "blocks.2.ffn.0"),
            ("blocks_2_attn1_to_out_0", "blocks.2.attn1.to_out.0"),
            ("vace_blocks_1_after_proj", "vace_blocks.1.after_proj"),
            ("head_head", "head.head"),
            ("img_emb_proj_1", "img_emb.proj.1"),
        ];
        for (underscores, dotted) in cases {
            assert_eq!(
                dotted_from_underscores(underscores).as_deref(),
                Some(dotted),
                "{underscores}"
            );
        }
        assert_eq!(dotted_from_underscores("blocks_0_nothing"), None);
    }
}
