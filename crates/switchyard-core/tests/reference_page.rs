//! `docs/configuration.md` is the option schema's page as rendered now: a setting
//! changed in the schema and not in the page fails here.

#[test]
fn the_configuration_page_is_up_to_date() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
    let written = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        written == switchyard_core::schema::reference_page(),
        "docs/configuration.md is out of date: run\n  cargo run -q -p switchyard-core --example options-reference > docs/configuration.md"
    );
}
