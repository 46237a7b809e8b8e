//! Which images a prompt names.

use gallop_api::referenced_images;

#[test]
fn the_seed_r2v_prompt_names_all_three() {
    let prompt = "The person in image 1 walks through the futuristic city in image 2 and meets the person in image 3.";
    assert_eq!(referenced_images(prompt, 3), vec![0, 1, 2]);
}

#[test]
fn order_of_first_mention_without_repeats() {
    assert_eq!(referenced_images("[Image 2] and character1", 3), vec![1, 0]);
    assert_eq!(
        referenced_images("image 3 hugs image 1, then image 3 waves", 3),
        vec![2, 0]
    );
}

#[test]
fn every_spelling_of_the_first_image() {
    for prompt in [
        "image 1",
        "image1",
        "[Image 1]",
        "IMAGE  1",
        "character1",
        "Character 1",
        "(image 1)",
        "see image 1.",
    ] {
        assert_eq!(referenced_images(prompt, 1), vec![0], "{prompt:?}");
    }
}

#[test]
fn numbers_are_read_whole_and_out_of_range_is_ignored() {
    assert_eq!(referenced_images("image 10 walks", 3), Vec::<usize>::new());
    assert_eq!(referenced_images("image 10 walks", 10), vec![9]);
    assert_eq!(
        referenced_images("image 0 and image 4", 3),
        Vec::<usize>::new()
    );
    assert_eq!(
        referenced_images("image 99999999999999999999999", 3),
        Vec::<usize>::new()
    );
}

#[test]
fn words_that_merely_contain_the_keyword_name_nothing() {
    assert_eq!(
        referenced_images("a subimage 1 and images 2 and imagery", 3),
        Vec::<usize>::new()
    );
    assert_eq!(
        referenced_images("the image shows a cat", 3),
        Vec::<usize>::new()
    );
    assert_eq!(referenced_images("", 3), Vec::<usize>::new());
}

#[test]
fn non_ascii_text_around_a_reference() {
    assert_eq!(
        referenced_images("Ünïcödé image 2 — café character 1", 2),
        vec![1, 0]
    );
}
