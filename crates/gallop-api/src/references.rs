//! Which reference images a prompt names: `image 1`, `image1`, `[Image 1]`, `character1`,
//! `character 1` (any case) all mean the first of `images`.

const WORDS: [&str; 2] = ["image", "character"];

/// 0-based indices of the images `prompt` names, in order of first mention, without repeats.
/// Numbers outside `1..=n_images` are ignored, and `image 10` is image ten, never image one.
pub fn referenced_images(prompt: &str, n_images: usize) -> Vec<usize> {
    // ASCII lowercasing keeps byte offsets, and every keyword is ASCII.
    let text = prompt.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    for start in 0..bytes.len() {
        // A keyword must start a word: "myimage 1" names nothing.
        if start > 0 && bytes[start - 1].is_ascii_alphanumeric() {
            continue;
        }
        let Some(word) = WORDS
            .iter()
            .find(|w| bytes[start..].starts_with(w.as_bytes()))
        else {
            continue;
        };
        let mut at = start + word.len();
        while at < bytes.len() && bytes[at] == b' ' {
            at += 1;
        }
        let digits_start = at;
        while at < bytes.len() && bytes[at].is_ascii_digit() {
            at += 1;
        }
        // All the digits, so "image 10" reads as 10; an overlong number is out of range anyway.
        let Ok(number) = text[digits_start..at].parse::<usize>() else {
            continue;
        };
        if (1..=n_images).contains(&number) && !found.contains(&(number - 1)) {
            found.push(number - 1);
        }
    }
    found
}
