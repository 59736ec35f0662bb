//! The chat example is one text in three places: `examples/chat.rs` (built with the tests, run
//! with `cargo run -p kim-core --example chat`), the crate docs (which include that file, and
//! compile it as a doctest) and the README, which must carry it verbatim.

#[test]
fn the_readme_shows_the_example_as_it_is() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let example = std::fs::read_to_string(format!("{root}/kim-core/examples/chat.rs")).unwrap();
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let block = format!("```rust,no_run\n{example}```\n");
    assert!(
        readme.contains(&block),
        "README.md must show kim-core/examples/chat.rs verbatim in a rust,no_run block"
    );
    let lines = example.lines().count();
    assert!(
        readme.contains(&format!("## A chat gateway in {lines} lines")),
        "the README's heading gives the example's length ({lines} lines)"
    );
}
